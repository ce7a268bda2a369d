"""A job row's controls in a real browser (issue 15): pause / resume, priority, a cancel that asks
first in a Bootstrap modal, and Retry only where it can help. Every page is watched for console
errors, page errors and CSP violations: there must be none."""

from __future__ import annotations

import hashlib

from playwright.sync_api import Page, expect

from tests.conftest import assert_file_is, wait_for, wait_job
from tests.test_controls import MB, blob, saved_bytes
from tests.test_gui import log_in, shot


def watch(page: Page) -> list[str]:
    """Console errors (CSP violations are reported there), page errors and native dialogs."""
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (problems.append(f"native dialog: {d.message}"), d.dismiss()))
    return problems


def slow_job(civitai, daemon, rate: int = 1 * MB):
    data = blob(8 * MB)
    civitai.add_simple(1, 10, data, filename="big.safetensors")
    civitai.default_rate = rate
    d = daemon(workers=1, connections=1)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
    return d, job, data


def test_cancel_asks_in_a_modal_and_only_the_confirmation_cancels(civitai, daemon, page, home):
    problems = watch(page)
    d, job, _ = slow_job(civitai, daemon)
    part = home / "data/models/lora/big.safetensors.part"
    log_in(page, d)
    row = page.locator(f"#job-{job['id']}")
    expect(row.locator(".job-status")).to_have_text("downloading")
    wait_for(lambda: saved_bytes(home, job["id"]) > 0, 20, what="bytes saved")

    row.locator(".job-cancel").click()
    modal = page.locator("#cancel-modal")
    expect(modal).to_be_visible()
    expect(modal.locator(".modal-title")).to_have_text("Cancel this download?")
    expect(modal.locator("#cancel-modal-text")).to_contain_text("will be deleted")
    expect(modal.locator("#cancel-modal-text")).to_contain_text("use Pause instead")
    box = modal.locator(".modal-content").bounding_box()
    assert box and box["width"] > 250 and 0 <= box["x"] and box["x"] + box["width"] <= 1280
    expect(page.locator("#cancel-confirm")).to_be_enabled()
    shot(page, "controls-cancel-confirmation")
    page.click("#cancel-keep")
    expect(modal).to_be_hidden()
    with d.client() as c:
        assert c.get(f"/api/jobs/{job['id']}").json()["status"] == "downloading"
    assert part.is_file()

    row.locator(".job-cancel").click()
    expect(modal).to_be_visible()
    page.click("#cancel-confirm")
    expect(modal).to_be_hidden()
    expect(row.locator(".job-status")).to_have_text("cancelled")
    expect(row.locator(".job-retry")).to_be_visible()  # a cancelled job can be retried
    expect(row.locator(".job-cancel")).to_have_count(0)
    assert not part.exists()
    shot(page, "controls-cancelled")
    assert problems == []
    d.stop()


def test_pause_then_resume_from_the_row_keeps_and_finishes_the_file(civitai, daemon, page, home):
    problems = watch(page)
    d, job, data = slow_job(civitai, daemon)
    log_in(page, d)
    row = page.locator(f"#job-{job['id']}")
    expect(row.locator(".job-status")).to_have_text("downloading")
    wait_for(lambda: saved_bytes(home, job["id"]) > 1 * MB, 20, what="1 MB saved")
    expect(row.locator(".job-up")).to_have_count(0)  # a running job is not reordered

    row.locator(".job-pause").click()
    expect(row.locator(".job-status")).to_have_text("paused")
    expect(row.locator(".job-resume")).to_be_visible()
    expect(row.locator(".job-pause")).to_have_count(0)
    expect(row.locator(".job-top")).to_be_visible()
    with d.client() as c:
        paused = c.get(f"/api/jobs/{job['id']}").json()
    assert paused["status"] == "paused" and paused["bytes_done"] == saved_bytes(home, job["id"])
    assert (home / "data/models/lora/big.safetensors.part").is_file()
    expect(row.locator(".progress-bar")).not_to_have_text("0%")
    shot(page, "controls-paused")

    # Alone in the queue, it is first already: Top, Up, Down and Bottom leave it where it is.
    for step in ("top", "up", "down", "bottom"):
        expect(row.locator(f".job-{step}")).to_be_enabled()
    row.locator(".job-bottom").click()
    expect(page.locator("#toasts")).to_contain_text("to the bottom")
    with d.client() as c:
        assert c.get(f"/api/jobs/{job['id']}").json()["priority"] == 5

    civitai.default_rate = None
    row.locator(".job-resume").click()
    expect(row.locator(".job-status")).to_have_text("completed", timeout=30_000)
    with d.client() as c:
        wait_job(c, job["id"])
    assert_file_is(home / "data/models/lora/big.safetensors", hashlib.sha256(data).hexdigest())
    assert problems == []
    d.stop()


def test_retry_is_hidden_for_a_404_failure_and_shown_where_it_can_help(civitai, daemon, page):
    problems = watch(page)
    civitai.add_simple(6, 60, b"b" * 3000, login_required=True)
    d = daemon(workers=1)
    with d.client() as c:
        gone = c.post("/api/batch", json=[{"modelVersionId": 404404, "model_type": "lora"}])
        gone = wait_job(c, gone.json()["jobs"][0]["id"], ("failed",))
        login = c.post("/api/download", json={"modelVersionId": 60, "model_type": "lora"})
        login = wait_job(c, login.json()["id"], ("failed",))
    log_in(page, d)
    gone_row, login_row = page.locator(f"#job-{gone['id']}"), page.locator(f"#job-{login['id']}")
    expect(gone_row.locator(".job-status")).to_have_text("failed")
    expect(gone_row.locator(".job-retry")).to_have_count(0)
    note = gone_row.locator(".job-no-retry")
    expect(note).to_be_visible()
    expect(note).to_have_attribute("title", gone["why_not_retryable"])
    expect(login_row.locator(".job-retry")).to_be_visible()
    expect(login_row.locator(".job-retry")).to_be_enabled()
    shot(page, "controls-retry-only-where-it-helps")
    login_row.locator(".job-retry").click()
    expect(page.locator("#toasts")).to_contain_text("Queued again.")
    assert problems == []
    d.stop()
