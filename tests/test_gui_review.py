"""Review of the merged GUI (issue 15): the four branches' pieces on one page, as a person sees
them at 1280 and 390 px, light and dark, and as an attacker who names a model in HTML."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests import test_gui_queue
from tests.conftest import wait_job
from tests.test_gui import log_in, open_tab, shot
from tests.test_gui_queue import box

watched = test_gui_queue.watched  # the fixture, by its name

XSS = '<img src=x onerror="window.__xss=1">'


def mixed_queue(civitai, daemon, home):
    """A completed, tracked model named in HTML; then, slowly, one running, one paused, one
    queued and one failed job."""
    civitai.add_simple(1, 10, os.urandom(3000), filename="done.safetensors")
    civitai.models[1].name = XSS
    civitai.add_simple(2, 20, os.urandom(6_000_000), filename="running.safetensors")
    civitai.models[2].name = f"{XSS} running"
    civitai.add_simple(3, 30, os.urandom(3_000_000), filename="paused.safetensors")
    civitai.add_simple(4, 40, os.urandom(3_000_000), filename="queued.safetensors")
    d = daemon(workers=1, connections=1)
    with d.client() as c:
        done = c.post("/api/download", json={"modelVersionId": 10, "track": True}).json()
        wait_job(c, done["id"])
        civitai.default_rate = 150_000
        ids = {}
        for name, version in (("running", 20), ("paused", 30), ("queued", 40)):
            ids[name] = c.post("/api/download", json={"modelVersionId": version}).json()["id"]
        gone = c.post("/api/batch", json=[{"modelVersionId": 404404, "model_type": "lora"}])
        ids["failed"] = gone.json()["jobs"][0]["id"]
        assert c.post(f"/api/jobs/{ids['paused']}/pause").status_code == 200
        wait_job(c, ids["running"], ("downloading",))
        wait_job(c, ids["failed"], ("failed",), timeout=60)
    return d, done, ids


@pytest.mark.parametrize(("width", "scheme"), [(1280, "light"), (390, "dark")])
def test_a_model_named_in_html_is_shown_as_text_and_every_group_works_on_one_page(
    civitai, daemon, watched, home, width, scheme
):
    d, done, ids = mixed_queue(civitai, daemon, home)
    w = watched(width=width, height=860 if width > 400 else 844, scheme=scheme)
    page = w.page
    log_in(page, d)
    for group in ("running", "paused", "queued", "failed"):
        expect(page.locator(f"#group-{group} #job-{ids[group]}")).to_be_visible()
    expect(page.locator("#group-paused .group-count")).to_have_text("1")
    name = page.locator(f"#job-{ids['running']} .fw-semibold").first
    expect(name).to_have_text(f"{XSS} running · v20")  # as text, not as an element
    shot(page, f"review-queue-{width}-{scheme}")
    if width < 400:
        assert page.evaluate("document.scrollingElement.scrollWidth") <= width

    open_tab(page, "library")
    expect(page.locator(".library-row[data-id] .fw-semibold").first).to_have_text(XSS)
    expect(page.locator("#tracked-list .tracked-name").first).to_have_text(XSS)
    shot(page, f"review-library-{width}-{scheme}")
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src='x']").count() == 0

    open_tab(page, "queue")
    paused = page.locator(f"#job-{ids['paused']}")
    paused.locator(".job-resume").click()
    expect(page.locator(f"#group-queued #job-{ids['paused']}")).to_be_visible()
    expect(page.locator("#group-paused")).to_be_hidden()
    with d.client() as c:
        assert c.get(f"/api/jobs/{ids['paused']}").json()["status"] == "queued"
    civitai.default_rate = None
    assert w.problems == [], w.problems
    d.stop()


def test_on_a_phone_a_long_model_name_leaves_the_library_delete_button_on_screen(
    civitai, daemon, watched, home
):
    long_name = "JuggernautXL_RunDiffusionPhoto2_Lightning_4Steps_by_KandooAI"  # as Civitai has
    civitai.add_simple(1, 10, os.urandom(3000), filename="jugg.safetensors")
    civitai.models[1].name = long_name
    d = daemon()
    with d.client() as c:
        wait_job(c, c.post("/api/download", json={"modelVersionId": 10}).json()["id"])
    w = watched(width=390, height=844)
    page = w.page
    log_in(page, d)
    open_tab(page, "library")
    row = page.locator(".library-row").first
    expect(row.locator(".fw-semibold")).to_have_text(long_name)
    shot(page, "review-library-long-name-390")
    for button in (row.locator(".library-delete"), row.locator(".library-copy")):
        b = box(button)
        assert b["x"] >= 0 and b["x"] + b["width"] <= 390, (button, b)
    wide, shown = page.locator("#tab-library .table-responsive").evaluate(
        "n => [n.scrollWidth, n.clientWidth]"
    )
    assert wide <= shown, f"the Library's table scrolls sideways on a phone: {wide} > {shown}"
    assert w.problems == [], w.problems
    d.stop()


def test_on_a_phone_a_model_without_preview_has_its_name_at_the_left_edge(
    civitai, daemon, watched, home
):
    civitai.add_simple(1, 10, os.urandom(3000), filename="plain.safetensors")
    civitai.models[1].versions[0].images = 0  # Civitai has no image for it: no preview saved
    d = daemon()
    with d.client() as c:
        wait_job(c, c.post("/api/download", json={"modelVersionId": 10}).json()["id"])
    w = watched(width=390, height=844)
    page = w.page
    log_in(page, d)
    open_tab(page, "library")
    row = page.locator(".library-row").first
    name = row.locator(".fw-semibold")
    expect(name).to_have_text("Model 1")
    expect(row.locator(".library-thumb-phone")).to_have_count(0)  # nothing left holding room
    cell = box(row.locator(".library-file"))
    assert box(name)["x"] - cell["x"] < 12, (box(name), cell)  # no blank 40 px before the name
    shot(page, "review-library-no-preview-390")
    assert w.problems == [], w.problems
    d.stop()
