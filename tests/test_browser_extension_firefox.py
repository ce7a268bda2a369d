"""The browser extension in integrations/browser (issue 25), the same unpacked folder as the
Chromium tests, run in Debian's Firefox ESR over WebDriver BiDi (tests/firefox.py): the options,
a model sent from the popup and from what the context menu calls, the queue with progress, the
files hashed on disk, and the badge. One Firefox per module; civitai.com pages are answered by
stand-ins before they leave, and any request that tries to leave the machine fails the test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from tests.conftest import assert_file_is, wait_for, wait_job
from tests.firefox import Firefox, Tab
from tests.test_browser_extension import EXTENSION, models_to_send, three_has_an_update
from tests.test_gui_deeplink import SITE_PAGE

GECKO_ID = "civitai-daemon@civitai-daemon.local"  # manifest.json's browser_specific_settings
UUID = "5e1c7a2b-3f4d-4e6a-8b9c-0d1e2f3a4b5c"  # fixed in the profile: the origin is known
ORIGIN = f"moz-extension://{UUID}"
SITES = ("civitai.com", "civitai.red", "huggingface.co")


@dataclass
class FirefoxExtension:
    firefox: Firefox
    strays: list[str]  # requests the routing failed; the dead end's come from firefox.strays()
    helper: Tab  # an extension page (options.html), where the extension's APIs are called

    def open(self, page: str) -> Tab:
        """One of the extension's own pages in a tab of its own."""
        return self.firefox.tab(f"{ORIGIN}/{page}")

    def tab(self, url: str) -> tuple[Tab, int]:
        """A tab showing `url` (a stand-in) and its id as the extension knows it."""
        shown = self.firefox.tab(url)
        tab_id = self.helper.call(
            "async (url) => (await browser.tabs.query({})).find((t) => t.url === url)?.id", url
        )
        assert isinstance(tab_id, int), f"the extension sees no tab at {url}"
        return shown, tab_id

    def background(self, function: str, *args: object) -> object:
        """`function(bg, ...args)` with bg the extension's background page (Firefox's event page),
        as the toolbar and the context menu call into it."""
        return self.helper.call(
            f"async (...args) => ({function})(await browser.runtime.getBackgroundPage(), ...args)",
            *args,
        )

    def badge(self, tab_id: int) -> str:
        return self.helper.call("(tabId) => browser.action.getBadgeText({tabId})", tab_id)

    def wait_badge(self, tab_id: int, text: str) -> None:
        """The badge the background set by itself becomes `text`."""
        seen: list[str] = []

        def check() -> bool:
            seen.append(self.badge(tab_id))
            return seen[-1] == text

        try:
            wait_for(check, 20, 0.2, f"badge {text!r}")
        except AssertionError:
            raise AssertionError(f"badge never {text!r}; seen {sorted(set(seen))}") from None

    def left_the_machine(self) -> list[str]:
        return [*self.strays, *self.firefox.strays()]


@pytest.fixture(scope="module")
def extension(tmp_path_factory) -> Iterator[FirefoxExtension]:
    """Firefox ESR with the extension installed as a temporary add-on at a fixed UUID."""
    firefox = Firefox(tmp_path_factory.mktemp("firefox") / "profile", {GECKO_ID: UUID})
    try:
        strays = firefox.route_sites(
            SITES, lambda host: SITE_PAGE.format(title=f"A model page on {host}")
        )
        assert firefox.install(EXTENSION) == GECKO_ID
        yield FirefoxExtension(firefox, strays, firefox.tab(f"{ORIGIN}/options.html"))
    finally:
        firefox.close()


def has_its_sites(page: Tab) -> bool:
    """The extension may see these sites' tabs (their address: the badge needs it)."""
    origins = [f"https://{site}/*" for site in SITES]
    return page.call("(origins) => browser.permissions.contains({origins})", origins)


def configure(ext: FirefoxExtension, d) -> Tab:
    """The options page, filled in and saved as a person would."""
    options = ext.open("options.html")
    assert options.text("#origin") == ORIGIN
    options.type("#daemon-url", d.base_url)
    options.type("#api-key", d.token)
    options.click("#save")
    return options


def test_in_firefox_the_options_are_kept_and_the_daemon_takes_the_extension_once_listed(
    civitai, daemon, extension
):
    d = daemon()
    options = configure(extension, d)
    options.wait_text("#result", lambda t: t.startswith("Saved, but: The daemon at"))
    assert f"{ORIGIN}, in its allowed_origins" in (options.text("#result") or "")
    with d.client() as c:
        r = c.patch("/api/settings", json={"allowed_origins": [ORIGIN]})
        assert r.status_code == 200, r.text
    options.click("#save")
    options.wait_text(
        "#result", re.compile(r"^Saved\. The daemon answers \(version [0-9.]+\)\.$").match
    )
    options.reload()  # kept in storage.local
    assert options.call("() => document.querySelector('#daemon-url').value") == d.base_url
    assert options.call("() => document.querySelector('#api-key').value") == d.token
    # The temporary add-on got its sites at install: the badge needs a tab's address.
    assert has_its_sites(options)
    options.close()
    assert extension.left_the_machine() == []
    d.stop()


def test_in_firefox_a_page_is_sent_the_popup_shows_the_queue_and_the_badge_follows(
    civitai, daemon, extension, home
):
    one, slow = models_to_send(civitai)
    d = daemon(allowed_origins=[ORIGIN])
    configure(extension, d).wait_text("#result", lambda t: t.startswith("Saved. The daemon"))
    three_has_an_update(d)

    # What the context menu calls, on a model page naming its version: that version is queued.
    page_one = "https://civitai.com/models/1/one?modelVersionId=11"
    _, tab_one = extension.tab(page_one)
    sent = extension.background("(bg, url, tabId) => bg.sendFromUrl(url, tabId)", page_one, tab_one)
    assert isinstance(sent, dict) and "job" in sent, sent
    with d.client() as c:
        wait_job(c, sent["job"]["id"])
    assert_file_is(home / "data/models/lora/one.safetensors", one.sha256)
    extension.wait_badge(tab_one, "✓")  # downloaded

    # The popup on a model page: one click sends it; the queue shows its progress.
    civitai.fault("cdn", rate=20_000)  # ~20 s: long enough to be seen downloading
    page_slow = "https://civitai.com/models/4?modelVersionId=41"
    slow_tab, tab_slow = extension.tab(page_slow)
    extension.wait_badge(tab_slow, "")  # nothing of it here yet
    popup = extension.open(f"popup.html?url={quote(page_slow, safe='')}")
    popup.wait_text("#model-name", "Model 4 · LORA")
    assert "Version: v41" in (popup.text("#model-version") or "")
    assert popup.text("#chooser") is None  # hidden: the page names its version
    popup.click("#send")
    popup.wait_text("#message", lambda t: "Queued slow.safetensors" in t)
    row = "li.job[data-id='{}']".format(
        popup.call("() => document.querySelector('li.job')?.dataset.id")
    )
    assert popup.text(f"{row} .file") == "slow.safetensors"
    popup.wait_text(f"{row} .status", re.compile(r"^downloading · ([1-9]|[1-9][0-9])%$").match)
    value = popup.call(f'() => document.querySelector("{row} progress").value')
    assert 0 < value < 100
    slow_tab.reload()  # the popup was opened on its URL, not from the tab: the tab asks again
    extension.wait_badge(tab_slow, "Q")  # queued (downloading)

    # A model page naming no version, of a model with an older version here: update available.
    _, tab_three = extension.tab("https://civitai.com/models/3/three")
    extension.wait_badge(tab_three, "new")
    with d.client() as c:
        job = c.get("/api/jobs?status=downloading").json()["jobs"][0]
        wait_job(c, job["id"], timeout=60)
    assert_file_is(home / "data/models/lora/slow.safetensors", slow.sha256)
    popup.wait_text(f"{row} .status", "completed · 100%")
    # Firefox's event page asked again while it was queued, by itself: the tab was not touched.
    extension.wait_badge(tab_slow, "✓")
    assert extension.left_the_machine() == []
    d.stop()
