"""The tracked list's update policy in a real browser (issue 28 item 2): the admin picks a policy
per model from a select (and N for "keep"); manifest.json keeps it; a bad N is refused with the
daemon's sentence and loses nothing; the viewer key reads the policy."""

from __future__ import annotations

import time

from playwright.sync_api import expect

from tests.conftest import wait_for
from tests.test_gui import log_in, open_tab, shot
from tests.test_gui_add import watch
from tests.test_updates import read_manifest, tracked


def test_the_tracked_list_sets_each_models_update_policy(civitai, daemon, page, home):
    problems = watch(page)
    files = [("a.safetensors", b"a" * 100), ("b.bin", b"b" * 10)]
    d, c = tracked(civitai, daemon, home, files, viewer_token="wall-screen-key")
    log_in(page, d)
    open_tab(page, "library")
    rows = page.locator(".tracked-row")
    expect(rows).to_have_count(2)
    first = rows.nth(0).locator(".tracked-policy-select")
    expect(first).to_have_value("download")  # an entry without the key
    first.select_option("notify")
    expect(page.locator(".toast").last).to_contain_text("Update policy: Only list updates.")
    wait_for(lambda: read_manifest(home)[0].get("policy") == "notify", what="notify saved")
    assert "policy" not in read_manifest(home)[1]

    second = rows.nth(1)
    second.locator(".tracked-policy-select").select_option("keep")
    keep = second.locator(".tracked-keep")
    expect(keep).to_be_visible()
    wait_for(lambda: read_manifest(home)[1].get("policy") == {"keep": 2}, what="keep 2 saved")
    keep.fill("3")
    keep.press("Tab")  # leaving the field is a change
    wait_for(lambda: read_manifest(home)[1].get("policy") == {"keep": 3}, what="keep 3 saved")
    shot(page, "tracked-policies")
    assert problems == [], problems

    # A bad N: the daemon's sentence, the manifest as it was.
    before = (home / "manifest.json").read_text()
    keep = rows.nth(1).locator(".tracked-keep")
    keep.fill("0")
    keep.press("Tab")
    expect(page.locator(".toast").last).to_contain_text(
        'policy must be "notify", "download", "replace" or {"keep": N} with N from 1 to 1000'
    )
    assert (home / "manifest.json").read_text() == before

    # Shown again after a reload, as manifest.json says.
    page.reload()
    open_tab(page, "library")
    expect(rows.nth(0).locator(".tracked-policy-select")).to_have_value("notify")
    expect(rows.nth(1).locator(".tracked-policy-select")).to_have_value("keep")
    expect(rows.nth(1).locator(".tracked-keep")).to_have_value("3")

    # Updates not queued say why: listed only (notify), early access until its end.
    civitai.publish_version(1, civitai.version(201, [b"new" * 50], name="v2"))
    early = civitai.version(202, [b"early" * 50], name="v2-early")
    early.early_access_until = time.time() + 3600
    civitai.publish_version(2, early)
    assert len(c.post("/api/updates/check").json()["updates"]) == 2
    page.reload()
    open_tab(page, "library")
    notes = page.locator(".update-row .update-note")
    expect(notes).to_have_count(2)
    expect(page.locator(".update-row", has_text="v2-early")).to_contain_text("early access until")
    expect(page.locator(".update-row", has_text="Model 1")).to_contain_text(
        "listed only (update policy: notify)"
    )
    shot(page, "tracked-policies-updates")

    # The viewer key reads the policy and has no select.
    page.goto("about:blank")  # the GUI's own scripts stop: none can navigate under log_in
    page.context.clear_cookies()
    log_in(page, d, key="wall-screen-key")
    open_tab(page, "library")
    expect(rows.nth(1).locator(".tracked-policy")).to_have_text("Keep the newest 3 versions")
    expect(page.locator(".tracked-policy-select")).to_have_count(0)
    d.stop()
