"""The GUI's Add tab and tracked models, in a real browser (fixtures from test_gui.py): per-line
types in a pasted batch, an honest failed look-up, track for updates, untrack."""

from __future__ import annotations

import json

from playwright.sync_api import Page, expect

from tests.conftest import assert_file_is, wait_for
from tests.test_gui import log_in, open_tab, shot
from tests.test_updates import read_manifest, write_manifest


def watch(pg: Page) -> list[str]:
    """Console errors (CSP violations among them) and page errors, as they happen."""
    problems: list[str] = []
    pg.on(
        "console",
        lambda m: (
            problems.append(f"{m.text} at {m.location.get('url')}") if m.type == "error" else None
        ),
    )
    pg.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    return problems


def test_a_pasted_lora_vae_embedding_and_checkpoint_each_land_in_their_own_folder(
    civitai, daemon, page, home
):
    kinds = {1: "LORA", 2: "VAE", 3: "TextualInversion", 4: "Checkpoint"}
    files = {
        i: civitai.add_simple(i, 10 + i, bytes([i]) * 30_000, filename=f"m{i}.safetensors", type=t)
        for i, t in kinds.items()
    }
    problems = watch(page)
    d = daemon()
    log_in(page, d)
    open_tab(page, "add")
    batch_type = page.locator("#batch-type")
    expect(batch_type).to_have_value("")  # the default: each line its own type
    expect(batch_type.locator("option:checked")).to_contain_text("from Civitai")
    lines = ["https://civitai.com/models/1", "2", "https://civitai.com/models/3/an-embedding", "4"]
    page.fill("#batch-urls", "\n".join(lines))
    page.click("#batch-urls-button")
    expect(page.locator(".batch-error")).to_have_count(0)
    with d.client() as c:
        wait_for(lambda: c.get("/api/jobs?status=completed").json()["total"] == 4, 30)
    open_tab(page, "queue")
    expect(page.locator("tr.job-row .job-status", has_text="completed")).to_have_count(4)
    shot(page, "add-batch-types-from-civitai-queue")
    folders = {1: "lora", 2: "vae", 3: "embedding", 4: "checkpoint"}
    for i, folder in folders.items():
        assert_file_is(home / f"data/models/{folder}/m{i}.safetensors", files[i].sha256)
    assert not (home / "data/models/lora/m2.safetensors").exists()
    # Track for updates is ticked by default: each model is tracked in its own folder.
    assert sorted((e["modelId"], e["model_type"]) for e in read_manifest(home)) == sorted(
        folders.items()
    )
    assert problems == [], problems
    d.stop()


def test_a_failed_look_up_clears_the_previous_model_and_says_what_failed(civitai, daemon, page):
    civitai.add_simple(4384, 128713, b"d" * 10_000, filename="dreamshaper_8.safetensors")
    problems = watch(page)
    d = daemon()
    log_in(page, d)
    open_tab(page, "add")
    page.fill("#lookup-input", "4384")
    page.click("#lookup-button")
    expect(page.locator("#lookup-name")).to_have_text("Model 4384")
    expect(page.locator("#add-button")).to_be_enabled()
    page.fill("#lookup-input", "https://civitai.com/models/999/gone")
    page.click("#lookup-button")
    error = page.locator("#lookup-error")
    expect(error).to_be_visible()
    expect(error).to_have_text(
        "Look-up of https://civitai.com/models/999/gone failed: No model 999 on Civitai"
    )
    expect(page.locator("#lookup-result")).to_be_hidden()
    expect(page.get_by_text("Model 4384")).to_have_count(0)
    expect(page.locator("#add-button")).to_be_disabled()
    box = error.bounding_box()
    assert box is not None and box["width"] > 200 and box["height"] > 20  # seen, not a sliver
    shot(page, "add-lookup-failed")
    # The one console line is the browser's own note of the 404 the look-up got; nothing else.
    missing = [p for p in problems if "status of 404" in p and "/api/lookup" in p]
    assert len(missing) == 1, problems
    problems.remove(missing[0])
    assert problems == [], problems
    with d.client() as c:
        assert c.get("/api/jobs").json()["total"] == 0  # nothing queued by any of it
    d.stop()


def test_a_model_added_with_track_is_listed_by_name_and_untrack_keeps_its_file(
    civitai, daemon, page, home
):
    f = civitai.add_simple(1, 10, b"k" * 30_000, filename="kept.safetensors")
    problems = watch(page)
    d = daemon()
    log_in(page, d)
    open_tab(page, "add")
    page.fill("#lookup-input", "1")
    page.click("#lookup-button")
    expect(page.locator("#add-track")).to_be_checked()  # on by default in the GUI
    page.click("#add-button")
    row = page.locator("tr.job-row").first
    expect(row.locator(".job-status")).to_have_text("completed", timeout=20_000)
    path = home / "data/models/lora/kept.safetensors"
    assert_file_is(path, f.sha256)
    [entry] = read_manifest(home)
    assert entry == {
        "modelId": 1,
        "modelVersionId": 10,
        "model_type": "lora",
        "sha256": f.sha256.lower(),
        "filename": "kept.safetensors",
    }
    write_manifest(home, [entry, {"modelId": 7, "model_type": "Not A Folder!"}])
    open_tab(page, "library")
    tracked = page.locator(".tracked-row")
    expect(tracked).to_have_count(2)
    expect(tracked.nth(0).locator(".tracked-name")).to_have_text("Model 1")
    expect(tracked.nth(0).locator(".tracked-version")).to_have_text(" · v10")
    expect(tracked.nth(0).locator(".tracked-type")).to_have_text("lora")
    expect(tracked.nth(1).locator(".tracked-problem")).to_contain_text(
        "Entry 2 (modelId 7) cannot be used: model_type: model_type 'Not A Folder!' is not allowed"
    )
    shot(page, "library-tracked")
    page.once("dialog", lambda dialog: dialog.accept())
    tracked.nth(0).locator(".tracked-untrack").click()
    expect(tracked).to_have_count(1)
    expect(page.locator(".tracked-name")).to_have_text("model 7")
    assert [e["modelId"] for e in json.loads((home / "manifest.json").read_text())] == [7]
    assert_file_is(path, f.sha256)  # untracked, never deleted
    shot(page, "library-untracked")
    assert problems == [], problems
    d.stop()
