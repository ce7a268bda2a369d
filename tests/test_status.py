"""What the status page and /api/status report: the last update check across restarts, the
speeds (current and average, each defined), and a job waiting between attempts."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime

from playwright.sync_api import expect

from tests.conftest import assert_file_is, wait_for, wait_job
from tests.test_gui import browser, log_in, open_tab, page  # noqa: F401 (fixtures)
from tests.test_updates import write_manifest


def test_last_update_check_is_still_reported_after_a_restart(home, civitai, daemon, page):  # noqa: F811
    civitai.add_simple(1, 101, b"tracked" * 100, filename="a.safetensors")
    write_manifest(home, [{"modelId": 1, "model_type": "lora"}])
    d = daemon(update_check={"enabled": False})
    with d.client() as c:
        checked = c.post("/api/updates/check").json()
        assert checked["checked"] == 1 and checked["finished_at"]
    assert d.stop() == 0
    again = daemon(update_check={"enabled": False})
    with again.client() as c:
        last = c.get("/api/metrics").json()["last_update_check"]
        listed = c.get("/api/updates").json()["last_check"]
    assert last is not None, "the check before the restart is forgotten"
    assert last["finished_at"] == checked["finished_at"] and last["checked"] == 1
    assert listed["finished_at"] == checked["finished_at"]
    assert listed["started_at"] == checked["started_at"] and listed["requests"] == 1
    log_in(page, again)
    open_tab(page, "status")
    shown = page.locator("#m-check")
    expect(shown).not_to_have_text("never")
    expect(shown).to_contain_text("0 update(s)")
    again.stop()


def _utc(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_job_between_attempts_is_waiting_until_retry_after_then_completes(civitai, daemon):
    data = os.urandom(200_000)
    civitai.add_simple(1, 10, data)
    civitai.fault("cdn", status=429, retry_after=6)
    d = daemon(retries=5)
    with d.client() as c:
        asked = time.time()
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        waiting = wait_for(
            lambda: (j := c.get(f"/api/jobs/{job['id']}").json())["status"] == "waiting" and j,
            what="the job to wait",
        )
        seen = time.time()
        assert waiting["attempts"] == 1 and waiting["max_attempts"] == 5
        assert "Attempt 1 of 5 failed" in waiting["error"] and "429" in waiting["error"]
        # Retry-After 6 s from the moment the daemon had the 429: between asking and seeing it.
        at = _utc(waiting["next_attempt_at"])
        assert asked + 6 - 0.5 <= at <= seen + 6 + 0.5, (asked, at, seen)
        status = c.get("/api/status").json()
        assert [j["status"] for j in status["active"]] == ["waiting"]
        assert c.get("/api/jobs", params={"status": "waiting"}).json()["total"] == 1
        done = wait_job(c, job["id"], timeout=40)
    assert done["next_attempt_at"] is None and done["attempts"] == 1
    assert_file_is(done["path"], hashlib.sha256(data).hexdigest())
    requests = civitai.requests_to("cdn", "/file")
    assert len(requests) == 2
    d.stop()


def test_gui_shows_the_wait_and_a_cancel_during_it_wins(civitai, daemon, page):  # noqa: F811
    civitai.add_simple(1, 10, b"w" * 50_000)
    civitai.fault("cdn", status=429, retry_after=60)
    d = daemon(retries=5)
    log_in(page, d)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        row = page.locator(f"#job-{job['id']}")
        expect(row.locator(".job-status")).to_have_text("waiting")
        line = row.locator(".job-wait")
        expect(line).to_contain_text("waiting — retry in ")
        expect(line).to_contain_text("s (attempt 2 of 5)")
        left = int(line.inner_text().split("retry in ")[1].split(" s")[0])
        assert 40 <= left <= 60
        row.locator(".job-cancel").click()
        expect(row.locator(".job-status")).to_have_text("cancelled")
        assert c.get(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"
    assert len(civitai.requests_to("cdn", "/file")) == 1  # no attempt after the cancel
    d.stop()


def test_restart_during_the_wait_resumes_the_job(home, civitai, daemon, daemon_factory):
    data = os.urandom(100_000)
    civitai.add_simple(1, 10, data)
    civitai.fault("cdn", status=429, retry_after=300)
    d = daemon(retries=5)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["status"] == "waiting")
    assert d.stop() == 0
    again = daemon_factory(home).start()
    with again.client() as c:
        done = wait_job(c, job["id"], timeout=40)
    assert_file_is(done["path"], hashlib.sha256(data).hexdigest())
    again.stop()
