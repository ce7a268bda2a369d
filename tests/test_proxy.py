"""Behind a real nginx with TLS on a port other than 443, configured with the README's blocks as
written (tests/nginx.py): the browser logs in, loads its assets, gets the live feed over wss and
watches a download advance; the API takes its key; a foreign Origin is still refused."""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from playwright.sync_api import Page, expect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.browser import ARGS, CHROMIUM
from tests.conftest import assert_file_is, wait_for, wait_job
from tests.nginx import SERVER_NAME, Nginx, readme_block

# The README's two blocks: at the root of the domain, and under a sub-path.
ROOTS = {"/": "", "/civitai/": "/civitai"}
BOOTSTRAP_PRIMARY = "rgb(13, 110, 253)"  # .btn-primary's background in Bootstrap 5.3


@pytest.fixture(scope="module")
def proxy_browser(browser):
    """Chromium that resolves the TLS site's name to this machine (a launch flag: its own),
    started by the worker's one Playwright: a second sync_playwright() in a worker that has run
    a GUI test fails ("Playwright Sync API inside the asyncio loop")."""
    b = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=[*ARGS, f"--host-resolver-rules=MAP {SERVER_NAME} 127.0.0.1"],
        headless=True,
    )
    yield b
    b.close()


@pytest.fixture
def page(proxy_browser) -> Iterator[Page]:
    context = proxy_browser.new_context(
        ignore_https_errors=True, viewport={"width": 1280, "height": 860}
    )
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.console_errors = []  # type: ignore[attr-defined]
    pg.on(
        "console",
        lambda m: m.type == "error" and pg.console_errors.append(f"{m.text} ({m.location['url']})"),
    )
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))
    pg.on("response", lambda r: r.status >= 400 and pg.console_errors.append(f"{r.status} {r.url}"))
    yield pg
    context.close()


class Proxied:
    """The daemon behind nginx, reached at https://models.example.net:<port><root>."""

    def __init__(self, daemon, nginx: Nginx, root: str) -> None:
        self.daemon, self.nginx, self.root = daemon, nginx, root

    def url(self, path: str) -> str:
        return self.nginx.url(self.root + path)

    @property
    def origin(self) -> str:
        return f"https://{SERVER_NAME}:{self.nginx.port}"

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        """Over TLS to nginx, the certificate checked against the README's server name."""
        verify = ssl.create_default_context(cafile=str(self.nginx.cert))
        with httpx.Client(verify=verify, timeout=20) as c:
            headers = {"Host": f"{SERVER_NAME}:{self.nginx.port}", **kw.pop("headers", {})}
            url = f"https://127.0.0.1:{self.nginx.port}{self.root}{path}"
            req = c.build_request(
                method, url, headers=headers, extensions={"sni_hostname": SERVER_NAME}, **kw
            )
            return c.send(req)

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.daemon.token}", **kw.pop("headers", {})}
        return self.request(method, path, headers=headers, **kw)


@contextmanager
def behind_nginx(daemon, location: str, block: str) -> Iterator[Proxied]:
    root = ROOTS[location]
    d = daemon(trusted_hosts=[SERVER_NAME], root_path=root)
    with Nginx(block, upstream=d.port) as n:
        yield Proxied(d, n, root)
    d.stop()


@pytest.fixture(params=list(ROOTS), ids=["root", "sub-path"])
def proxied(request, civitai, daemon) -> Iterator[Proxied]:
    with behind_nginx(daemon, request.param, readme_block(request.param)) as p:
        yield p


def test_gui_through_nginx_logs_in_loads_bootstrap_and_shows_live_progress(
    proxied, civitai, page, home
):
    content = os.urandom(6_000_000)
    f = civitai.add_simple(4384, 128713, content, filename="dreamshaper_8.safetensors")
    civitai.default_rate = 1_000_000  # about 6 s: long enough to watch the bar move

    page.goto(proxied.url("/gui"))
    button = page.locator("button[type=submit]")
    assert button.evaluate("b => getComputedStyle(b).backgroundColor") == BOOTSTRAP_PRIMARY
    assert page.evaluate("typeof window.bootstrap.Tab") == "function"
    page.fill("#key", proxied.daemon.token)
    button.click()
    expect(page.locator("#live")).to_be_visible()  # the feed's WebSocket is open (wss)
    expect(page.locator("#role")).to_have_text("admin")
    assert page.url == proxied.url("/gui")
    (cookie,) = page.context.cookies()
    assert (cookie["secure"], cookie["path"]) == (True, proxied.root or "/")  # nginx said https

    page.click("#nav-add")
    expect(page.locator("#tab-add")).to_have_css("opacity", "1")
    page.fill("#lookup-input", "https://civitai.com/models/4384?modelVersionId=128713")
    page.click("#lookup-button")
    expect(page.locator("#lookup-name")).to_have_text("Model 4384")
    page.click("#add-button")
    page.click("#nav-queue")  # Add stays on its tab after queueing
    row = page.locator("tr.job-row").first
    bar = row.locator(".progress")

    def now() -> int:
        return int(bar.get_attribute("aria-valuenow") or 0)

    first = wait_for(lambda: 0 < now() < 100 and now(), 30, what="progress above 0%")
    wait_for(lambda: first < now() < 100, 30, what=f"progress past {first}% before the end")
    expect(row.locator(".job-status")).to_have_text("completed", timeout=30_000)
    expect(row.locator(".progress-bar")).to_have_text("100%")
    # Measured once the row is laid out (a row redrawn by the feed has no width for a frame).
    wait_for(lambda: bar.evaluate("p => p.clientWidth") > 0, 10, what="the bar's track laid out")
    full = bar.evaluate("p => p.firstElementChild.offsetWidth / p.clientWidth")
    assert full > 0.95, f"the bar is drawn {full:.0%} wide at 100%"  # its width applied (CSP)
    assert_file_is(home / "data/models/lora/dreamshaper_8.safetensors", f.sha256)
    assert page.console_errors == [], page.console_errors
    assert "[error]" not in proxied.nginx.errors(), proxied.nginx.errors()
    assert f'"GET {proxied.root}/gui HTTP/2.0" 200' in proxied.nginx.access_log()  # HTTP/2
    page.goto("about:blank")  # nginx logs the feed's socket when it closes
    feed = f'"GET {proxied.root}/ws/downloads HTTP/1.1" 101'
    wait_for(lambda: feed in proxied.nginx.access_log(), 20, what="the feed in nginx's log")


def test_api_through_nginx_needs_the_key_and_queues_a_download(proxied, civitai, home):
    f = civitai.add_simple(1, 10, os.urandom(300_000), filename="api.safetensors")
    assert proxied.request("GET", "/api/health").status_code == 200
    refused = proxied.request("GET", "/api/jobs")
    assert refused.status_code == 401
    assert refused.json()["detail"].startswith("A valid API key is needed")
    r = proxied.api("POST", "/api/download", json={"modelVersionId": 10, "model_type": "lora"})
    assert r.status_code == 202, r.text
    with proxied.daemon.client() as c:
        wait_job(c, r.json()["id"])
    job = proxied.api("GET", f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "completed"
    assert_file_is(home / "data/models/lora/api.safetensors", f.sha256)


def ws_status(proxied: Proxied, origin: str) -> int | str:
    """Open the feed through nginx (wss) with this Origin: 'open', or the refusal's status."""
    ctx = ssl.create_default_context(cafile=str(proxied.nginx.cert))
    uri = f"{proxied.origin.replace('https', 'wss')}{proxied.root}/ws/downloads"
    uri += f"?token={proxied.daemon.token}"
    sock = socket.create_connection(("127.0.0.1", proxied.nginx.port), timeout=20)
    try:
        with connect(
            uri,
            sock=sock,
            ssl=ctx,
            server_hostname=SERVER_NAME,
            origin=origin,
            open_timeout=20,
        ) as ws:
            message = json.loads(ws.recv(timeout=20))
            return "open" if message["type"] == "snapshot" else message["type"]
    except InvalidStatus as exc:
        return exc.response.status_code


def test_through_nginx_a_foreign_origin_is_still_refused(proxied):
    ours = proxied.origin
    for foreign in ("https://evil.example", f"https://{SERVER_NAME}:1", f"http://{SERVER_NAME}"):
        r = proxied.api("POST", "/api/download", json={}, headers={"Origin": foreign})
        assert r.status_code == 403, (foreign, r.text)
        assert r.json() == {"detail": f"Requests from origin {foreign!r} are not allowed"}
        assert ws_status(proxied, foreign) == 403
    assert ws_status(proxied, ours) == "open"
    ok = proxied.api("POST", "/api/download", json={}, headers={"Origin": ours})
    assert ok.status_code == 422  # past the guard, refused for its empty body


def test_a_login_posted_from_another_site_gets_a_page_that_says_why(proxied, page):
    login = proxied.url("/gui/login")
    attacker = (
        f'<form method="post" action="{login}"><input name="key" value="{proxied.daemon.token}">'
        '<button id="go">go</button></form>'
    )
    page.route(
        "http://attacker.test/", lambda r: r.fulfill(body=attacker, content_type="text/html")
    )
    page.goto("http://attacker.test/")
    with page.expect_response(login) as answer:
        page.click("#go")
    assert answer.value.status == 403
    assert answer.value.headers["content-type"] == "text/html; charset=utf-8"
    expect(page.locator("h1")).to_have_text("The daemon refused this request")
    expect(page.locator("#refusal")).to_have_text(
        "Requests from origin 'http://attacker.test' are not allowed."
    )
    expect(page.get_by_role("link")).to_have_attribute("href", f"{proxied.root}/gui")
    assert page.context.cookies() == []  # no session was made


def test_behind_nginx_that_drops_the_port_the_refused_login_says_what_to_change(
    civitai, daemon, page
):
    """The README's old `proxy_set_header Host $host;` on a port other than 443."""
    old = readme_block("/").replace("Host $http_host;", "Host $host;")
    with behind_nginx(daemon, "/", old) as proxied:
        page.goto(proxied.url("/gui"))
        page.fill("#key", proxied.daemon.token)
        page.click("button[type=submit]")
        expect(page.locator("#refusal")).to_have_text(
            f"Requests from origin '{proxied.origin}' are not allowed: the page is on port "
            f"{proxied.nginx.port}, but the request reached the daemon with Host '{SERVER_NAME}', "
            "without it. A reverse proxy in between must pass the Host on as the browser sent "
            "it, port included (nginx: proxy_set_header Host $http_host;)."
        )
        r = proxied.api("POST", "/api/download", json={}, headers={"Origin": proxied.origin})
        assert r.status_code == 403  # a script gets the same sentence in the one error shape
        assert r.json()["detail"].endswith("(nginx: proxy_set_header Host $http_host;)")
