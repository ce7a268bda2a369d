"""What the status page and /api/status report: the last update check across restarts, the
speeds (current and average, each defined), and a job waiting between attempts."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from datetime import datetime

from playwright.sync_api import expect

from config.sizes import human_bytes
from tests.conftest import assert_file_is, wait_for, wait_job
from tests.test_gui import log_in, open_tab
from tests.test_updates import write_manifest


def test_last_update_check_is_still_reported_after_a_restart(home, civitai, daemon, page):
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


def test_gui_shows_the_wait_and_a_cancel_during_it_wins(civitai, daemon, page):
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
        page.locator("#cancel-confirm").click()  # cancel asks first
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


def test_current_rate_follows_the_served_rate_and_the_average_counts_only_transfer_time(
    home,
    civitai,
    daemon,
    page,
):
    rate = 250_000
    # A file adopted by a scan: completed, but never transferred (no time): left out.
    known = os.urandom(3_000_000)
    civitai.add_simple(9, 900, known, filename="adopted.safetensors", type="Checkpoint")
    (home / "data/models/checkpoint").mkdir(parents=True)
    (home / "data/models/checkpoint/adopted.safetensors").write_bytes(known)
    big, small = os.urandom(10 * rate), os.urandom(rate // 2)
    civitai.add_simple(1, 10, big, filename="big.safetensors")
    civitai.add_simple(2, 20, small, filename="small.safetensors")
    d = daemon(connections=1, workers=1)
    with d.client() as c:
        assert c.post("/api/scan").status_code == 202
        wait_for(lambda: c.get("/api/scan").json()["finished_at"], what="the scan")
        civitai.default_rate = rate
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(
            lambda: c.get(f"/api/jobs/{job['id']}").json()["bytes_done"] >= 4 * rate,
            what="4 s of transfer",
        )
        now = c.get("/api/status").json()["current_speed_bps"]
        assert 0.5 * rate <= now <= 1.5 * rate, f"current {now} B/s while served at {rate}"
        wait_job(c, job["id"], timeout=60)
        wait_for(
            lambda: c.get("/api/status").json()["current_speed_bps"] == 0, 10, what="idle: 0 B/s"
        )
        # A job that waits 3 s between attempts: the wait is not transfer time.
        civitai.fault("cdn", status=429, retry_after=3)
        other = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"}).json()
        assert wait_job(c, other["id"], timeout=60)["attempts"] == 1
        status, metrics = c.get("/api/status").json(), c.get("/api/metrics").json()
    with sqlite3.connect(home / "data" / "completed.db") as db:
        rows = db.execute("select filename, size, elapsed_s from completed").fetchall()
    timing = {name: (size, seconds) for name, size, seconds in rows}
    assert set(timing) == {"adopted.safetensors", "big.safetensors", "small.safetensors"}
    assert not timing["adopted.safetensors"][1]
    assert timing["small.safetensors"][1] < 2.5, "the 3 s wait was counted as transfer time"
    assert timing["big.safetensors"][1] >= 0.8 * len(big) / rate
    moved = [timing["big.safetensors"], timing["small.safetensors"]]
    expected = sum(s for s, _ in moved) / sum(t for _, t in moved)
    assert abs(status["average_speed_bps"] - expected) <= 0.1
    assert metrics["average_speed_bps"] == status["average_speed_bps"]
    assert 0.5 * rate <= expected <= 1.2 * rate
    log_in(page, d)
    open_tab(page, "status")
    expect(page.locator("#m-current")).to_have_text("0 B/s")
    expect(page.locator("#m-speed")).to_have_text(f"{human_bytes(status['average_speed_bps'])}/s")
    d.stop()


def test_a_job_cancelled_during_the_wait_announces_no_next_attempt(civitai, daemon):
    civitai.add_simple(1, 10, b"w" * 50_000)
    civitai.fault("cdn", status=429, retry_after=60)
    d = daemon(retries=5)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["status"] == "waiting")
        cancelled = c.post(f"/api/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["next_attempt_at"] is None
        stored = c.get(f"/api/jobs/{job['id']}").json()
        assert stored["status"] == "cancelled" and stored["next_attempt_at"] is None
        queued = c.post(f"/api/jobs/{job['id']}/retry").json()
        assert queued["status"] in ("queued", "downloading", "waiting"), queued
        if queued["status"] != "waiting":
            assert queued["next_attempt_at"] is None
    d.stop()
