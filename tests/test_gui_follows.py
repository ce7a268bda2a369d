"""Follows in a real browser (issue 28): Follow on a Browse card's creator and on a search, the
dry-run table before the rule is saved, the Follows tab with its last check and what it found;
a viewer sees the follows but no buttons. Every page is watched for console errors, page errors
and CSP violations."""

from __future__ import annotations

import hashlib

from playwright.sync_api import expect

from tests.conftest import assert_file_is, wait_job
from tests.test_follows import LATER, creator_model
from tests.test_gui import log_in, open_tab, shot
from tests.test_gui_queue import Watched, watched  # noqa: F401 (watched: a fixture)


def test_follow_a_creator_from_a_browse_card_preview_save_and_check_it(
    civitai,
    daemon,
    home,
    watched,  # noqa: F811
):
    creator_model(civitai, 1, "Lykon", b"a" * 2_000, published="2025-05-19T02:43:46.31")
    d = daemon()
    w: Watched = watched()
    page = w.page
    log_in(page, d)
    open_tab(page, "browse")
    card = page.locator(".browse-card", has_text="Model 1")
    card.locator(".browse-follow-creator").click()

    expect(page.locator("#tab-follows")).to_have_css("opacity", "1")
    expect(page.locator("#follow-kind")).to_have_value("username")
    expect(page.locator("#follow-value")).to_have_value("Lykon")
    rows = page.locator("#follow-preview-body .follow-item")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_text(
        "Model 1v10m1.safetensors2.0 KBlora/seen: not takenlisted before the follow's first check"
    )
    expect(page.locator("#follow-summary")).to_contain_text("1 listed now, 0 would be taken")
    assert civitai_follows(d) == []  # nothing saved by the preview

    page.select_option("#follow-mode", "download")  # a changed rule is previewed again
    expect(page.locator("#follow-result")).to_be_hidden()
    page.check("#follow-backlog")
    page.click("#follow-preview")
    expect(rows.first.locator(".follow-state")).to_have_text("take now")
    shot(page, "follows-preview")
    page.uncheck("#follow-backlog")
    page.click("#follow-preview")
    expect(rows.first.locator(".follow-state")).to_contain_text("seen: not taken")
    page.click("#follow-save")
    row = page.locator(".follow-row")
    expect(row).to_have_count(1)
    expect(row.locator(".follow-title")).to_have_text("creator Lykon")
    expect(row.locator(".follow-mode")).to_have_text("download")
    expect(row.locator(".follow-last")).to_have_text("never")
    [saved] = civitai_follows(d)
    assert (saved["username"], saved["mode"], saved["backlog"]) == ("Lykon", "download", "skip")

    row.locator(".follow-check").click()  # the first check: what exists is seen
    expect(row.locator(".follow-found")).to_have_text("0 new")
    data = b"fresh" * 1_000
    creator_model(civitai, 2, "Lykon", data)
    row.locator(".follow-check").click()
    expect(row.locator(".follow-found")).to_have_text("1 new: Model 2")
    expect(row.locator(".follow-last")).not_to_have_text("never")
    shot(page, "follows-tab")
    with d.client() as c:
        [job] = c.get("/api/jobs").json()["jobs"]
        assert_file_is(wait_job(c, job["id"])["path"], hashlib.sha256(data).hexdigest())

    creator_model(civitai, 3, "Lykon", b"third" * 1_000)  # found by the whole update check
    open_tab(page, "library")
    page.click("#check-updates")
    said = "Update check: 1 new model from creator Lykon (queued)."
    toast = page.locator(".toast", has_text=said)
    expect(toast).to_be_visible()
    open_tab(page, "follows")
    expect(row.locator(".follow-found")).to_have_text("1 new: Model 3")
    assert w.problems == [], w.problems


def test_follow_search_carries_the_search_and_a_viewer_sees_follows_without_buttons(
    civitai,
    daemon,
    watched,  # noqa: F811
):
    f = civitai.file(b"c" * 100, name="castle.safetensors")
    civitai.add_model(3, "Castle XL", "Checkpoint", [civitai.version(30, [f], published_at=LATER)])
    d = daemon(viewer_token="wall-screen-key-of-enough-entropy-0123")
    w: Watched = watched()
    page = w.page
    log_in(page, d)
    open_tab(page, "browse")
    page.click("#browse-follow")  # nothing to follow yet: says what it needs
    expect(page.locator(".toast", has_text="to follow a search")).to_be_visible()
    page.fill("#browse-query", "castle")
    page.select_option("#browse-type", "Checkpoint")
    page.select_option("#browse-sort", "Most Downloaded")
    page.click("#browse-follow")
    expect(page.locator("#follow-kind")).to_have_value("query")
    expect(page.locator("#follow-value")).to_have_value("castle")
    expect(page.locator("#follow-types")).to_have_value("Checkpoint")
    expect(page.locator("#follow-preview-body .follow-item")).to_have_text(
        [
            "Castle XLv30castle.safetensors100 Bcheckpoint/seen: not takenlisted before the "
            "follow's first check"
        ]
    )
    page.click("#follow-save")
    expect(page.locator(".follow-title")).to_have_text('search "castle"')
    [saved] = civitai_follows(d)
    assert (saved["types"], saved["sort"]) == (["Checkpoint"], "Most Downloaded")
    assert w.problems == [], w.problems

    viewer = watched()
    log_in(viewer.page, d, key="wall-screen-key-of-enough-entropy-0123")
    open_tab(viewer.page, "follows")
    expect(viewer.page.locator(".follow-title")).to_have_text('search "castle"')
    expect(viewer.page.locator(".follow-check")).to_have_count(0)
    expect(viewer.page.locator("#follow-section")).to_be_hidden()
    assert viewer.problems == [], viewer.problems


def civitai_follows(d) -> list[dict]:
    with d.client() as c:
        return c.get("/api/follows").json()["follows"]
