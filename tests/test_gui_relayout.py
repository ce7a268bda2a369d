"""Changing the layout in a real browser (issue 16): Settings saves it, a notice offers the move,
the plan is shown before anything moves, Confirm moves the files (read back from disk). The page
is watched for console errors, page errors and CSP violations: there must be none."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import expect

from tests.conftest import read_config, run_job, sha256_file
from tests.test_gui import log_in, open_tab, shot
from tests.test_gui_library import _page


def test_a_layout_change_offers_the_move_shows_the_plan_and_moves_the_files_on_confirm(
    civitai,
    daemon,
    home,
    browser,
):
    civitai.add_simple(1, 10, os.urandom(30_000), filename="detail.safetensors", type="LORA")
    civitai.add_simple(2, 20, os.urandom(50_000), filename="dream.safetensors", type="Checkpoint")
    d = daemon()
    root = Path(os.path.realpath(home / "data" / "models"))
    lora = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    ckpt = run_job(d, {"modelVersionId": 20, "model_type": "checkpoint"})
    w = _page(browser)
    page = w.page
    log_in(page, d)

    open_tab(page, "library")  # in place: no notice, and nothing to move
    expect(page.locator("#relayout-button")).to_be_hidden()
    expect(page.locator("#relayout-notice")).to_be_hidden()

    open_tab(page, "settings")
    layout = page.locator("#set-layout")
    expect(layout.locator("option")).to_have_text(["default", "ComfyUI", "A1111", "Forge"])
    expect(layout).to_have_value("default")
    layout.select_option("a1111")
    page.click("#settings-save")
    notice = page.locator("#relayout-settings-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("2 files are in the old layout's folders — Review move")
    assert read_config(home)["layout"] == "a1111"
    # Saved, not moved: the files are where they were.
    assert Path(lora["path"]).is_file() and Path(ckpt["path"]).is_file()

    notice.locator(".relayout-review").click()
    modal = page.locator("#relayout-modal")
    expect(modal).to_be_visible()
    expect(page.locator("#relayout-summary")).to_have_text(
        "2 files move into the a1111 layout's folders when you confirm."
    )
    moves = page.locator("#relayout-body tr.relayout-move")
    expect(moves).to_have_count(2)
    # Below download_dir, as the layout table names the folders; the full path in the title.
    expect(moves.locator(".relayout-from")).to_have_text(
        ["lora/detail.safetensors", "checkpoint/dream.safetensors"]
    )
    new_lora = root / "models" / "Lora" / "detail.safetensors"
    new_ckpt = root / "models" / "Stable-diffusion" / "dream.safetensors"
    expect(moves.locator(".relayout-to")).to_have_text(
        ["models/Lora/detail.safetensors", "models/Stable-diffusion/dream.safetensors"]
    )
    expect(moves.locator(".relayout-to").first).to_have_attribute("title", str(new_lora))
    expect(moves.locator(".relayout-from").first).to_have_attribute("title", lora["path"])
    expect(moves.first).to_contain_text("lora · with 3 sidecars")  # info, preview, A1111 .json
    confirm = page.locator("#relayout-confirm")
    expect(confirm).to_be_enabled()
    box = confirm.bounding_box()
    assert box and box["width"] > 40 and box["height"] > 20, box
    shot(page, "relayout-plan")

    # Cancel leaves everything where it is.
    page.click("#relayout-cancel")
    expect(modal).to_be_hidden()
    assert Path(lora["path"]).is_file() and not new_lora.exists()

    open_tab(page, "library")
    library_notice = page.locator("#relayout-notice")
    expect(library_notice).to_contain_text("2 files are in the old layout's folders")
    page.click("#relayout-button")
    expect(modal).to_be_visible()
    expect(confirm).to_be_enabled()
    confirm.click()
    expect(page.locator("#relayout-summary")).to_have_text(
        "Moved 2 files into the a1111 layout's folders."
    )
    expect(confirm).to_be_hidden()
    expect(page.locator("#relayout-cancel")).to_have_text("Close")
    shot(page, "relayout-done")
    assert sha256_file(new_lora) == lora["sha256"]
    assert sha256_file(new_ckpt) == ckpt["sha256"]
    assert (new_lora.parent / "detail.civitai.info").is_file()
    assert not Path(lora["path"]).exists() and not Path(ckpt["path"]).exists()
    page.click("#relayout-cancel")
    expect(modal).to_be_hidden()
    expect(library_notice).to_be_hidden()
    expect(page.locator(".library-row .library-path")).to_have_text([str(new_ckpt), str(new_lora)])
    expect(page.locator("#relayout-button")).to_be_hidden()  # nothing left to move
    assert not (root / "lora").exists() and not (root / "checkpoint").exists()  # emptied: gone
    w.assert_clean()
    w.page.context.close()
    d.stop()
