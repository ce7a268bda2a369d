"""The deep link /gui/add?url=… and the Add tab's bookmarklet (issue 25), in Chromium: the link
survives the login form, the model is looked up and one click queues it; the bookmarklet run on
a (routed) civitai.com page lands on the deep link with that page's URL. Nothing reaches the
internet: every request that is neither loopback nor a routed page fails the test."""

from __future__ import annotations

import re
import secrets
from urllib.parse import quote, unquote, urlsplit

from playwright.sync_api import BrowserContext, Page, expect

from tests.conftest import assert_file_is
from tests.test_gui import ARTIFACTS, log_in, shot
from tests.test_gui_add import watch

SITE_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'self'; script-src 'none'">
</head><body><h1>{title}</h1></body></html>"""


SITES = ("civitai.com", "civitai.red", "civitai.green", "huggingface.co")


def offline(context: BrowserContext) -> list[str]:
    """Route civitai.com, .red, .green and huggingface.co to a stand-in page; let loopback (and the
    extension's own chrome-extension:// pages) through; every other request is aborted and listed
    (the test asserts the list is empty)."""
    strays: list[str] = []

    def handle(route) -> None:
        parts = urlsplit(route.request.url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or host in ("127.0.0.1", "localhost", "::1"):
            route.continue_()
        elif host.removeprefix("www.") in (
            "civitai.com",
            "civitai.red",
            "civitai.green",
            "huggingface.co",
        ):
            route.fulfill(
                status=200,
                content_type="text/html",
                body=SITE_PAGE.format(title=f"A model page on {host}"),
            )
        else:
            strays.append(route.request.url)
            route.abort()

    context.route("**/*", handle)
    return strays


def two_versions(civitai):
    """Model 1 with versions 11 (older) and 12 (newest): the link names the older one."""
    old = civitai.file(b"o" * 25_000, name="older.safetensors")
    new = civitai.file(b"n" * 25_000, name="newer.safetensors")
    civitai.add_model(
        1, "Model 1", "LORA", [civitai.version(12, [new]), civitai.version(11, [old])]
    )
    return old


def queue_from_the_add_tab(page: Page, d, home, old) -> None:
    """The Add tab shows the linked version looked up; one click queues it; the file lands."""
    expect(page.locator("#tab-add")).to_have_class("tab-pane fade active show")
    expect(page.locator("#lookup-name")).to_have_text("Model 1")
    expect(page.locator("#add-version")).to_have_value("11")
    expect(page).to_have_url(d.url("/gui"))  # a reload does not look it up again
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#tab-add .col-lg-7").screenshot(path=str(ARTIFACTS / "deeplink-add.png"))
    page.click("#add-button")
    expect(page.locator("tr.job-row .job-status").first).to_have_text("completed", timeout=20_000)
    assert_file_is(home / "data/models/lora/older.safetensors", old.sha256)
    with d.client() as c:
        assert c.get("/api/jobs").json()["total"] == 1


def test_the_deep_link_survives_the_login_and_one_click_queues_the_linked_version(
    civitai, daemon, page, home
):
    old = two_versions(civitai)
    strays = offline(page.context)
    problems = watch(page)
    d = daemon()
    link = "https://civitai.com/models/1/a-lora?modelVersionId=11"
    page.goto(d.url(f"/gui/add?url={quote(link, safe='')}"))
    expect(page.locator("#login-add")).to_contain_text(link)
    page.fill("#key", "wrong")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("not right")
    expect(page.locator("#login-add")).to_contain_text(link)  # a wrong key keeps the link
    shot(page, "deeplink-login")
    page.fill("#key", d.token)
    page.click("button[type=submit]")
    queue_from_the_add_tab(page, d, home, old)
    assert problems == [] and strays == [], (problems, strays)
    d.stop()


def test_the_deep_link_with_a_session_and_the_bookmarklet_from_a_civitai_page(
    civitai, daemon, page, home
):
    old = two_versions(civitai)
    strays = offline(page.context)
    problems = watch(page)
    d = daemon()
    log_in(page, d)
    page.click("#nav-add")
    bookmarklet = page.locator("#bookmarklet")
    expect(bookmarklet).to_have_attribute("href", re.compile("^javascript:"))
    code = bookmarklet.get_attribute("href")
    assert code and code.startswith("javascript:") and d.base_url in code
    shot(page, "deeplink-bookmarklet")
    # Clicked in the GUI it only says what it is for (the GUI's CSP would refuse it).
    bookmarklet.click()
    expect(page.locator(".toast", has_text="bookmarks bar")).to_be_visible()

    site = "https://civitai.com/models/1/a-lora?modelVersionId=11"
    page.goto(site)
    expect(page.locator("h1")).to_have_text("A model page on civitai.com")
    # What the bookmarks bar does with it: run its code on the page shown.
    with page.expect_request(lambda r: r.is_navigation_request()) as navigation:
        page.evaluate(unquote(code.removeprefix("javascript:")))
    assert navigation.value.url == d.url(f"/gui/add?url={quote(site, safe='')}")
    queue_from_the_add_tab(page, d, home, old)
    assert problems == [] and strays == [], (problems, strays)
    d.stop()


def test_the_bookmarklet_without_a_session_reloads_once_then_asks_for_the_key(
    civitai, daemon, page, home
):
    old = two_versions(civitai)
    strays = offline(page.context)
    d = daemon()
    site = "https://civitai.red/models/1?modelVersionId=11"
    page.goto(site)
    loads: list[str] = []
    page.on("request", lambda r: loads.append(r.url) if r.is_navigation_request() else None)
    code = f"location.href={d.base_url + '/gui/add?url='!r}+encodeURIComponent(location.href)"
    page.evaluate(code)
    expect(page.locator("#login-add")).to_contain_text(site)
    # The one reload (for a SameSite cookie there is none of) came back to the form: no loop.
    page.fill("#key", d.token)
    page.click("button[type=submit]")
    queue_from_the_add_tab(page, d, home, old)
    link = d.url(f"/gui/add?url={quote(site, safe='')}")
    assert loads.count(link) == 3, loads  # the visit, its reload, and the way back after login
    assert strays == [], strays
    d.stop()


def test_the_deep_link_opened_with_the_viewer_key_says_it_needs_the_api_key(civitai, daemon, page):
    two_versions(civitai)
    strays = offline(page.context)
    viewer = secrets.token_urlsafe(32)
    d = daemon(viewer_token=viewer)
    page.goto(d.url("/gui/add?url=1"))
    page.fill("#key", viewer)
    page.click("button[type=submit]")
    expect(page.locator(".toast", has_text="needs the API key")).to_be_visible()
    expect(page.locator("#nav-add")).to_be_hidden()
    with d.client() as c:
        assert c.get("/api/jobs").json()["total"] == 0
    assert strays == []
    d.stop()
