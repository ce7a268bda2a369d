"""Hugging Face file URLs are decoded before they are judged (issue 23): the token goes to the
file's own path and nowhere else, and the repository fetched is the one the URL names."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

import pytest

from sources.huggingface import HubFile, parse_hub_path
from tests.conftest import assert_file_is, run_job
from tests.fake_hf import TOKEN, FakeHub
from tests.test_huggingface import HF, content, sha

# Each names a path, a repository or a revision other than it seems once decoded.
HOSTILE = {
    "/acme/open/resolve/main/%2e%2e/%2e%2e/api/whoami-v2": "'..'",
    "/acme/open/resolve/main/%2E/model.safetensors": "'.'",
    "/acme/open/resolve/main/a%2fb.safetensors": "an encoded slash",
    "/acme/open/resolve/main/a%2F..%2F..%2Fx": "an encoded slash",
    "/acme/%2e%2e/resolve/main/model.safetensors": "'..'",
    "/acme%2Fopen/resolve/main/model.safetensors": "an encoded slash",
    "/acme/open/resolve/main//model.safetensors": "an empty segment",
    "/acme/open/resolve/main/model.safetensors/": "an empty segment",
    "/acme/open/resolve/%2e%2e/model.safetensors": "'..'",
    "/acme/open/resolve/refs%2F..%2F..%2Fx/model.safetensors": "'..'",
}


@pytest.mark.parametrize("path", sorted(HOSTILE))
def test_a_path_is_decoded_then_refused_for_dot_empty_or_slashed_segments(path):
    with pytest.raises(ValueError, match=HOSTILE[path]):
        parse_hub_path(path)


def test_what_a_file_url_names_decoded_is_what_is_asked_for():
    assert parse_hub_path("/acme/open/resolve/refs%2Fpr%2F1/sub/b%20c.safetensors") == HubFile(
        "", "acme/open", "refs/pr/1", "sub/b c.safetensors"
    )
    f = parse_hub_path("/acme/open/resolve/v1.0/a%25b.safetensors")
    assert f.resolve_path("0" * 40) == f"/acme/open/resolve/{'0' * 40}/a%25b.safetensors"


def test_the_token_reaches_no_path_but_the_files_own(daemon, hf: FakeHub):
    data = content(90_000)
    hf.add_repo("acme/open", {"model.safetensors": data})
    d = daemon(hf_base_url=hf.base_url, hf_token=TOKEN)
    with d.client() as c:
        for path, why in HOSTILE.items():
            r = c.post("/api/download", json={"url": HF + path, "model_type": "checkpoint"})
            assert r.status_code == 422, (path, r.text)
            assert r.json()["detail"].startswith(f"{HF}{path} is not a Hugging Face file URL:")
            assert why in r.json()["detail"], r.json()
        assert c.get("/api/jobs").json()["total"] == 0
    assert hf.requests_to("hub") == []  # nothing was asked of the Hub at all
    job = run_job(d, {"url": f"{HF}/acme/open/resolve/main/model.safetensors", "model_type": "vae"})
    assert_file_is(job["path"], sha(data))
    asked = hf.requests_to("hub")
    assert asked and all(
        posixpath.normpath(unquote(r.path)).startswith("/acme/open/resolve/")
        and r.path.endswith("/model.safetensors")
        for r in asked
    ), [r.path for r in asked]
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in asked)
    d.stop()
