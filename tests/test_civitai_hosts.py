"""civitai.red (Civitai's NSFW site since 2026) and civitai.green (its safe one) are Civitai
(issue 28 item 5): their page, download and AIR forms are looked up, queued, bulk-listed, read
from a workflow and opened by the deep link as civitai.com's are, always through the configured
API base (the fake Civitai here; no request leaves the machine); and bulk sends Civitai
`nsfw=true` only while show_nsfw is on."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

from tests.conftest import assert_file_is, wait_job
from tests.test_gui import log_in
from tests.test_gui_add import watch
from tests.test_gui_deeplink import offline, queue_from_the_add_tab, two_versions

HOSTS = ["civitai.red", "www.civitai.red", "civitai.green", "www.civitai.green"]


def test_red_and_green_urls_are_looked_up_and_queued_through_the_configured_api_base(
    civitai, daemon, home
):
    files = {
        i: civitai.add_simple(i, 10 * i, bytes([i]) * 20_000, filename=f"m{i}.safetensors")
        for i in range(1, 5)
    }
    d = daemon()
    with d.client() as c:
        for i, host in enumerate(HOSTS, start=1):
            page = f"https://{host}/models/{i}/a-slug?modelVersionId={10 * i}"
            r = c.get("/api/lookup", params={"url": page})
            assert r.status_code == 200, (host, r.text)
            assert r.json()["modelId"] == i and r.json()["name"] == f"Model {i}"
            download = f"https://{host}/api/download/models/{10 * i}?fileId={files[i].id}"
            job = c.post("/api/download", json={"url": download, "model_type": "lora"})
            assert job.status_code == 202, (host, job.text)
            done = wait_job(c, job.json()["id"])
            assert (done["modelId"], done["modelVersionId"]) == (i, 10 * i)
            assert_file_is(home / f"data/models/lora/m{i}.safetensors", files[i].sha256)
            # Asked of the configured API base, by id: never of the host in the URL.
            assert civitai.requests_to("api", f"/api/v1/model-versions/{10 * i}")
            assert civitai.requests_to("api", f"/api/download/models/{10 * i}")
        # An AIR names no host: the same API base.
        air = c.get("/api/lookup", params={"url": "urn:air:sdxl:lora:civitai:2@20"})
        assert air.status_code == 200 and air.json()["modelId"] == 2
        # A host that only looks like Civitai's is not Civitai.
        fake = c.get("/api/lookup", params={"url": "https://civitai.red.example.com/models/1"})
        assert fake.status_code == 422
    d.stop()


def test_a_workflow_naming_a_civitai_red_download_fetches_it_from_civitai(civitai, daemon, home):
    f = civitai.add_simple(8, 80, b"w" * 30_000, filename="base.safetensors", type="Checkpoint")
    d = daemon(layout="comfyui")
    url = f"https://civitai.red/api/download/models/80?fileId={f.id}"
    workflow = {
        "nodes": [
            {
                "id": 1,
                "type": "CheckpointLoaderSimple",
                "properties": {
                    "models": [{"name": "base.safetensors", "url": url, "directory": "checkpoints"}]
                },
                "widgets_values": ["base.safetensors"],
            }
        ]
    }
    with d.client() as c:
        r = c.post("/api/workflow", json=workflow)
        assert r.status_code == 200, r.text
        [row] = r.json()["models"]
        assert row["status"] == "queued", row
        job = wait_job(c, row["job"])
        assert job["modelVersionId"] == 80
    assert_file_is(home / "data/models/checkpoints/base.safetensors", f.sha256)
    d.stop()


def test_the_deep_link_takes_a_www_civitai_green_page(civitai, daemon, page, home):
    old = two_versions(civitai)
    strays = offline(page.context)
    problems = watch(page)
    d = daemon()
    log_in(page, d)
    link = "https://www.civitai.green/models/1/a-lora?modelVersionId=11"
    page.goto(d.url(f"/gui/add?url={quote(link, safe='')}"))
    queue_from_the_add_tab(page, d, home, old)
    assert problems == [] and strays == [], (problems, strays)
    d.stop()


def list_queries(civitai) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(r.path).query) for r in civitai.requests_to("api", "/api/v1/models?")]


def test_bulk_sends_nsfw_true_only_while_show_nsfw_is_on(civitai, daemon):
    civitai.add_simple(1, 10, b"a" * 100, creator="alice")
    civitai.add_simple(2, 20, b"b" * 100, creator="alice", nsfw=True)
    d = daemon()
    with d.client() as c:
        plain = c.post("/api/bulk/preview", json={"username": "alice"}).json()
        assert [i["modelId"] for i in plain["items"]] == [1] and plain["filters"]["nsfw"] is False
        refused = c.post("/api/bulk/preview", json={"username": "alice", "nsfw": True})
        assert refused.status_code == 422
        assert refused.json()["detail"] == (
            'NSFW models are listed only while show_nsfw is on (Settings, "Browse: show NSFW '
            'models")'
        )
        assert [q["nsfw"] for q in list_queries(civitai)] == [["false"]]  # nothing more asked

        assert c.patch("/api/settings", json={"show_nsfw": True}).status_code == 200
        both = c.post("/api/bulk/preview", json={"username": "alice"}).json()
        assert sorted(i["modelId"] for i in both["items"]) == [1, 2]
        safe = c.post("/api/bulk/preview", json={"username": "alice", "nsfw": False}).json()
        assert [i["modelId"] for i in safe["items"]] == [1]
        assert [q["nsfw"] for q in list_queries(civitai)] == [["false"], ["true"], ["false"]]
    d.stop()
