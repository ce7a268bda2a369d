"""Hugging Face files: pinned to the commit, verified by the Hub's SHA256 (or size), the token
to the Hub only, gated repos named with what to do (issue 17). Against tests/fake_hf.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

import errors
from config.settings import Settings
from sources.civitai import CivitaiClient
from sources.huggingface import HubClient, HubError, HubFile, parse_hub_path
from tests.conftest import assert_file_is, run_async, run_job, wait_for, wait_job, write_config
from tests.fake_civitai import TOKEN as CIVITAI_TOKEN
from tests.fake_civitai import FakeCivitai
from tests.fake_hf import NO_ACCESS_TOKEN, TOKEN, FakeHub, hub_url

HF = "https://huggingface.co"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content(size: int, seed: bytes = b"x") -> bytes:
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB, not a page's first bytes
    return (block * (size // len(block) + 1))[:size]


def start(daemon, hf: FakeHub, **config):
    return daemon(hf_base_url=hf.base_url, **config)


def test_parse_hub_path_takes_every_url_form():
    assert parse_hub_path("/acme/vae/resolve/main/vae.safetensors") == HubFile(
        "", "acme/vae", "main", "vae.safetensors"
    )
    assert parse_hub_path("/gpt2/blob/main/model.safetensors") == HubFile(
        "", "gpt2", "main", "model.safetensors"
    )
    assert parse_hub_path("/datasets/acme/d/resolve/refs%2Fpr%2F1/a/b%20c.parquet") == HubFile(
        "datasets/", "acme/d", "refs/pr/1", "a/b c.parquet"
    )
    assert parse_hub_path("/spaces/acme/s/blob/v1/app.py").prefix == "spaces/"
    assert parse_hub_path("/acme/vae") is None
    assert parse_hub_path("/acme/vae/tree/main/x") is None
    with pytest.raises(ValueError, match="it has a '..' segment"):
        parse_hub_path("/acme/vae/resolve/main/../x")


def test_the_cdn_must_be_https_and_public_unless_hf_base_url_is_local(tmp_path: Path):
    async def check(base: str, cdn: str) -> None:
        settings = Settings(home=tmp_path, hf_base_url=base)
        async with httpx.AsyncClient() as http:
            hub = HubClient(settings, http, CivitaiClient(settings, http))
            await hub.check_cdn(cdn)

    run_async(check(HF, "https://cas-bridge.xethub.hf.co/x?sig=1"))  # allowed_hosts: hf.co
    run_async(check("http://127.0.0.1:9", "http://127.0.0.3:7/blobs/x"))  # a local fake Hub
    with pytest.raises(HubError, match="over plain http"):
        run_async(check(HF, "http://cdn-lfs.huggingface.co/x"))
    with pytest.raises(errors.RedirectRefused):
        run_async(check(HF, "https://10.0.0.8/x"))
    with pytest.raises(errors.SchemeRefused):
        run_async(check(HF, "file:///etc/passwd"))


def test_an_lfs_file_comes_from_the_cdn_verified_by_the_hub_sha256_and_pinned_to_the_commit(
    daemon, hf: FakeHub
):
    data = content(300_000)
    commit = hf.add_repo("acme/vae", {"vae.safetensors": data})
    d = start(daemon, hf)
    url = f"{HF}/acme/vae/resolve/main/vae.safetensors"
    job = run_job(d, {"url": url, "model_type": "vae"})

    assert job["sha256"] == sha(data) and job["verified_by"] == "sha256"
    assert job["bytes_total"] == len(data) and job["filename"] == "vae.safetensors"
    assert Path(job["path"]) == d.home / "data/models/vae/vae.safetensors"
    assert_file_is(job["path"], sha(data))
    assert [r.path for r in hf.requests_to("hub")][-1].startswith(
        f"/acme/vae/resolve/{commit}/vae.safetensors"
    )
    assert hf.requests_to("cdn", f"/blobs/{sha(data)}")


def test_main_moving_mid_download_does_not_mix_bytes(daemon, hf: FakeHub):
    old, new = content(3_000_000, b"old"), content(3_000_000, b"new")
    commit = hf.add_repo("acme/flux", {"ae.safetensors": old})
    hf.rate = 1_500_000
    hf.fault("cdn", drop_after=1_000_000)  # the first answer breaks: the rest is resumed
    d = start(daemon, hf, connections=1)
    with d.client() as c:
        job = c.post(
            "/api/download",
            json={"url": f"{HF}/acme/flux/blob/main/ae.safetensors", "model_type": "vae"},
        ).json()
        wait_for(
            lambda: c.get(f"/api/jobs/{job['id']}").json()["bytes_done"] > 0, what="the first bytes"
        )
        moved = hf.upload("acme/flux", "ae.safetensors", new)  # main is another file now
        hf.expire_links()  # the resume must ask the Hub for a new link
        hf.rate = None
        done = wait_job(c, job["id"], timeout=60)

    assert moved != commit
    assert done["sha256"] == sha(old) and done["attempts"] >= 1
    assert_file_is(done["path"], sha(old))
    asked = [r.path for r in hf.requests_to("hub")]
    assert asked[0].startswith("/acme/flux/resolve/main/")  # the submit: which commit is main
    assert all(p.startswith(f"/acme/flux/resolve/{commit}/") for p in asked[1:]), asked
    assert len(asked) >= 3  # the first link, and a new one after the expiry
    assert not hf.requests_to("cdn", sha(new))


def test_a_wrong_byte_is_fetched_again_and_twice_wrong_fails_as_for_civitai(daemon, hf: FakeHub):
    data = content(200_000)
    hf.add_repo("acme/lora", {"a.safetensors": data, "b.safetensors": data[::-1]})
    hf.fault("cdn", corrupt=True)
    d = start(daemon, hf)
    job = run_job(d, {"url": f"{HF}/acme/lora/resolve/main/a.safetensors", "model_type": "lora"})
    assert_file_is(job["path"], sha(data))  # fetched once more, then right

    hf.fault("cdn", corrupt=True, times=2)
    url = f"{HF}/acme/lora/resolve/main/b.safetensors"
    failed = run_job(d, {"url": url, "model_type": "lora"}, statuses=("failed",))
    assert failed["error"].startswith(f"SHA256 mismatch: expected {sha(data[::-1])}")
    assert not Path(failed["path"]).exists()
    assert Path(failed["path"] + ".unverified").exists()


def test_a_file_kept_in_git_is_verified_by_its_git_sha1_and_the_job_says_so(daemon, hf: FakeHub):
    data = b'{"_class_name": "AutoencoderKL", "latent_channels": 4}\n'
    commit = hf.add_repo("acme/vae", {"vae/config.json": data})
    d = start(daemon, hf)
    url = f"{HF}/acme/vae/resolve/main/vae/config.json"
    job = run_job(d, {"url": url, "model_type": "vae", "filename": "sdxl-vae.json"})

    assert job["verified_by"] == "git-sha1" and job["bytes_total"] == len(data)
    assert Path(job["path"]).name == "sdxl-vae.json"
    assert Path(job["path"]).read_bytes() == data
    assert not hf.requests_to("cdn")  # the Hub itself served it
    assert any(r.path.startswith(f"/acme/vae/resolve/{commit}/") for r in hf.requests_to("hub"))


def test_the_token_goes_to_the_hub_and_never_to_the_cdn_civitai_logs_db_or_api(
    hf: FakeHub, civitai: FakeCivitai, home: Path, daemon_factory
):
    data = content(150_000)
    hf.add_repo("acme/gated", {"model.safetensors": data}, gated=True)
    civitai.add_simple(100, 200, content(70_000, b"civitai"))
    # The config's token has no access; HF_TOKEN in the environment overrides it. Civitai and
    # the Hub share a host here (127.0.0.1, other ports): each token still goes only to its own.
    write_config(
        home,
        civitai_base_url=civitai.base_url,
        civitai_token=CIVITAI_TOKEN,
        hf_base_url=hf.base_url,
        hf_token=NO_ACCESS_TOKEN,
        retries=3,
        timeout=10,
    )
    d = daemon_factory(home, env={**os.environ, "HF_TOKEN": TOKEN}).start()
    url = f"{HF}/acme/gated/resolve/main/model.safetensors"
    job = run_job(d, {"url": url, "model_type": "checkpoint"})
    assert_file_is(job["path"], sha(data))
    run_job(d, {"modelVersionId": 200})

    hub = hf.requests_to("hub")
    assert hub and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub)
    cdn = hf.requests_to("cdn")
    assert cdn and all("authorization" not in r.headers for r in cdn)
    to_civitai = civitai.requests_to("api")
    assert to_civitai and all(TOKEN not in str(r.headers) for r in to_civitai)
    with d.client() as c:
        shown = c.get(f"/api/jobs/{job['id']}").text + c.get("/api/settings").text
        source = c.get("/api/settings").json()["keys"]["hf_token"]["source"]
    assert source == "environment"
    d.stop()
    for secret in (TOKEN, NO_ACCESS_TOKEN):
        assert secret not in shown
        assert secret not in (home / "logs/download.log").read_text()
        assert secret.encode() not in (home / "data/completed.db").read_bytes()


def test_a_gated_repo_without_access_fails_at_once_with_what_to_do(daemon, hf: FakeHub):
    hf.add_repo("acme/gated", {"model.safetensors": b"x" * 1000}, gated=True)
    hf.add_repo("acme/open", {"model.safetensors": b"y" * 1000})
    d = start(daemon, hf)
    page = f"{hf.base_url}/acme/gated"
    with d.client() as c:
        r = c.post(
            "/api/download",
            json={
                "url": f"{HF}/acme/gated/resolve/main/model.safetensors",
                "model_type": "checkpoint",
            },
        )
        assert r.status_code == 403
        assert r.json()["detail"] == (
            f"{page} is a gated or private repository and no token is set: accept the licence "
            f"on {page} and set hf_token (or HF_TOKEN) to a token of that account, then retry "
            "the job."
        )
        assert len(hf.requests_to("hub", "/acme/gated/")) == 1  # not retried

        r = c.post(
            "/api/download",
            json={
                "url": f"{HF}/acme/open/resolve/main/nope.safetensors",
                "model_type": "checkpoint",
            },
        )
        assert r.status_code == 404
        assert r.json()["detail"] == (
            "Not found on the Hugging Face Hub: acme/open has no file 'nope.safetensors' at main"
        )
        r = c.post(
            "/api/download",
            json={
                "url": f"{HF}/acme/open/resolve/v9/model.safetensors",
                "model_type": "checkpoint",
            },
        )
        assert r.status_code == 404 and "has no revision 'v9'" in r.json()["detail"]
        r = c.post("/api/download", json={"url": f"{HF}/acme/open/resolve/main/model.safetensors"})
        assert r.status_code == 422 and "model_type is required" in r.json()["detail"]
        r = c.post("/api/download", json={"url": f"{HF}/acme/open", "model_type": "vae"})
        assert r.status_code == 422
        assert r.json()["detail"].startswith(f"{HF}/acme/open is not a Hugging Face file URL")
        url, wrong = f"{HF}/acme/open/resolve/main/model.safetensors", "ab" * 32
        r = c.post("/api/download", json={"url": url, "model_type": "vae", "sha256": wrong})
        assert r.status_code == 422 and f"not the sha256 asked ({wrong})" in r.json()["detail"]

    # A job queued without asking (a batch) fails when it is asked, not after its retries.
    with d.client() as c:
        r = c.post(
            "/api/batch",
            json=[
                {
                    "url": f"{HF}/acme/gated/resolve/main/model.safetensors",
                    "model_type": "checkpoint",
                    "filename": "g.safetensors",
                }
            ],
        )
        assert r.status_code in (200, 202), r.text
        job_id = r.json()["jobs"][0]["id"]
        failed = wait_job(c, job_id, statuses=("failed",))
    assert failed["error"].endswith("then retry the job.") and failed["attempts"] == 0


def test_dataset_and_blob_urls_and_a_hub_down_at_submit(daemon, hf: FakeHub):
    data = content(120_000, b"data")
    hf.add_repo("acme/set", {"folder/part-0.parquet": data}, kind="datasets/")
    hf.fault("hub", status=503)  # the first question at submit: the job waits and asks again
    d = start(daemon, hf)
    url = hub_url(f"{HF}/datasets", "acme/set", "folder/part-0.parquet", form="blob")
    job = run_job(d, {"url": url, "model_type": "other"})
    assert Path(job["path"]).name == "part-0.parquet"
    assert_file_is(job["path"], sha(data))
    assert job["model_name"] == "datasets/acme/set"


def test_the_update_check_downloads_a_tracked_file_that_changed_on_main(daemon, hf: FakeHub):
    old, new = content(100_000, b"v1"), content(110_000, b"v2")
    hf.add_repo("acme/vae", {"vae.safetensors": old})
    d = start(daemon, hf)
    url = f"{HF}/acme/vae/resolve/main/vae.safetensors"
    first = run_job(d, {"url": url, "model_type": "vae", "track": True})
    entries = json.loads((d.home / "manifest.json").read_text())
    assert entries == [
        {"url": url, "model_type": "vae", "sha256": sha(old), "filename": "vae.safetensors"}
    ]
    with d.client() as c:
        assert c.post("/api/updates/check").json()["updates"] == []  # nothing changed yet
        commit = hf.upload("acme/vae", "vae.safetensors", new)
        result = c.post("/api/updates/check").json()
        assert [u["new_version_id"] for u in result["updates"]] == [commit], result["errors"]
        update = result["updates"][0]
        assert update["url"] == url and update["model_type"] == "vae"
        done = wait_job(c, update["job_id"])
        assert c.post("/api/updates/check").json()["updates"] == []  # found once
        listed = c.get("/api/updates").json()["updates"]
    assert [u["new_version_id"] for u in listed] == [commit]
    assert done["path"] == first["path"]  # replace mode: the same file, now the new bytes
    assert_file_is(done["path"], sha(new))
    entries = json.loads((d.home / "manifest.json").read_text())
    assert entries == [
        {"url": url, "model_type": "vae", "sha256": sha(new), "filename": "vae.safetensors"}
    ]
