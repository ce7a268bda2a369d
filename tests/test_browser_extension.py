"""The browser extension in integrations/browser (issue 25), unpacked in Chromium (a Playwright
persistent context): options, sending a model from a page (toolbar popup and context menu), the
version chooser, the queue with progress, the badge, and allowed_origins. civitai.com pages are
routed to local stand-ins; any other non-loopback request fails the test."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, Worker, expect

from tests.browser import ARGS, CHROMIUM
from tests.conftest import assert_file_is, wait_for, wait_job
from tests.fake_civitai import FakeCivitai, FileSpec
from tests.test_gui import ARTIFACTS, shot
from tests.test_gui_deeplink import offline
from tests.test_live_settings import log_text

EXTENSION = Path(__file__).resolve().parent.parent / "integrations" / "browser"


class ExtensionDriver:
    """What the tests ask of the extension in either browser (Chromium here, Firefox in
    test_browser_extension_firefox.py): `run` calls JS with the extension's APIs."""

    def run(self, function: str, arg: object) -> Any:
        raise NotImplementedError

    def show(self, url: str) -> Any:
        """A new tab showing `url`."""
        raise NotImplementedError

    def tab(self, url: str) -> tuple[Any, int]:
        """A tab showing `url` (a routed stand-in) and its id as the extension knows it."""
        shown = self.show(url)
        tab_id = self.run(
            "async (url) => (await chrome.tabs.query({})).find((t) => t.url === url)?.id", url
        )
        assert isinstance(tab_id, int), f"the extension sees no tab at {url}"
        return shown, tab_id

    def badge(self, tab_id: int) -> str:
        return self.run("(tabId) => chrome.action.getBadgeText({tabId})", tab_id)

    def send_from_url(self, url: str, tab_id: int) -> Any:
        """What the context menu calls in the background, on `url` in that tab."""
        raise NotImplementedError

    def wait_badge(self, tab_id: int, text: str) -> None:
        """The badge the background set by itself (on the tab's load or a send) becomes `text`."""
        seen: list[str] = []

        def check() -> bool:
            seen.append(self.badge(tab_id))
            return seen[-1] == text

        try:
            wait_for(check, 20, 0.2, f"badge {text!r}")
        except AssertionError:
            raise AssertionError(f"badge never {text!r}; seen {sorted(set(seen))}") from None


@dataclass
class Extension(ExtensionDriver):
    context: BrowserContext
    worker: Worker  # the background service worker
    origin: str  # chrome-extension://<id>
    strays: list[str]  # requests that tried to leave the machine

    def open(self, page: str) -> Page:
        pg = self.context.new_page()
        pg.set_default_timeout(15_000)
        pg.goto(f"{self.origin}/{page}")
        return pg

    def run(self, function: str, arg: object) -> Any:
        return self.worker.evaluate(function, arg)

    def show(self, url: str) -> Page:
        pg = self.context.new_page()
        pg.goto(url)
        return pg

    def send_from_url(self, url: str, tab_id: int) -> Any:
        return self.worker.evaluate("([url, tabId]) => sendFromUrl(url, tabId)", [url, tab_id])


@pytest.fixture
def extension(browser, tmp_path: Path) -> Iterator[Extension]:
    """Chromium with the unpacked extension (new headless mode loads extensions)."""
    context = browser.browser_type.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        headless=True,
        viewport={"width": 900, "height": 700},
        args=[
            *ARGS,
            "--headless=new",
            f"--disable-extensions-except={EXTENSION}",
            f"--load-extension={EXTENSION}",
        ],
    )
    strays = offline(context)
    worker = (
        context.service_workers[0]
        if context.service_workers
        else context.wait_for_event("serviceworker")
    )
    origin = f"chrome-extension://{urlsplit(worker.url).hostname}"
    yield Extension(context, worker, origin, strays)
    context.close()


def shot_of(pg: Page, selector: str, name: str) -> None:
    """A picture of one part of a page (the README's, from tests/artifacts/)."""
    ARTIFACTS.mkdir(exist_ok=True)
    pg.locator(selector).screenshot(path=str(ARTIFACTS / f"{name}.png"))


def configure(ext: Extension, d) -> Page:
    """The options page, filled in and saved as a person would."""
    options = ext.open("options.html")
    expect(options.locator("#origin")).to_have_text(ext.origin)
    options.fill("#daemon-url", d.base_url)
    options.fill("#api-key", d.token)
    options.click("#save")
    return options


def models_to_send(civitai: FakeCivitai) -> tuple[FileSpec, FileSpec]:
    """Model 1 (version 11), a slow model 4 (version 41), and model 3 (versions 31 and 32)."""
    one = civitai.add_simple(1, 11, b"a" * 20_000, filename="one.safetensors")
    slow = civitai.add_simple(4, 41, b"s" * 400_000, filename="slow.safetensors")
    old = civitai.file(b"o" * 10_000, name="three-old.safetensors")
    new = civitai.file(b"n" * 10_000, name="three-new.safetensors")
    civitai.add_model(
        3, "Model 3", "LORA", [civitai.version(32, [new]), civitai.version(31, [old])]
    )
    return one, slow


def three_has_an_update(d) -> None:
    """Model 3's older version downloaded: its page's badge says an update is available."""
    with d.client() as c:
        wait_job(c, c.post("/api/download", json={"modelVersionId": 31}).json()["id"])


def send_one_from_the_context_menu(ext: ExtensionDriver, d, home: Path, one: FileSpec) -> None:
    """What the context menu calls, on a model page naming its version: that version is queued
    and lands; the tab's badge says downloaded."""
    page_one = "https://civitai.com/models/1/one?modelVersionId=11"
    _, tab_one = ext.tab(page_one)
    sent = ext.send_from_url(page_one, tab_one)
    assert isinstance(sent, dict) and "job" in sent, sent
    with d.client() as c:
        wait_job(c, sent["job"]["id"])
    assert_file_is(home / "data/models/lora/one.safetensors", one.sha256)
    ext.wait_badge(tab_one, "✓")  # downloaded


SLOW_PAGE = "https://civitai.com/models/4?modelVersionId=41"


def open_the_slow_page(ext: ExtensionDriver, civitai: FakeCivitai) -> tuple[Any, int]:
    """Model 4's page in a tab, its file slowed to ~20 s: long enough to be seen downloading."""
    civitai.fault("cdn", rate=20_000)
    shown, tab_id = ext.tab(SLOW_PAGE)
    ext.wait_badge(tab_id, "")  # nothing of it here yet
    return shown, tab_id


def the_badges_while_it_downloads(
    ext: ExtensionDriver, d, home: Path, slow: FileSpec, slow_tab: Any, tab_slow: int
) -> None:
    """Model 4, sent from the popup, is queued; model 3 has an update; then model 4 lands."""
    slow_tab.reload()  # the popup was opened on its URL, not from the tab: the tab asks again
    ext.wait_badge(tab_slow, "Q")  # queued (downloading)
    # A model page naming no version, of a model with an older version here: update available.
    _, tab_three = ext.tab("https://civitai.com/models/3/three")
    ext.wait_badge(tab_three, "new")
    with d.client() as c:
        job = c.get("/api/jobs?status=downloading").json()["jobs"][0]
        wait_job(c, job["id"], timeout=60)
    assert_file_is(home / "data/models/lora/slow.safetensors", slow.sha256)


def model_two(civitai: FakeCivitai) -> FileSpec:
    """Model 2, versions 22 (newest) and 21; its page names no version. 21's file."""
    a = civitai.file(b"x" * 15_000, name="two-a.safetensors")
    b = civitai.file(b"y" * 15_000, name="two-b.safetensors")
    civitai.add_model(2, "Model 2", "LORA", [civitai.version(22, [b]), civitai.version(21, [a])])
    return a


def only_the_older_two_lands(d, home: Path, a: FileSpec) -> None:
    """The one job queued is version 21, chosen; its file lands, 22's does not."""
    with d.client() as c:
        [job] = c.get("/api/jobs").json()["jobs"]
        assert job["modelVersionId"] == 21
        wait_job(c, job["id"])
    assert_file_is(home / "data/models/lora/two-a.safetensors", a.sha256)
    assert not (home / "data/models/lora/two-b.safetensors").exists()


def test_options_are_kept_and_the_daemon_takes_the_extension_only_once_its_origin_is_listed(
    civitai, daemon, extension, home
):
    civitai.add_simple(1, 11, b"a" * 20_000, filename="one.safetensors")
    d = daemon()
    options = configure(extension, d)
    result = options.locator("#result")
    expect(result).to_contain_text("Saved, but: The daemon at")
    expect(result).to_contain_text(f"{extension.origin}, in its allowed_origins")
    # What a page of the extension can send without a preflight reaches the daemon: refused.
    extension.worker.evaluate(
        """async (url) => { await fetch(url, {method: "POST", mode: "no-cors",
            body: JSON.stringify({modelVersionId: 11})}); }""",
        d.url("/api/download"),
    )
    refusal = f"refused POST /api/download: Requests from origin '{extension.origin}'"
    wait_for(lambda: refusal in log_text(home), 10, what="the daemon's refusal in its log")
    with d.client() as c:
        assert c.get("/api/jobs").json()["total"] == 0
        r = c.patch("/api/settings", json={"allowed_origins": [extension.origin]})
        assert r.status_code == 200, r.text
    options.click("#save")
    expect(result).to_have_text(re.compile(r"^Saved\. The daemon answers \(version [0-9.]+\)\.$"))
    shot(options, "extension-options")
    options.reload()  # kept in storage.local
    expect(options.locator("#daemon-url")).to_have_value(d.base_url)
    expect(options.locator("#api-key")).to_have_value(d.token)
    assert extension.strays == []
    d.stop()


def test_a_page_and_a_link_send_their_version_the_popup_shows_the_queue_and_the_badge_follows(
    civitai, daemon, extension, home
):
    one, slow = models_to_send(civitai)
    d = daemon(allowed_origins=[extension.origin])
    configure(extension, d)
    three_has_an_update(d)

    # The context menu on a model page naming its version queues that version.
    send_one_from_the_context_menu(extension, d, home, one)

    # The toolbar popup on a model page: one click sends it; the queue shows its progress.
    slow_tab, tab_slow = open_the_slow_page(extension, civitai)
    popup = extension.open(f"popup.html?url={quote(SLOW_PAGE, safe='')}")
    expect(popup.locator("#model-name")).to_have_text("Model 4 · LORA")
    expect(popup.locator("#model-version")).to_contain_text("Version: v41")
    expect(popup.locator("#chooser")).to_be_hidden()
    popup.click("#send")
    expect(popup.locator("#message")).to_contain_text("Queued slow.safetensors")
    row = popup.locator("li.job", has_text="slow.safetensors")
    expect(row.locator(".status")).to_have_text(
        re.compile(r"^downloading · ([1-9]|[1-9][0-9])%$"), timeout=20_000
    )
    value = float(row.locator("progress").get_attribute("value") or 0)
    assert 0 < value < 100
    expect(popup.locator("li.job", has_text="one.safetensors").locator(".status")).to_have_text(
        "completed · 100%"
    )
    shot_of(popup, "body", "extension-popup")
    the_badges_while_it_downloads(extension, d, home, slow, slow_tab, tab_slow)
    expect(row.locator(".status")).to_have_text("completed · 100%")
    assert extension.strays == []
    d.stop()


def test_a_page_naming_only_the_model_gets_the_chooser_of_its_versions(
    civitai, daemon, extension, home
):
    a = model_two(civitai)
    d = daemon(allowed_origins=[extension.origin])
    configure(extension, d)
    page_two = "https://civitai.com/models/2/two"
    _, tab_two = extension.tab(page_two)
    # The context menu on it opens the chooser in a tab.
    with extension.context.expect_page() as opened:
        result = extension.worker.evaluate(
            "([url, tabId]) => sendFromUrl(url, tabId)", [page_two, tab_two]
        )
    assert result == {"chooser": True}
    chooser_page = opened.value
    chooser_page.wait_for_load_state()
    assert chooser_page.url == f"{extension.origin}/popup.html?url={quote(page_two, safe='')}"
    chooser = chooser_page.locator("#chooser")
    expect(chooser).to_be_visible()
    expect(chooser_page.locator("#chooser-label")).to_have_text(
        "This page names only the model: choose a version"
    )
    expect(chooser.locator("option")).to_have_text(
        ["Choose a version…", "v22 (SDXL 1.0) · newest", "v21 (SDXL 1.0)"]
    )
    expect(chooser_page.locator("#send")).to_be_disabled()  # nothing is chosen for the person
    shot_of(chooser_page, "body", "extension-chooser")
    chooser.select_option("21")
    chooser_page.click("#send")
    expect(chooser_page.locator("#message")).to_contain_text("Queued two-a.safetensors")
    only_the_older_two_lands(d, home, a)
    assert extension.strays == []
    d.stop()


def test_a_civitai_red_or_green_link_is_queued_and_a_hub_file_asks_its_folder_first(
    civitai, hf, daemon, extension, home
):
    red = civitai.add_simple(6, 61, b"r" * 12_000, filename="red.safetensors")
    vae = b"v" * 30_000
    hf.add_repo("acme/vae", {"vae.safetensors": vae})
    d = daemon(allowed_origins=[extension.origin], hf_base_url=hf.base_url)
    configure(extension, d)
    # A link to a civitai.red version, from the context menu of the page it is on.
    _, tab = extension.tab("https://civitai.red/models")
    link = "https://civitai.red/models/6/red?modelVersionId=61"
    sent = extension.worker.evaluate("([url, tabId]) => sendFromUrl(url, tabId)", [link, tab])
    assert "job" in sent, sent
    with d.client() as c:
        wait_job(c, sent["job"]["id"])
    assert_file_is(home / "data/models/lora/red.safetensors", red.sha256)
    # civitai.green (Civitai's safe site) the same way.
    green = civitai.add_simple(16, 161, b"g" * 12_000, filename="green.safetensors")
    _, green_tab = extension.tab("https://civitai.green/models")
    link = "https://civitai.green/models/16/green?modelVersionId=161"
    sent = extension.worker.evaluate("([url, tabId]) => sendFromUrl(url, tabId)", [link, green_tab])
    assert "job" in sent, sent
    with d.client() as c:
        wait_job(c, sent["job"]["id"])
    assert_file_is(home / "data/models/lora/green.safetensors", green.sha256)
    manifest = json.loads((EXTENSION / "manifest.json").read_text())
    assert "https://civitai.green/*" in manifest["host_permissions"]

    # A Hub file: the chooser asks which folder (the daemon needs a model_type off Civitai).
    hub_file = "https://huggingface.co/acme/vae/blob/main/vae.safetensors"
    _, hub_tab = extension.tab(hub_file)
    with extension.context.expect_page() as opened:
        result = extension.worker.evaluate(
            "([url, tabId]) => sendFromUrl(url, tabId)", [hub_file, hub_tab]
        )
    assert result == {"chooser": True}
    chooser = opened.value
    expect(chooser.locator("#model-name")).to_have_text("A file on the Hugging Face Hub")
    expect(chooser.locator("#model-version")).to_have_text("/acme/vae/blob/main/vae.safetensors")
    expect(chooser.locator("#send")).to_be_disabled()
    chooser.locator("#folder").select_option("vae")
    chooser.click("#send")
    expect(chooser.locator("#message")).to_contain_text("Queued vae.safetensors")
    with d.client() as c:
        job = c.get("/api/jobs?q=vae.safetensors").json()["jobs"][0]
        assert job["model_type"] == "vae" and job["filename"] == "vae.safetensors"
        wait_job(c, job["id"])
    assert_file_is(home / "data/models/vae/vae.safetensors", hashlib.sha256(vae).hexdigest())
    assert extension.strays == []
    d.stop()
