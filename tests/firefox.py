"""Debian's Firefox ESR driven over WebDriver BiDi, the protocol it speaks natively (Playwright's
own Firefox is a patched build it would download): a fresh profile that reaches nothing beyond
loopback, a temporary add-on at a fixed moz-extension:// UUID, tabs, scripts run in them, and
civitai.com / huggingface.co pages answered by stand-ins before any request leaves."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.sync.client import ClientConnection, connect

from run_tests import FIREFOX_FIX

FIREFOX = os.environ.get("FIREFOX") or shutil.which("firefox-esr") or "firefox-esr"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")

# Firefox's own background traffic, off: every request that still tries to leave goes to the
# dead-end proxy (DeadEnd), which lists it for the test to fail on.
PREFS: dict[str, object] = {
    "app.update.auto": False,
    "app.update.enabled": False,
    "app.normandy.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.feeds.topsites": False,
    "browser.topsites.contile.enabled": False,
    "browser.search.update": False,
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "browser.ping-centre.telemetry": False,
    "captivedetect.canonicalURL": "",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    # Honoured only with MOZ_REMOTE_SETTINGS_DEVTOOLS=1 in the environment (a release build).
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "network.predictor.enabled": False,
    "network.prefetch-next": False,
    "network.trr.mode": 5,
    "network.proxy.type": 1,
    "network.proxy.share_proxy_settings": True,
    "network.proxy.no_proxies_on": "localhost, 127.0.0.1",
    "network.proxy.socks_remote_dns": True,
    "dom.push.connection.enabled": False,
    "geo.provider.network.url": "",
    "media.gmp-manager.url": "",
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-widevinecdm.enabled": False,
    "media.eme.enabled": False,
}


class DeadEnd:
    """An HTTP proxy that answers nothing: it notes each request's first line and hangs up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    line = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                except OSError:
                    line = "(a connection that sent nothing)"
                self.seen.append(line)

    def close(self) -> None:
        self.sock.close()


def write_prefs(profile: Path, proxy_port: int, uuids: dict[str, str], more: dict) -> None:
    """user.js: PREFS and `more`, the dead-end proxy for all but loopback, and each add-on's
    fixed UUID."""
    prefs = {
        **PREFS,
        **more,
        "network.proxy.http": "127.0.0.1",
        "network.proxy.http_port": proxy_port,
        "network.proxy.ssl": "127.0.0.1",
        "network.proxy.ssl_port": proxy_port,
        # moz-extension://<uuid> is the add-on's origin: fixed, so the daemon can list it.
        "extensions.webextensions.uuids": json.dumps(uuids),
    }
    lines = [f"user_pref({json.dumps(k)}, {json.dumps(v)});" for k, v in prefs.items()]
    (profile / "user.js").write_text("\n".join(lines) + "\n")


class BiDiError(AssertionError):
    """A command Firefox refused: its error and message."""


class Firefox:
    """One Firefox process and its BiDi session; events are handled on a thread of their own."""

    def __init__(self, profile: Path, uuids: dict[str, str], **prefs: object) -> None:
        assert Path(FIREFOX).is_file(), (
            f"The Firefox tests need Firefox ESR; {FIREFOX} is missing: {FIREFOX_FIX}, or point "
            "FIREFOX=/path/to/firefox at another Firefox."
        )
        profile.mkdir(parents=True, exist_ok=True)
        self.dead_end = DeadEnd()
        write_prefs(profile, self.dead_end.port, uuids, prefs)
        port = free_port()
        self.log = (profile.parent / "firefox.log").open("wb")
        # Firefox 153 navigates WebDriver only to http(s), file and blob URLs unless system access
        # is allowed: the add-on's own moz-extension:// pages need it.
        self.proc = subprocess.Popen(
            [FIREFOX, "--headless", "--no-remote", "--profile", str(profile)]
            + ["--remote-debugging-port", str(port), "--remote-allow-system-access"],
            env={**os.environ, "MOZ_REMOTE_SETTINGS_DEVTOOLS": "1"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.closing = contextlib.ExitStack()
        try:
            self.ws = self._connect(port)
        except BaseException:
            self.proc.kill()  # no session: nothing else would end it
            self.proc.wait()
            self.dead_end.close()
            self.log.close()
            raise
        self.next_id = 0
        self.pending: dict[int, Future] = {}
        self.lock = threading.Lock()
        self.handlers: dict[str, Callable[[dict], None]] = {}
        self.events = ThreadPoolExecutor(1)
        self.errors: list[str] = []  # handler failures: the test fails on them too
        threading.Thread(target=self._read, daemon=True).start()
        self.send("session.new", {"capabilities": {}})

    def _connect(self, port: int) -> ClientConnection:
        deadline = time.monotonic() + 60
        while True:
            try:
                url = f"ws://127.0.0.1:{port}/session"
                return self.closing.enter_context(connect(url, max_size=None))
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"Firefox gave no BiDi session on port {port} (exit {self.proc.poll()})"
                    ) from None
                time.sleep(0.2)

    def _read(self) -> None:
        for raw in self.ws:
            message = json.loads(raw)
            if "id" in message and message["id"] in self.pending:
                self.pending.pop(message["id"]).set_result(message)
            elif message.get("type") == "event" and message["method"] in self.handlers:
                self.events.submit(self._handle, message["method"], message["params"])

    def _handle(self, method: str, params: dict) -> None:
        try:
            self.handlers[method](params)
        except Exception as exc:  # noqa: BLE001 - a test's handler failing is a test failure
            self.errors.append(f"{method}: {exc!r}")

    def send(self, method: str, params: dict, timeout: float = 30) -> dict:
        """A BiDi command and its result; an error answer raises BiDiError."""
        future: Future = Future()
        with self.lock:
            self.next_id += 1
            self.pending[self.next_id] = future
            self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        answer = future.result(timeout)
        if answer.get("type") == "error":
            raise BiDiError(f"{method}: {answer['error']}: {answer.get('message')}")
        return answer["result"]

    def on(self, event: str, handler: Callable[[dict], None]) -> None:
        self.handlers[event] = handler
        self.send("session.subscribe", {"events": [event]})

    def install(self, path: Path, permanent: bool = False) -> str:
        """An add-on from an unpacked folder, as a temporary add-on, or from an .xpi, kept as
        Firefox keeps one a person installs from a file (webExtension.install); its id."""
        kind = "archivePath" if path.is_file() else "path"
        params: dict = {"extensionData": {"type": kind, "path": str(path)}}
        if permanent:
            params["moz:permanent"] = True
        return self.send("webExtension.install", params)["extension"]

    def route_sites(self, sites: tuple[str, ...], page: Callable[[str], str]) -> list[str]:
        """Requests to `sites` answered by `page(host)` before they leave; loopback and the
        add-on's own pages go on; anything else fails and is listed (with the dead end's)."""
        strays: list[str] = []

        def blocked(params: dict) -> None:
            request = params["request"]
            parts = urlsplit(request["url"])
            host = parts.hostname or ""
            if parts.scheme not in ("http", "https") or host in LOOPBACK:
                self.send("network.continueRequest", {"request": request["request"]})
            elif host.removeprefix("www.") in sites:
                self.send("network.provideResponse", page_response(request["request"], page(host)))
            else:
                strays.append(request["url"])
                self.send("network.failRequest", {"request": request["request"]})

        self.on("network.beforeRequestSent", blocked)
        self.send("network.addIntercept", {"phases": ["beforeRequestSent"]})
        return strays

    def strays(self) -> list[str]:
        """What tried to leave the machine through the dead-end proxy, and handler failures."""
        return [*self.dead_end.seen, *self.errors]

    def tab(self, url: str | None = None) -> Tab:
        context = self.send("browsingContext.create", {"type": "tab"})["context"]
        tab = Tab(self, context)
        if url:
            tab.goto(url)
        return tab

    def opened(self, url: str, timeout: float = 20) -> Tab:
        """The tab something else opened (the add-on's tabs.create), once it shows `url`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tree = self.send("browsingContext.getTree", {"maxDepth": 0})["contexts"]
            for context in tree:
                if context["url"] == url:
                    return Tab(self, context["context"])
            time.sleep(0.1)
        raise AssertionError(f"no tab showed {url}; tabs: {[c['url'] for c in tree]}")

    def close(self) -> None:
        try:
            self.send("browser.close", {}, timeout=10)
        except Exception:  # noqa: BLE001 - it may be gone already; the kill below ends it
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.closing.close()
        self.events.shutdown(wait=False)
        self.dead_end.close()
        self.log.close()


def page_response(request: str, html: str) -> dict:
    return {
        "request": request,
        "statusCode": 200,
        "reasonPhrase": "OK",
        "headers": [{"name": "Content-Type", "value": {"type": "string", "value": "text/html"}}],
        "body": {"type": "string", "value": html},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tab:
    """One tab (a top-level browsing context): navigate, run script, click, type, read."""

    def __init__(self, firefox: Firefox, context: str) -> None:
        self.firefox = firefox
        self.context = context

    def goto(self, url: str) -> None:
        self.firefox.send(
            "browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"}
        )

    def reload(self) -> None:
        self.firefox.send("browsingContext.reload", {"context": self.context, "wait": "complete"})

    def call(self, function: str, *args: Any) -> Any:
        """`function` (JS source) called in the page with JSON `args`; its JSON-able result."""
        answer = self.firefox.send(
            "script.callFunction",
            {
                "functionDeclaration": (
                    "async (...args) => JSON.stringify("
                    f"await ({function})(...args.map((a) => JSON.parse(a)))) ?? null"
                ),
                "arguments": [{"type": "string", "value": json.dumps(a)} for a in args],
                "target": {"context": self.context},
                "awaitPromise": True,
                "userActivation": True,
            },
        )
        if answer["type"] == "exception":
            details = answer["exceptionDetails"]
            raise AssertionError(f"script failed: {details.get('text')}")
        value = answer["result"].get("value")
        return None if value is None else json.loads(value)

    def text(self, selector: str) -> str | None:
        """The text of what `selector` finds, None when it is not shown."""
        return self.call(
            "(s) => { const e = document.querySelector(s);"
            " return e && e.checkVisibility() ? e.textContent : null; }",
            selector,
        )

    def wait_text(self, selector: str, want: Callable[[str], bool] | str, timeout: float = 20):
        """Wait until the shown text of `selector` is `want` (or `want(text)` holds)."""
        check = want if callable(want) else (lambda text: text == want)
        seen: list[str | None] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen.append(self.text(selector))
            if seen[-1] is not None and check(seen[-1]):
                return seen[-1]
            time.sleep(0.1)
        raise AssertionError(f"{selector} never showed what was wanted; last {seen[-3:]}")

    def choose(self, selector: str, value: str) -> None:
        """Pick `value` in a <select>, and tell the page (as a choice from its list does)."""
        self.call(
            "(s, v) => { const e = document.querySelector(s); e.focus(); e.value = v;"
            " e.dispatchEvent(new Event('input', {bubbles: true}));"
            " e.dispatchEvent(new Event('change', {bubbles: true})); }",
            selector,
            value,
        )

    def element(self, selector: str) -> dict:
        answer = self.firefox.send(
            "script.evaluate",
            {
                "expression": f"document.querySelector({json.dumps(selector)})",
                "target": {"context": self.context},
                "awaitPromise": False,
            },
        )
        node = answer.get("result", {})
        assert node.get("type") == "node", f"no {selector} on the page"
        return {"type": "element", "element": {"sharedId": node["sharedId"]}}

    def click(self, selector: str) -> None:
        """A mouse click in the middle of the element, as a person would."""
        self._actions(
            "pointer",
            [
                {"type": "pointerMove", "x": 0, "y": 0, "origin": self.element(selector)},
                {"type": "pointerDown", "button": 0},
                {"type": "pointerUp", "button": 0},
            ],
        )

    def type(self, selector: str, text: str) -> None:
        """Click into a field, select what it holds and type `text` over it."""
        self.click(selector)
        self.call("(s) => document.querySelector(s).select()", selector)
        keys = []
        for ch in text:
            keys += [{"type": "keyDown", "value": ch}, {"type": "keyUp", "value": ch}]
        self._actions("key", keys)

    def _actions(self, kind: str, actions: list[dict]) -> None:
        source: dict = {"type": kind, "id": kind, "actions": actions}
        if kind == "pointer":
            source["parameters"] = {"pointerType": "mouse"}
        self.firefox.send("input.performActions", {"context": self.context, "actions": [source]})
        self.firefox.send("input.releaseActions", {"context": self.context})

    def close(self) -> None:
        self.firefox.send("browsingContext.close", {"context": self.context})
