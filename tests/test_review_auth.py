"""Review of issue 15's new changing routes: without a key, or with the viewer key, none of them
changes anything (a job's state and priority, the history, the manifest, a file on disk)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tests.conftest import assert_file_is, wait_job

VIEWER = "viewer-key-for-review"


def test_no_key_and_the_viewer_key_change_nothing_through_the_new_routes(civitai, daemon, home):
    done = civitai.add_simple(1, 10, os.urandom(20_000), filename="kept.safetensors")
    civitai.add_simple(2, 20, os.urandom(3_000_000), filename="paused.safetensors")
    d = daemon(workers=1, viewer_token=VIEWER)
    with d.client() as c:
        kept = wait_job(
            c, c.post("/api/download", json={"modelVersionId": 10, "track": True}).json()["id"]
        )
        civitai.default_rate = 100_000
        held = c.post("/api/download", json={"modelVersionId": 20}).json()
        assert c.post(f"/api/jobs/{held['id']}/pause").json()["status"] == "paused"
        row = c.get("/api/completed").json()["completed"][0]["id"]
        manifest_before = (home / "manifest.json").read_bytes()
        before = c.get(f"/api/jobs/{held['id']}").json()
    calls = [
        ("POST", f"/api/jobs/{held['id']}/resume", None),
        ("POST", f"/api/jobs/{held['id']}/pause", None),
        ("PATCH", f"/api/jobs/{held['id']}", {"priority": 0}),
        ("PATCH", f"/api/jobs/{held['id']}", {"position": "top"}),
        ("POST", f"/api/jobs/{kept['id']}/retry", {"force": True}),
        ("POST", "/api/jobs/clear", {"statuses": ["completed"]}),
        ("DELETE", f"/api/library/{row}", None),
        ("DELETE", "/api/manifest/1", None),
    ]
    for headers, status, detail in (
        ({}, 401, "A valid API key is needed"),
        (
            {"Authorization": f"Bearer {VIEWER}"},
            403,
            "The viewer key can only read; this needs the API key.",
        ),
        ({"X-API-Key": "a-wrong-key"}, 401, "A valid API key is needed"),
    ):
        with httpx.Client(base_url=d.base_url, headers=headers) as anyone:
            for method, path, body in calls:
                r = anyone.request(method, path, json=body)
                assert r.status_code == status, (method, path, headers, r.text)
                assert r.json()["detail"].startswith(detail), r.json()
    with d.client() as c:
        after = c.get(f"/api/jobs/{held['id']}").json()
        assert (after["status"], after["priority"]) == ("paused", before["priority"])
        assert c.get(f"/api/jobs/{kept['id']}").json()["status"] == "completed"
        assert [r["id"] for r in c.get("/api/completed").json()["completed"]] == [row]
        assert [t["modelId"] for t in c.get("/api/manifest").json()["tracked"]] == [1]
    assert (home / "manifest.json").read_bytes() == manifest_before
    assert_file_is(Path(kept["path"]), done.sha256)
    civitai.default_rate = None
    d.stop()
