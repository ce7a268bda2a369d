"""The Browse tab in a real browser (issue 18): search Civitai (the fake), filter, more by cursor,
a card's versions and files, Download and track into the layout's folder; viewers browse without
download buttons; Civitai's 429 as a toast with the daemon's sentence; a phone's width. Every page
is watched for console errors, page errors and CSP violations."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
from playwright.sync_api import Page, expect

from tests.conftest import assert_file_is, wait_for, wait_job
from tests.test_gui import log_in, open_tab, shot
from tests.test_gui_queue import Watched, watched  # noqa: F401 (watched: a fixture)
from tests.test_updates import read_manifest

STATS = {"downloadCount": 12_345, "rating": 4.8, "ratingCount": 10, "thumbsUpCount": 9}


def _catalogue(civitai) -> dict[str, object]:
    """23 plain LoRAs (one without any image), a LoRA about dreams, and DreamShaper: version 8
    (a primary model file and a config) and version 7, still in early access."""
    for i in range(23):
        f = civitai.file(bytes([i]) * 1_000, name=f"filler{i}.safetensors")
        version = civitai.version(1_000 + i, [f], images=0 if i == 0 else 1)
        civitai.add_model(100 + i, f"Filler {i:02}", "LORA", [version])
    lora = civitai.add_simple(
        5000,
        5001,
        b"l" * 2_000,
        filename="dream_lora.safetensors",
        extra={"stats": {"downloadCount": 50_000, "thumbsUpCount": 1}},
    )
    civitai.models[5000].name = "Dream Lora"
    model = civitai.file(b"d" * 40_000, name="dreamshaper_8.safetensors")
    config = civitai.file(b"c" * 1_500, name="dreamshaper_8.yaml", primary=False, type="Config")
    early = civitai.file(b"e" * 30_000, name="dreamshaper_7.safetensors")
    civitai.add_model(
        4384,
        "DreamShaper",
        "Checkpoint",
        [
            civitai.version(128713, [model, config], name="8", base_model="SD 1.5", media=["png"]),
            civitai.version(
                128000, [early], name="7", base_model="SD 1.5", early_access_until=time.time() + 1e6
            ),
        ],
        creator="Lykon",
        extra={"stats": STATS},
    )
    return {"model": model, "lora": lora}


def _asked(civitai, key: str) -> list[str]:
    """Each value of `key` the daemon sent to Civitai's list endpoint, in order."""
    return [
        v
        for r in civitai.requests_to("api", "/api/v1/models")
        for v in parse_qs(urlsplit(r.path).query).get(key, [])
    ]


def _clean(w: Watched) -> None:
    assert w.problems == [], w.problems


def test_search_filter_load_more_open_a_card_and_download_and_track_a_version(
    civitai,
    daemon,
    home,
    watched,  # noqa: F811
):
    files = _catalogue(civitai)
    d = daemon(layout="comfyui")
    models = home / "data" / "models"
    with d.client() as c:  # a model downloaded before: its card says so
        wait_job(c, c.post("/api/download", json={"modelVersionId": 5001}).json()["id"])
    w: Watched = watched()
    page = w.page
    log_in(page, d)
    open_tab(page, "browse")

    cards = page.locator(".browse-card")
    expect(cards).to_have_count(20)  # the first page, by the default sort
    assert _asked(civitai, "sort")[-1] == "Highest Rated"
    more = page.locator("#browse-more")
    expect(more).to_be_visible()
    more.scroll_into_view_if_needed()  # infinite scroll: the next page comes by itself
    expect(cards).to_have_count(25)
    expect(more).to_be_hidden()  # no further cursor
    assert len(_asked(civitai, "cursor")) == 1
    without = page.locator(".browse-card", has_text="Filler 00")
    expect(without.locator(".browse-noimg")).to_have_text("No preview")
    expect(without.locator("img")).to_have_count(0)
    page.locator("#app").evaluate("n => n.scrollTo(0, 0)")
    shot(page, "browse")

    page.fill("#browse-query", "dream")
    page.press("#browse-query", "Enter")
    expect(cards).to_have_count(2)
    dream = page.locator(".browse-card", has_text="DreamShaper")
    expect(dream.locator(".browse-type")).to_have_text("Checkpoint")
    expect(dream.locator(".browse-base")).to_have_text("SD 1.5")
    expect(dream.locator(".browse-size")).to_have_text("40.0 KB")  # the primary file's
    expect(dream.locator(".browse-downloads")).to_have_text("↓ 12.3k")
    expect(dream.locator(".browse-rating")).to_have_text("★ 4.8 (10)")
    expect(dream.locator(".browse-state")).to_have_count(0)
    lora = page.locator(".browse-card", has_text="Dream Lora")
    expect(lora.locator(".browse-state")).to_have_text("downloaded")
    thumb = dream.locator("img")
    assert thumb.get_attribute("loading") == "lazy"
    assert thumb.get_attribute("src").startswith("/api/civitai/image?url=")
    assert "width=320" in thumb.get_attribute("src")
    wait_for(lambda: thumb.evaluate("i => i.complete && i.naturalWidth > 0"), 10, what="preview")

    names = cards.locator(".browse-name")
    expect(names).to_have_text(["DreamShaper", "Dream Lora"])  # the most thumbs up first
    page.select_option("#browse-sort", "Most Downloaded")
    expect(names).to_have_text(["Dream Lora", "DreamShaper"])
    assert _asked(civitai, "sort")[-1] == "Most Downloaded"

    page.select_option("#browse-type", "Checkpoint")
    expect(cards).to_have_count(1)
    page.select_option("#browse-base", "Pony")
    expect(cards).to_have_count(0)
    expect(page.locator("#browse-summary")).to_have_text("No model matches this search.")
    page.select_option("#browse-base", "SD 1.5")
    expect(cards).to_have_count(1)
    assert _asked(civitai, "types")[-1] == "Checkpoint"
    assert _asked(civitai, "baseModels")[-1] == "SD 1.5"

    dream.locator(".browse-name").click()
    modal = page.locator("#browse-modal")
    expect(modal).to_have_css("opacity", "1")
    expect(page.locator("#browse-modal-title")).to_have_text("DreamShaper")
    expect(page.locator("#browse-model-type")).to_have_value("checkpoint")
    expect(page.locator("#browse-folder")).to_have_text("Goes to checkpoints/ under the layout.")
    versions = modal.locator(".browse-version")
    expect(versions).to_have_count(2)
    v8, v7 = versions.nth(0), versions.nth(1)
    expect(v8.locator(".browse-file")).to_have_count(2)
    expect(v8.locator(".browse-primary")).to_have_count(1)
    expect(v8.locator(".browse-file", has_text="dreamshaper_8.safetensors")).to_contain_text(
        "primary"
    )
    expect(v8.locator(".browse-file-size")).to_have_text(["40.0 KB", "1.5 KB"])
    expect(v7.locator(".browse-early")).to_contain_text("Early access until")
    expect(v8.locator(".browse-early")).to_have_count(0)
    shot(page, "browse-card")

    civitai.default_rate = 40_000  # about a second: the "queued" mark is seen before "downloaded"
    primary = v8.locator(".browse-file", has_text="dreamshaper_8.safetensors")
    primary.get_by_role("button", name="Download and track").click()
    expect(page.locator(".toast").last).to_contain_text("Queued dreamshaper_8.safetensors")
    expect(v8.locator(".browse-version-state .badge")).to_have_text("queued")
    expect(dream.locator(".browse-state")).to_have_text("queued")
    path = models / "checkpoints" / "dreamshaper_8.safetensors"
    wait_for(path.exists, 20, what=str(path))
    with d.client() as c:
        wait_for(lambda: c.get("/api/jobs?status=completed").json()["total"] == 2, 20)
    assert_file_is(path, files["model"].sha256)  # type: ignore[attr-defined]
    # Once verified, the version and its card say so (the live feed's news of the job).
    expect(v8.locator(".browse-version-state .badge")).to_have_text("downloaded")
    expect(dream.locator(".browse-state")).to_have_text("downloaded")
    assert [(e["modelVersionId"], e["model_type"]) for e in read_manifest(home)] == [
        (128713, "checkpoint")
    ]
    modal.get_by_role("button", name="Close").click()
    expect(modal).to_be_hidden()
    open_tab(page, "queue")
    expect(page.locator("tr.job-row", has_text="dreamshaper_8.safetensors")).to_have_count(1)
    _clean(w)
    d.stop()


def test_a_phone_sees_one_card_a_row_in_dark_and_a_viewer_no_download_button(
    civitai,
    daemon,
    watched,  # noqa: F811
):
    _catalogue(civitai)
    d = daemon(viewer_token="wall-screen-key")
    w: Watched = watched(width=390, height=844, scheme="dark")
    page = w.page
    log_in(page, d, "wall-screen-key")
    expect(page.locator("#role")).to_have_text("viewer")
    open_tab(page, "browse")
    cards = page.locator(".browse-card")
    expect(cards).to_have_count(20)
    boxes = [cards.nth(i).bounding_box() for i in range(3)]
    for box in boxes:  # one a row, each across the screen, none out of it
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["width"] > 300
    assert boxes[0]["y"] + boxes[0]["height"] <= boxes[1]["y"], boxes  # type: ignore[index]
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
    assert page.evaluate("document.getElementById('app').scrollWidth") <= 390
    shot(page, "browse-390")

    page.fill("#browse-query", "DreamShaper")
    page.press("#browse-query", "Enter")
    expect(cards).to_have_count(1)
    cards.first.locator(".browse-name").click()
    modal = page.locator("#browse-modal")
    expect(modal).to_have_css("opacity", "1")
    expect(modal.locator(".browse-file")).to_have_count(3)  # the files, listed
    expect(page.get_by_role("button", name="Download")).to_have_count(0)
    expect(page.get_by_role("button", name="Download and track")).to_have_count(0)
    expect(page.locator("#browse-model-type")).to_have_count(0)
    box = modal.locator(".modal-content").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    shot(page, "browse-390-viewer-card")
    _clean(w)
    d.stop()


def test_civitai_rate_limiting_a_search_shows_the_daemons_sentence(
    civitai,
    daemon,
    watched,  # noqa: F811
):
    _catalogue(civitai)
    d = daemon()
    w: Watched = watched()
    page: Page = w.page
    log_in(page, d)
    civitai.fault("api", status=429, retry_after=30)
    open_tab(page, "browse")
    error = page.locator(".toast.text-bg-danger .toast-body")
    expect(error).to_have_count(1)
    civitai.fault("api", status=429, retry_after=30)
    with d.client() as c:
        answer = c.get("/api/civitai/models?limit=20&sort=Highest+Rated&period=AllTime")
    assert answer.status_code == 429
    expect(error).to_have_text(answer.json()["detail"])
    expect(page.locator(".browse-card")).to_have_count(0)
    # The one console line is the browser's own note of the 429 the search got; nothing else.
    noted = [p for p in w.problems if "status of 429" in p and "/api/civitai/models" in p]
    assert len(noted) == 1, w.problems
    w.problems.remove(noted[0])
    _clean(w)
    page.click("#browse-button")  # Civitai answers again: the search works
    expect(page.locator(".browse-card")).to_have_count(20)
    _clean(w)
    d.stop()


HOSTILE = {  # what Civitai could send in names: shown as text, never run
    "model": '<img src=x onerror="window.__xss=1">Evil & "Co"',
    "creator": "<script>window.__xss=2</script>",
    "version": '"><svg onload="window.__xss=3">',
    "base": "<b>SD</b>",
    "file": "<iframe src=javascript:window.__xss=4>.safetensors",
}


def test_names_with_html_from_civitai_show_as_text_and_a_viewer_cannot_download_one(
    civitai,
    daemon,
    watched,  # noqa: F811
):
    f = civitai.file(b"x" * 3_000, name=HOSTILE["file"])
    version = civitai.version(
        7001, [f], name=HOSTILE["version"], base_model=HOSTILE["base"], images=0
    )
    civitai.add_model(7000, HOSTILE["model"], "LORA", [version], creator=HOSTILE["creator"])
    d = daemon(viewer_token="wall-screen-key")
    w: Watched = watched()
    page = w.page
    log_in(page, d, "wall-screen-key")
    spelled = "script, svg, iframe, b, img"
    before = page.locator(spelled).count()  # the page's own, before any name is shown
    open_tab(page, "browse")
    card = page.locator(".browse-card")
    expect(card).to_have_count(1)
    expect(card.locator(".browse-name")).to_have_text(HOSTILE["model"])
    expect(card).to_contain_text(f"by {HOSTILE['creator']}")
    expect(card.locator(".browse-base")).to_have_text(HOSTILE["base"])
    card.locator(".browse-name").click()
    modal = page.locator("#browse-modal")
    expect(modal).to_have_css("opacity", "1")
    expect(page.locator("#browse-modal-title")).to_have_text(HOSTILE["model"])
    expect(modal.locator(".browse-version .fw-semibold")).to_have_text(HOSTILE["version"])
    expect(modal.locator(".browse-file-name")).to_contain_text(HOSTILE["file"])
    # No element the names spell was made anywhere (the one version has no preview), no script ran.
    assert page.locator(".browse-noimg").count() == 2  # the card's and the dialog's placeholder
    assert page.locator(spelled).count() == before
    assert page.evaluate("window.__xss") is None
    # A viewer sees no Download, and the daemon refuses the viewer's download all the same.
    expect(page.get_by_role("button", name="Download")).to_have_count(0)
    refused = httpx.post(
        d.url("/api/download"),
        json={"modelVersionId": 7001, "fileId": f.id},
        headers={"Authorization": "Bearer wall-screen-key"},
        timeout=20,
    )
    assert refused.status_code == 403, refused.text
    assert isinstance(refused.json()["detail"], str) and refused.json()["detail"]
    modal.get_by_role("button", name="Close").click()
    expect(modal).to_be_hidden()

    # The search box with odd input: sent to Civitai as the words typed, nothing more.
    odd = '"><svg onload=alert(1)>&types=VAE#x %00 ✓'
    page.fill("#browse-query", odd)
    page.press("#browse-query", "Enter")
    expect(page.locator("#browse-summary")).to_have_text("No model matches this search.")
    expect(card).to_have_count(0)
    assert _asked(civitai, "query")[-1] == odd.strip()
    assert _asked(civitai, "types") == []
    assert page.evaluate("window.__xss") is None
    _clean(w)
    d.stop()
