"""GET /api/search/file (issue 25): a model's file name looked for on Civitai and on the Hugging
Face Hub, against the fake Civitai and the fake Hub over real HTTP and the daemon as a process."""

from __future__ import annotations

import hashlib
import os
from urllib.parse import parse_qs, urlsplit

from sources.by_file_name import MAX_QUERIES, MAX_REPOS, civitai_words, hub_queries
from tests.conftest import assert_file_is, wait_job
from tests.fake_hf import TOKEN as HF_TOKEN

NAME = "sd_xl_base_1.0.safetensors"


def hub_api(hf) -> list:
    return hf.requests_to("hub", "/api/models")


def test_a_file_name_gives_civitais_models_by_its_words_and_the_hubs_exact_file_with_its_sha256(
    civitai, hf, daemon
):
    """Civitai answers the models whose name has the words; the Hub answers only the file of
    exactly that name (not the decoys of another case or suffix), pinned to the commit listed,
    with the LFS SHA256 and the size; hf_token goes to the Hub and nowhere else; a second
    search is answered from the cache; the Hub result queued is verified by that SHA256."""
    blob = os.urandom(200_000)
    civitai.add_model(
        101,
        "SD XL base 1.0",
        "Checkpoint",
        [civitai.version(1010, [civitai.file(b"civitai bytes", name="sdXL_v10.safetensors")])],
    )
    hf.add_repo(
        "decoys/sd-xl-base-1.0-lora",
        {"SD_XL_BASE_1.0.safetensors": b"other case", f"{NAME}.bak": b"other suffix"},
        downloads=900,
    )
    commit = hf.add_repo(
        "mirrors/sd-xl-base-1.0",
        {"README.md": b"# mirror\n", f"weights/{NAME}": blob},
        downloads=10,
    )
    d = daemon(hf_base_url=hf.base_url, hf_token=HF_TOKEN, layout="comfyui")
    with d.client() as c:
        r = c.get("/api/search/file", params={"name": NAME})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["unavailable"] == []
        civitai_items = [i for i in body["items"] if i["source"] == "civitai"]
        assert [i["name"] for i in civitai_items] == ["SD XL base 1.0"]
        assert civitai_items[0]["versions"][0]["files"][0]["name"] == "sdXL_v10.safetensors"
        hub_items = [i for i in body["items"] if i["source"] == "huggingface"]
        sha = hashlib.sha256(blob).hexdigest()
        assert hub_items == [
            {
                "source": "huggingface",
                "repo": "mirrors/sd-xl-base-1.0",
                "revision": commit,
                "path": f"weights/{NAME}",
                "size": len(blob),
                "sha256": sha,
                "gated": False,
                "url": f"https://huggingface.co/mirrors/sd-xl-base-1.0/resolve/{commit}/weights/{NAME}",
                "page": "https://huggingface.co/mirrors/sd-xl-base-1.0",
            }
        ]
        asked = hub_api(hf)
        searches = [parse_qs(urlsplit(q.path).query) for q in asked if "?search=" in q.path]
        assert 1 <= len(searches) <= MAX_QUERIES
        assert all(s["sort"] == ["downloads"] for s in searches)
        assert len(asked) - len(searches) <= MAX_REPOS
        assert all(q.headers.get("authorization") == f"Bearer {HF_TOKEN}" for q in asked)
        assert not any(HF_TOKEN in str(q.headers) for q in civitai.requests)
        assert HF_TOKEN not in r.text

        again = c.get("/api/search/file", params={"name": NAME})
        assert again.json()["items"] == body["items"]
        assert len(hub_api(hf)) == len(asked)  # the Hub is not asked twice in a row

        hf.upload("mirrors/sd-xl-base-1.0", f"weights/{NAME}", b"main moved on")
        job = c.post(
            "/api/download",
            json={"url": hub_items[0]["url"], "sha256": sha, "model_type": "checkpoint"},
        )
        assert job.status_code == 202, job.text
        done = wait_job(c, job.json()["id"])
    assert_file_is(done["path"], sha)  # the commit listed, not main's new bytes


def test_a_name_the_hub_lacks_costs_at_most_a_few_searches_and_a_few_repos_listed(
    civitai, hf, daemon
):
    """Eight repos match the shortest search and none holds the file: the Hub is searched
    MAX_QUERIES times and the files of MAX_REPOS repos are listed, no more; nothing offered."""
    for i in range(8):
        hf.add_repo(f"noise/sd-xl-base-{i}", {"other.safetensors": b"%d" % i})
    d = daemon(hf_base_url=hf.base_url)
    with d.client() as c:
        r = c.get("/api/search/file", params={"name": "sd_xl_base_2.0.safetensors"})
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [] and r.json()["unavailable"] == []
    asked = [urlsplit(q.path) for q in hub_api(hf)]
    searches = [parse_qs(q.query)["search"][0] for q in asked if q.path == "/api/models"]
    assert searches == ["sd_xl_base_2.0", "sd-xl-base-2.0", "sd-xl-base"]
    listed = [q.path for q in asked if q.path != "/api/models"]
    assert len(listed) == MAX_REPOS == len(set(listed))


def test_when_the_hub_cannot_be_asked_civitai_still_answers_and_the_hub_says_why(
    civitai, hf, daemon
):
    civitai.add_simple(102, 1020, b"x", filename="detail.safetensors", type="LORA")
    civitai.models[102].name = "detail tweaker"
    hf.fault("api", status=503)
    d = daemon(hf_base_url=hf.base_url)
    with d.client() as c:
        r = c.get("/api/search/file", params={"name": "loras/detail_tweaker.safetensors"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["name"] for i in body["items"]] == ["detail tweaker"]
    [gap] = body["unavailable"]
    assert gap["source"] == "huggingface" and "503" in gap["detail"], gap


def test_a_missing_or_overlong_name_is_refused_with_why(civitai, hf, daemon):
    d = daemon(hf_base_url=hf.base_url)
    with d.client() as c:
        for name in ("", "x" * 201 + ".safetensors", ".safetensors"):
            r = c.get("/api/search/file", params={"name": name})
            assert r.status_code == 422, r.text
            assert r.json()["detail"].startswith("name: ")
    assert hub_api(hf) == [] and civitai.requests_to("api", "/api/v1/models") == []


def test_the_hub_is_searched_by_the_stem_then_shorter_forms_and_civitai_by_its_words():
    assert hub_queries("SDXL/sd_xl_base_1.0.safetensors") == [
        "sd_xl_base_1.0",
        "sd-xl-base-1.0",
        "sd-xl-base",
    ]
    assert hub_queries("ae.safetensors") == []  # too short to ask the Hub about
    assert civitai_words(NAME) == "sd xl base 1 0"
