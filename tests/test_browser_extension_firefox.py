"""The browser extension in integrations/browser (issue 25), the same unpacked folder as the
Chromium tests, run in Debian's Firefox ESR over WebDriver BiDi (tests/firefox.py): the options,
a model sent from the popup and from what the context menu calls, the queue with progress, the
files hashed on disk, and the badge. One Firefox per module; civitai.com pages are answered by
stand-ins before they leave, and any request that tries to leave the machine fails the test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import wait_for
from tests.firefox import Firefox, Tab
from tests.test_browser_extension import (
    EXTENSION,
    SLOW_PAGE,
    ExtensionDriver,
    model_two,
    models_to_send,
    only_the_older_two_lands,
    open_the_slow_page,
    send_one_from_the_context_menu,
    the_badges_while_it_downloads,
    three_has_an_update,
)
from tests.test_gui_deeplink import SITE_PAGE

GECKO_ID = "civitai-daemon@civitai-daemon.local"  # manifest.json's browser_specific_settings
UUID = "5e1c7a2b-3f4d-4e6a-8b9c-0d1e2f3a4b5c"  # fixed in the profile: the origin is known
ORIGIN = f"moz-extension://{UUID}"
SITES = ("civitai.com", "civitai.red", "huggingface.co")


@dataclass
class FirefoxExtension(ExtensionDriver):
    firefox: Firefox
    strays: list[str]  # requests the routing failed; the dead end's come from firefox.strays()
    helper: Tab  # an extension page (options.html), where the extension's APIs are called

    def open(self, page: str) -> Tab:
        """One of the extension's own pages in a tab of its own."""
        return self.firefox.tab(f"{ORIGIN}/{page}")

    def run(self, function: str, arg: object) -> Any:
        return self.helper.call(function, arg)

    def show(self, url: str) -> Tab:
        return self.firefox.tab(url)

    def send_from_url(self, url: str, tab_id: int) -> Any:
        """Called in the background page (Firefox's event page), as the context menu calls it."""
        return self.helper.call(
            "async (url, tabId) => (await browser.runtime.getBackgroundPage())"
            ".sendFromUrl(url, tabId)",
            url,
            tab_id,
        )

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

    send_one_from_the_context_menu(extension, d, home, one)

    # The popup on a model page: one click sends it; the queue shows its progress.
    slow_tab, tab_slow = open_the_slow_page(extension, civitai)
    popup = extension.open(f"popup.html?url={quote(SLOW_PAGE, safe='')}")
    popup.wait_text("#model-name", "Model 4 · LORA")
    assert "Version: v41" in (popup.text("#model-version") or "")
    assert popup.text("#chooser") is None  # hidden: the page names its version
    popup.click("#send")
    popup.wait_text("#message", lambda t: "Queued slow.safetensors" in t)
    # The queue is drawn again every second: the new job's row may come after the message.
    row_of_slow = (
        "() => [...document.querySelectorAll('li.job')]"
        ".find((li) => li.querySelector('.file').textContent === 'slow.safetensors')?.dataset.id"
    )
    row = f"li.job[data-id='{wait_for(lambda: popup.call(row_of_slow), 20, 0.1, 'its row')}']"
    popup.wait_text(f"{row} .status", re.compile(r"^downloading · ([1-9]|[1-9][0-9])%$").match)
    value = popup.call(f'() => document.querySelector("{row} progress").value')
    assert 0 < value < 100
    the_badges_while_it_downloads(extension, d, home, slow, slow_tab, tab_slow)
    popup.wait_text(f"{row} .status", "completed · 100%")
    # Firefox's event page asked again while it was queued, by itself: the tab was not touched.
    extension.wait_badge(tab_slow, "✓")
    assert extension.left_the_machine() == []
    d.stop()


def test_in_firefox_a_page_naming_only_the_model_opens_the_chooser_of_its_versions(
    civitai, daemon, extension, home
):
    a = model_two(civitai)
    d = daemon(allowed_origins=[ORIGIN])
    configure(extension, d).wait_text("#result", lambda t: t.startswith("Saved. The daemon"))
    page_two = "https://civitai.com/models/2/two"
    _, tab_two = extension.tab(page_two)
    # The context menu on it opens the chooser in a tab (the event page's tabs.create).
    assert extension.send_from_url(page_two, tab_two) == {"chooser": True}
    chooser = extension.firefox.opened(f"{ORIGIN}/popup.html?url={quote(page_two, safe='')}")
    chooser.wait_text("#chooser-label", "This page names only the model: choose a version")
    options = chooser.call(
        "() => [...document.querySelectorAll('#chooser option')].map((o) => o.textContent)"
    )
    assert options == ["Choose a version…", "v22 (SDXL 1.0) · newest", "v21 (SDXL 1.0)"]
    assert chooser.call("() => document.querySelector('#send').disabled")  # nothing chosen for you
    chooser.choose("#chooser", "21")
    chooser.click("#send")
    chooser.wait_text("#message", lambda t: "Queued two-a.safetensors" in t)
    only_the_older_two_lands(d, home, a)
    assert extension.left_the_machine() == []
    d.stop()
