"""The Library and the disk in a real browser (issue 15): copy a path, filter, totals per type,
delete with a confirmation, the disk of download_dir on the Status page. Every page is watched
for console errors, page errors and CSP violations: there must be none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from config.sizes import human_bytes
from tests.conftest import run_job, wait_for
from tests.test_gui import log_in, open_tab, shot

# Every securitypolicyviolation event on the page, kept where the test can read it.
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`));
"""


class Watched:
    """A page whose console errors, page errors and CSP violations are collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.add_init_script(CSP_WATCH)
        page.on(
            "console",
            lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))

    def assert_clean(self) -> None:
        violations = self.page.evaluate("window.__csp")
        assert self.problems == [] and violations == [], (self.problems, violations)


def _page(browser, **context) -> Watched:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    return Watched(page)


def _model(civitai, model_id, version_id, data, filename, kind="LORA", base="SDXL 1.0"):
    f = civitai.file(data, name=filename)
    civitai.add_model(
        model_id, f"Model {model_id}", kind, [civitai.version(version_id, [f], base_model=base)]
    )


def _fetch(d, version_id, model_type):
    return run_job(d, {"modelVersionId": version_id, "model_type": model_type})


def test_copy_path_puts_the_files_path_on_the_clipboard(civitai, daemon, browser):
    _model(civitai, 1, 10, os.urandom(20_000), "copy me [v1].safetensors")
    d = daemon()
    job = _fetch(d, 10, "lora")
    w = _page(browser)
    w.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=d.base_url)
    log_in(w.page, d)
    open_tab(w.page, "library")
    row = w.page.locator(".library-row").first
    expect(row.locator(".library-path")).to_have_text(job["path"])
    row.locator(".library-copy").click()
    expect(w.page.locator(".toast").last).to_contain_text("Path copied.")
    assert w.page.evaluate("navigator.clipboard.readText()") == job["path"]
    w.assert_clean()
    w.page.context.close()

    # Where the page may not use the clipboard, the path is selected for Ctrl+C instead.
    w = _page(browser)
    w.page.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    log_in(w.page, d)
    open_tab(w.page, "library")
    w.page.locator(".library-row .library-copy").first.click()
    expect(w.page.locator(".toast").last).to_contain_text("press Ctrl+C")
    assert w.page.evaluate("window.getSelection().toString()") == job["path"]
    shot(w.page, "library-copy-path-selected")
    w.assert_clean()
    w.page.context.close()
    d.stop()


def test_library_filters_by_type_base_model_and_name_and_totals_each_type(civitai, daemon, browser):
    _model(civitai, 1, 10, b"a" * 1500, "anime_lines.safetensors", "LORA", "SD 1.5")
    _model(civitai, 2, 20, b"b" * 2_600_000, "detail_tweaker.safetensors", "LORA", "SDXL 1.0")
    _model(civitai, 3, 30, b"c" * 4_000_000, "juggernaut.safetensors", "Checkpoint", "SDXL 1.0")
    d = daemon()
    for version, kind in ((10, "lora"), (20, "lora"), (30, "checkpoint")):
        _fetch(d, version, kind)
    w = _page(browser)
    page = w.page
    log_in(page, d)
    open_tab(page, "library")
    rows = page.locator(".library-row")
    expect(rows).to_have_count(3)
    totals = page.locator(".library-total")
    expect(totals).to_have_text(
        [
            f"All · 3 files · {human_bytes(6_601_500)}",
            f"checkpoint · 1 file · {human_bytes(4_000_000)}",
            f"lora · 2 files · {human_bytes(2_601_500)}",
        ]
    )
    assert human_bytes(2_601_500) == "2.6 MB"  # the one size rule, as the GUI shows it

    page.select_option("#library-type", "lora")
    expect(rows).to_have_count(2)
    expect(rows.locator(".library-type")).to_have_text(["lora", "lora"])
    page.select_option("#library-base", "SD 1.5")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("anime_lines.safetensors")
    expect(rows.first.locator(".library-base")).to_have_text("SD 1.5")
    page.select_option("#library-base", "")
    page.select_option("#library-type", "")
    page.fill("#library-search", "JUGGER")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("juggernaut.safetensors")
    expect(rows.first).to_be_visible()
    page.fill("#library-search", "no such model")
    expect(rows).to_have_count(0)
    expect(page.locator("#library-empty")).to_have_text("No completed file matches these filters.")
    page.fill("#library-search", "")
    expect(rows).to_have_count(3)
    totals.filter(has_text="checkpoint").click()  # a type's badge filters by that type
    expect(rows).to_have_count(1)
    expect(page.locator("#library-type")).to_have_value("checkpoint")
    shot(page, "library-filtered-by-type")
    scroll = "n => [n.scrollWidth, n.clientWidth]"
    wide, shown = page.locator("#tab-library .table-responsive").evaluate(scroll)
    assert wide <= shown, f"the table scrolls sideways at 1280 px: {wide} > {shown}"
    page.set_viewport_size({"width": 390, "height": 844})
    for button in (rows.first.locator(".library-copy"), rows.first.locator(".library-delete")):
        box = button.bounding_box()  # on a phone, without scrolling sideways
        assert box and 0 <= box["x"] and box["x"] + box["width"] <= 390, box
    shot(page, "library-390px")
    w.assert_clean()
    page.context.close()
    d.stop()


def test_delete_asks_first_then_removes_the_file_and_its_sidecars_viewers_see_no_button(
    civitai, daemon, browser, home
):
    _model(civitai, 1, 10, os.urandom(30_000), "gone.safetensors")
    d = daemon(viewer_token="wall-screen-key")
    job = _fetch(d, 10, "lora")
    model = Path(job["path"])
    sidecars = [
        model.with_name("gone.civitai.info"),
        model.with_name("gone.preview.png"),
        model.with_name("gone.json"),
    ]
    neighbour = model.with_name("gone.txt")
    neighbour.write_text("my notes")
    assert all(p.is_file() for p in sidecars)

    viewer = _page(browser)
    log_in(viewer.page, d, "wall-screen-key")
    open_tab(viewer.page, "library")
    expect(viewer.page.locator(".library-row")).to_have_count(1)
    expect(viewer.page.locator(".library-delete")).to_have_count(0)
    expect(viewer.page.locator(".library-copy")).to_be_visible()
    viewer.assert_clean()
    viewer.page.context.close()

    w = _page(browser)
    page = w.page
    log_in(page, d)
    open_tab(page, "library")
    page.locator(".library-row .library-delete").click()
    modal = page.locator("#delete-modal")
    expect(modal).to_have_css("opacity", "1")
    expect(modal.locator("#delete-path")).to_have_text(str(model))
    expect(modal.locator("#delete-confirm")).to_be_enabled()
    shot(page, "library-delete-confirmation")
    modal.get_by_role("button", name="Keep it").click()
    expect(modal).to_be_hidden()
    assert model.is_file() and all(p.is_file() for p in sidecars)  # nothing happened

    page.locator(".library-row .library-delete").click()
    expect(modal).to_be_visible()
    page.click("#delete-confirm")
    expect(modal).to_be_hidden()
    expect(page.locator(".toast").last).to_contain_text(
        "Deleted gone.safetensors and 3 sidecar files."
    )
    expect(page.locator(".library-row")).to_have_count(0)
    expect(page.locator("#library-empty")).to_have_text("No completed downloads yet.")
    assert not model.exists() and not any(p.exists() for p in sidecars)
    assert neighbour.read_text() == "my notes"
    shot(page, "library-after-delete")
    w.assert_clean()
    page.context.close()
    d.stop()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_status_page_shows_free_and_used_space_of_download_dir(
    civitai, daemon, browser, tmpfs, scheme
):
    disk = tmpfs("gui-disk", "size=20m")
    _model(civitai, 1, 10, os.urandom(3_000_000), "m.safetensors")
    d = daemon(download_dir=str(disk.path), wrap=disk.wrap)
    _fetch(d, 10, "lora")
    (disk.seen_from_here(d) / "other.bin").write_bytes(os.urandom(9_000_000))
    status = d.client().get("/api/status").json()
    used, total, free = status["disk"]["used"], status["disk"]["total"], status["disk"]["free"]
    pct = round(100 * used / total)
    assert 55 <= pct <= 70, status["disk"]  # 12 MB of 20 MiB, plus the sidecars

    w = _page(browser, color_scheme=scheme)
    page = w.page
    log_in(page, d)
    open_tab(page, "status")
    expect(page.locator("#disk-path")).to_have_text(str(disk.path))
    expect(page.locator("#disk-text")).to_have_text(
        f"{human_bytes(free)} free of {human_bytes(total)} ({pct}% used)"
    )
    expect(page.locator("#disk-models")).to_have_text("Models in the library: 3.0 MB")

    def drawn() -> float | None:  # the bar's share of its track, once its transition has ended
        track = page.locator("#disk-bar").bounding_box()
        bar = page.locator("#disk-bar .progress-bar").bounding_box()
        assert track and bar and track["width"] > 300
        share = bar["width"] / track["width"]
        return share if abs(share - pct / 100) <= 0.03 else None

    wait_for(drawn, 10, what=f"the disk bar drawn at {pct}% of its track")
    shot(page, f"status-disk-{scheme}")
    w.assert_clean()
    page.context.close()
    d.stop()
