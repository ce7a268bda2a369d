"""The Library page as a model manager in a real browser (issue 26 items 3, 4 and 7): cards with
their previews, trigger words copied with one click and a link to the model's page; a pasted
AutoV2 finds its file; the Cards/Table choice is remembered; an NSFW preview is blurred until a
click shows it (in the Library and in Browse); the update the daily check found is badged, its
plan shown first, and queued only on confirm. Real daemon, fake Civitai, Chromium; every page
watched for console errors, page errors and CSP violations."""

from __future__ import annotations

import hashlib
import re

from playwright.sync_api import expect
from sqlite_utils import Database

from schema import migrations
from tests.conftest import wait_for, wait_job
from tests.test_gui import log_in, open_tab, shot
from tests.test_gui_library import _fetch, _page


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model(civitai, model_id, version_id, data, filename, kind="LORA", words=(), nsfw_level=1):
    f = civitai.file(data, name=filename)
    v = civitai.version(version_id, [f], trained_words=list(words), nsfw_level=nsfw_level)
    civitai.add_model(model_id, f"Model {model_id}", kind, [v])


def test_cards_show_each_model_find_a_pasted_autov2_and_blur_nsfw_until_clicked(
    civitai, daemon, browser
):
    lines = b"l" * 30_000
    _model(civitai, 1, 10, lines, "anime_lines.safetensors", words=["lineart", "ink style"])
    _model(civitai, 2, 20, b"s" * 20_000, "spicy.safetensors", nsfw_level=8)
    _model(civitai, 3, 30, b"c" * 50_000, "juggernaut.safetensors", kind="Checkpoint")
    d = daemon()
    for version, kind in ((10, "lora"), (20, "lora"), (30, "checkpoint")):
        _fetch(d, version, kind)
    w = _page(browser)
    page = w.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=d.base_url)
    log_in(page, d)
    open_tab(page, "library")
    expect(page.locator("tr.library-row")).to_have_count(3)  # the table until Cards is chosen
    page.click("#library-view-cards")
    cards = page.locator(".library-card")
    expect(cards).to_have_count(3)
    expect(page.locator("tr.library-row")).to_have_count(0)

    anime = cards.filter(has_text="anime_lines.safetensors")
    expect(anime.locator(".library-name")).to_have_text("Model 1")
    expect(anime.locator(".library-type")).to_have_text("lora")
    expect(anime.locator(".library-base")).to_have_text("SDXL 1.0")
    expect(anime.locator(".library-trigger")).to_have_text(["lineart", "ink style"])
    expect(anime.locator(".library-autov2")).to_have_text(sha(lines)[:10].upper())
    link = anime.locator(".library-page-link")
    expect(link).to_have_attribute("href", f"{civitai.base_url}/models/1?modelVersionId=10")
    anime.locator(".library-copy-words").click()
    expect(page.locator(".toast").last).to_contain_text("Trigger words copied.")
    assert page.evaluate("navigator.clipboard.readText()") == "lineart, ink style"
    image = anime.locator("img.library-card-img")
    wait_for(lambda: image.evaluate("i => i.complete && i.naturalWidth > 0"), 10, what="preview")
    expect(image).not_to_have_class("library-card-img library-blur")

    # The NSFW preview is blurred (show_nsfw is off) until a click shows that one.
    spicy = cards.filter(has_text="spicy.safetensors").locator("img.library-card-img")
    expect(spicy).to_have_class("card-img-top library-card-img library-blur")
    assert spicy.evaluate("i => getComputedStyle(i).filter") == "blur(14px)"
    shot(page, "library-cards")
    spicy.click()
    expect(spicy).to_have_class("card-img-top library-card-img")
    assert spicy.evaluate("i => getComputedStyle(i).filter") == "none"

    # A pasted AutoV2 (as Civitai shows it) finds its file; the empty state for no match.
    page.fill("#library-search", sha(lines)[:10].upper())
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text("anime_lines.safetensors")
    shot(page, "library-search-autov2")
    page.fill("#library-search", "")
    expect(cards).to_have_count(3)
    page.select_option("#library-show", "unknown")
    expect(cards).to_have_count(0)
    expect(page.locator("#library-empty")).to_have_text("No completed file matches these filters.")
    page.select_option("#library-show", "")
    page.select_option("#library-folder", "checkpoint")
    expect(cards).to_have_count(1)
    expect(cards.first.locator(".library-type")).to_have_text("checkpoint")

    # Cards stay chosen across a reload; Table brings the compact rows back.
    page.reload()
    open_tab(page, "library")
    expect(page.locator(".library-card")).to_have_count(3)
    expect(page.locator("#library-view-cards")).to_have_attribute("aria-pressed", "true")
    page.click("#library-view-table")
    expect(page.locator("tr.library-row")).to_have_count(3)
    expect(page.locator("tr.library-row .library-trigger")).to_have_count(2)
    shot(page, "library-table")
    w.assert_clean()
    page.context.close()
    d.stop()


def test_the_update_the_check_found_is_badged_planned_then_queued_on_confirm(
    civitai, daemon, browser, home
):
    old, new = b"1" * 20_000, b"2" * 70_000
    _model(civitai, 5, 50, old, "style.safetensors")
    d = daemon()
    c = d.client()
    _fetch(d, 50, "lora")
    civitai.publish_version(
        5, civitai.version(51, [civitai.file(new, name="style_v2.safetensors")], name="v2")
    )
    assert [u["new_version_id"] for u in c.post("/api/updates/check").json()["updates"]] == [51]
    w = _page(browser)
    page = w.page
    log_in(page, d)
    open_tab(page, "library")
    row = page.locator(".library-row")
    expect(row.locator(".library-update-badge")).to_have_text("update available: v2")
    page.select_option("#library-show", "update")
    expect(row).to_have_count(1)
    button = page.locator("#library-update-all")
    expect(button).to_have_text("Download all updates (1)")
    button.click()
    modal = page.locator("#updates-modal")
    expect(modal).to_have_css("opacity", "1")
    target = (home / "data/models/lora/style_v2.safetensors").resolve()
    expect(modal.locator(".updates-plan-path")).to_have_text([str(target)])
    expect(modal.locator(".updates-plan-size")).to_have_text(["70.0 KB"])
    expect(modal.locator("#updates-summary")).to_have_text("1 file to download, 70.0 KB in all.")
    shot(page, "library-update-plan")
    assert c.get("/api/jobs").json()["total"] == 1  # the plan queued nothing
    page.click("#updates-confirm")
    expect(modal).to_be_hidden()
    # (the download may finish first: its own toast can be the last one)
    expect(page.locator(".toast", has_text="Queued 1 update")).to_have_text(
        re.compile(r"Queued 1 update \(70\.0 KB\)\.")
    )
    [job] = [j for j in c.get("/api/jobs").json()["jobs"] if j["modelVersionId"] == 51]
    done = wait_job(c, job["id"])
    assert done["sha256"] == sha(new) and sha(target.read_bytes()) == sha(new)
    page.select_option("#library-show", "")
    expect(page.locator(".library-update-badge")).to_have_count(0)
    expect(button).to_be_hidden()
    w.assert_clean()
    page.context.close()
    d.stop()


def test_one_files_update_button_plans_and_queues_that_file_only(civitai, daemon, browser, home):
    for model_id in (5, 6):
        _model(
            civitai, model_id, model_id * 10, bytes([model_id]) * 9_000, f"m{model_id}.safetensors"
        )
    d = daemon()
    c = d.client()
    for model_id in (5, 6):
        _fetch(d, model_id * 10, "lora")
        newer = civitai.file(bytes([model_id]) * 30_000, name=f"m{model_id}_v2.safetensors")
        civitai.publish_version(model_id, civitai.version(model_id * 10 + 1, [newer], name="v2"))
    assert len(c.post("/api/updates/check").json()["updates"]) == 2
    w = _page(browser)
    page = w.page
    log_in(page, d)
    open_tab(page, "library")
    expect(page.locator("#library-update-all")).to_have_text("Download all updates (2)")
    six = page.locator(".library-row", has_text="m6.safetensors")
    six.locator(".library-update").click()
    modal = page.locator("#updates-modal")
    expect(modal).to_have_css("opacity", "1")
    expect(modal.locator(".updates-plan-row")).to_have_count(1)
    expect(modal.locator(".updates-plan-row")).to_contain_text("Model 6")
    expect(modal.locator(".updates-plan-path")).to_have_text(
        [str((home / "data/models/lora/m6_v2.safetensors").resolve())]
    )
    page.click("#updates-confirm")
    expect(modal).to_be_hidden()
    wait_for(lambda: c.get("/api/jobs").json()["total"] == 3, what="one update queued")
    queued = [j["modelVersionId"] for j in c.get("/api/jobs").json()["jobs"]]
    assert 61 in queued and 51 not in queued
    expect(page.locator("#library-update-all")).to_have_text("Download all updates (1)")
    five = page.locator(".library-row", has_text="m5.safetensors")
    expect(five.locator(".library-update-badge")).to_have_text("update available: v2")
    w.assert_clean()
    page.context.close()
    d.stop()


def test_browse_blurs_an_nsfw_example_image_until_it_is_clicked(civitai, daemon, browser):
    _model(civitai, 7, 70, b"x" * 5_000, "night.safetensors", nsfw_level=8)
    d = daemon()
    w = _page(browser)
    page = w.page
    log_in(page, d)
    open_tab(page, "browse")
    page.locator(".browse-card .browse-name").first.click()
    expect(page.locator("#browse-modal")).to_have_css("opacity", "1")
    strip = page.locator("#browse-modal .browse-strip-img")
    expect(strip).to_have_count(1)
    expect(strip).to_have_class("browse-strip-img browse-blur")
    shot(page, "browse-nsfw-blurred")
    strip.click()
    expect(strip).to_have_class("browse-strip-img")
    assert strip.evaluate("i => getComputedStyle(i).filter") == "none"
    w.assert_clean()
    page.context.close()
    d.stop()


def test_a_library_of_130_files_pages_by_60_and_a_search_starts_at_page_one(
    civitai, daemon, browser, home
):
    folder = (home / "data/models/lora").resolve()
    folder.mkdir(parents=True)
    db = Database(home / "data/completed.db")
    migrations.apply(db)
    db["completed"].insert_all(
        {
            "model_type": "lora",
            "filename": f"file_{i:03}.safetensors",
            "path": str(folder / f"file_{i:03}.safetensors"),
            "sha256": sha(f"file {i}".encode()),
            "size": 1000 + i,
            "model_name": f"Model {i:03}",
            "completed_at": f"2026-01-01T00:{i // 60:02}:{i % 60:02}Z",
        }
        for i in range(130)
    )
    db.close()
    d = daemon()
    w = _page(browser)
    page = w.page
    log_in(page, d)
    open_tab(page, "library")
    rows = page.locator(".library-row")
    expect(rows).to_have_count(60)
    expect(page.locator("#library-count")).to_have_text("1–60 of 130")
    expect(rows.first.locator(".fw-semibold")).to_have_text("Model 129")  # newest first
    page.click("#library-next")
    expect(page.locator("#library-count")).to_have_text("61–120 of 130")
    expect(page.locator("#library-page-info")).to_have_text("Page 2 of 3")
    page.click("#library-next")
    expect(rows).to_have_count(10)
    expect(rows.last.locator(".fw-semibold")).to_have_text("Model 000")
    expect(page.locator("#library-next")).to_be_disabled()
    page.fill("#library-search", sha(b"file 7")[:10].upper())
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".fw-semibold")).to_have_text("Model 007")
    expect(page.locator("#library-pager")).to_be_hidden()
    w.assert_clean()
    page.context.close()
    d.stop()
