"""Who may use the daemon, and from where (SPEC §7).

- Keys: `api_token` (admin: everything) and the optional `viewer_token` (read-only: every GET,
  the WebSocket, the GUI; 403 on any change). Sent as `Authorization: Bearer` or `X-API-Key`,
  compared in constant time.
- The GUI logs in with a key and gets an HttpOnly, SameSite=Strict cookie holding a session
  (sessions.py): an HS256 JWT that ends on Log out and when its key changes.
- Browser-borne attacks on a local daemon: the `Host` header must name this daemon (DNS
  rebinding), and state-changing requests from another origin or in form encodings are refused.
  A browser that opened the refused URL itself (a form post, a link) gets a page saying why.
- Other origins the user listed in `allowed_origins` (the browser extension's) may call the API
  with a key: their CORS preflights are answered and their answers carry CORS headers.
"""

from __future__ import annotations

import html
import ipaddress
import json
import logging
import re
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

import json_body
from config.settings import Settings
from errors import RequestError
from web.auth_limits import FailedAuths, too_many
from web.roles import Role, role_for_key

log = logging.getLogger("civitai.auth")

__all__ = [
    "COOKIE",
    "GuardMiddleware",
    "Role",
    "TooManyFailures",
    "exposure_warning",
    "key_role",
    "require_key",
    "role_of",
]

COOKIE = "civitai_session"
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
MAX_BODY = 1024 * 1024  # a JSON request
MAX_UPLOAD = 10 * 1024 * 1024  # /api/batch: a manifest of thousands of entries
UPLOADS = ("/api/batch", "/api/workflow")  # uploads: a manifest, a ComfyUI workflow


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from `Authorization: Bearer …` or `X-API-Key: …`."""
    header = headers.get("authorization", "") or ""
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return headers.get("x-api-key")


def client_address(conn: HTTPConnection) -> str:
    """The caller's address as uvicorn reports it (behind nginx: from X-Forwarded-For)."""
    return conn.client.host if conn.client else "an unknown address"


def key_role(conn: HTTPConnection, key: str) -> Role | None:
    """The role of a key presented by `conn`'s address, counting a wrong one; raises
    TooManyFailures, unchecked, while that address is limited (auth_limits)."""
    failures: FailedAuths = conn.app.state.failed_auths
    address = client_address(conn)
    if (seconds := failures.retry_after(address)) is not None:
        raise TooManyFailures(address, seconds)
    role = role_for_key(conn.app.state.settings, key)
    if role is None:
        failures.failed(address)
    return role


class TooManyFailures(HTTPException):
    """429: the caller's address has presented too many wrong keys."""

    def __init__(self, address: str, seconds: int) -> None:
        super().__init__(429, too_many(address, seconds), {"Retry-After": str(seconds)})
        self.seconds = seconds


def role_of(request: Request) -> Role | None:
    """The caller's role from a key header (limited per address), else the session cookie."""
    settings: Settings = request.app.state.settings
    key = presented_key(request.headers)
    if key is not None:
        return key_role(request, key)
    return request.app.state.sessions.role(settings, request.cookies.get(COOKIE))


async def require_key(request: Request) -> Role:
    """Dependency for /api/* (but /api/health): any key reads, only the admin key changes."""
    role = role_of(request)
    if role is None:
        raise HTTPException(
            status_code=401,
            detail="A valid API key is needed: send 'Authorization: Bearer <api_token>' or "
            "'X-API-Key: <api_token>' (api_token is in the daemon's config.json).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if request.method not in SAFE_METHODS and role is not Role.ADMIN:
        raise HTTPException(
            status_code=403, detail="The viewer key can only read; this needs the API key."
        )
    request.state.role = role
    return role


def require_admin(what: str, them: str = "it") -> Callable[[Request], None]:
    """A route dependency: the API key only; the viewer key gets 403 saying `what` it asked
    for is not for it."""

    def check(request: Request) -> None:
        if request.state.role is not Role.ADMIN:
            raise HTTPException(
                status_code=403,
                detail=f"{what} for the API key only; the viewer key cannot see {them}.",
            )

    return check


def trusted_hosts(settings: Settings) -> set[str]:
    names = {*LOOPBACK_NAMES, *(h.lower() for h in settings.trusted_hosts)}
    if settings.host not in ("0.0.0.0", "::", ""):
        names.add(settings.host.lower().strip("[]"))
    return names


# `name[:port]` or `[v6][:port]`, the port digits only: nothing else (no `@`, `/`, spaces).
HOST = re.compile(
    r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9_.-]+))(?::(?P<port>[0-9]{1,5}))?", re.I
)


def host_name(host_header: str) -> str | None:
    """`127.0.0.1:8137` → `127.0.0.1`; `[::1]:8137` → `::1`; None for anything malformed."""
    m = HOST.fullmatch(host_header.strip())
    if m is None:
        return None
    if m["v6"] is None:
        return m["name"].lower()
    try:
        return str(ipaddress.IPv6Address(m["v6"]))
    except ValueError:
        return None


def origin_ok(origin: str, host_header: str, allowed: set[str]) -> bool:
    """Same origin as the page (scheme-less comparison of host and port) and a trusted name."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    netloc = parts.netloc.lower()
    return netloc == host_header.strip().lower() and parts.hostname.strip("[]") in allowed


def origin_refusal(origin: str, host_header: str) -> str:
    """Why `origin` is refused; when only the port is missing from the Host, the likely cause:
    a reverse proxy that drops it (nginx's `$host`) in front of a port other than 443."""
    detail = f"Requests from origin {origin!r} are not allowed"
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return detail
    m = HOST.fullmatch(host_header.strip())
    host_has_port = m is not None and m["port"] is not None
    if port is not None and not host_has_port and parts.hostname == host_name(host_header):
        detail += (
            f": the page is on port {port}, but the request reached the daemon with Host "
            f"{host_header!r}, without it. A reverse proxy in between must pass the Host on as "
            "the browser sent it, port included (nginx: proxy_set_header Host $http_host;)"
        )
    return detail


class GuardMiddleware:
    """Refuse malformed or foreign Host headers everywhere, and cross-site or form-encoded
    changes; bound every request body."""

    def __init__(self, app: ASGIApp, current: Callable[[], Settings]) -> None:
        self.app = app
        self.current = current  # the settings in force now: trusted_hosts may change live
        self._seen: Settings | None = None
        self._allowed: set[str] = set()
        self._origins: frozenset[str] = frozenset()

    def _refresh(self) -> None:
        settings = self.current()
        if settings is not self._seen:
            self._seen, self._allowed = settings, trusted_hosts(settings)
            self._origins = frozenset(settings.allowed_origins)

    @property
    def allowed(self) -> set[str]:
        self._refresh()
        return self._allowed

    @property
    def origins(self) -> frozenset[str]:
        """The other origins the user listed (allowed_origins), as the browser writes them."""
        self._refresh()
        return self._origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        listed = origin is not None and origin.lower() in self.origins
        problem = self._host_problem(scope)
        if problem is None and listed and scope["type"] == "http":
            assert origin is not None
            if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
                return await _preflight(send, origin)
            send = _with_cors(send, origin)
            # Another origin is let in on its key alone: never on the GUI's session cookie.
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"cookie"]}
        if problem is None:
            check = self._form_problem if listed else self._origin_problem
            problem = check(scope, headers)
        if problem is None and scope["type"] == "http":
            limit = MAX_UPLOAD if scope["path"].endswith(UPLOADS) else MAX_BODY
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                problem = (413, f"The request body is too large (at most {limit} bytes)")
            else:
                # The workflow route reads its body's UTF-8 and nesting itself, a large one in
                # another process: that Python scan of 10 MB here held every request 150 ms.
                json_like = json_body.is_json(headers.get("content-type", "")) and not scope[
                    "path"
                ].endswith("/api/workflow")
                receive = _limited(receive, limit, json_like)
        if problem is None:
            return await self.app(scope, receive, send)
        log.warning("refused %s %s: %s", scope.get("method", "WS"), scope["path"], problem[1])
        navigation = headers.get("sec-fetch-mode") == "navigate" or (
            "sec-fetch-mode" not in headers and "text/html" in headers.get("accept", "")
        )
        await _refuse(scope, send, *problem, page=navigation)

    def _host_problem(self, scope: Scope) -> tuple[int, str] | None:
        """Exactly one Host, well-formed, naming this daemon (DNS rebinding)."""
        hosts = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"host"]
        if len(hosts) != 1:
            return 400, f"Send exactly one Host header, not {len(hosts)}"
        name = host_name(hosts[0])
        if name is None:
            return 400, f"Host {hosts[0]!r} is malformed: it must be name[:port] or [v6][:port]"
        if name not in self.allowed:
            return (
                400,
                f"Host {hosts[0]!r} is not this daemon; add it to trusted_hosts in config.json",
            )
        return None

    def _origin_problem(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """A change (or a WebSocket) from another site, or a JSON route fed a form encoding."""
        origin = headers.get("origin")
        method = scope.get("method", "GET")
        changing = scope["type"] == "websocket" or method not in SAFE_METHODS
        if changing and origin is not None and not origin_ok(origin, headers["host"], self.allowed):
            return 403, origin_refusal(origin, headers["host"])
        if changing and headers.get("sec-fetch-site") == "cross-site":
            return 403, "Cross-site requests are not allowed"
        return self._form_problem(scope, headers)

    def _form_problem(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """A JSON route fed a form encoding: what a cross-site <form> would send."""
        method = scope.get("method", "GET")
        if (
            scope["type"] == "http"
            and method not in SAFE_METHODS
            and _form_on_json_route(scope["path"], headers.get("content-type", ""))
        ):
            return 415, "This route takes JSON (Content-Type: application/json)"
        return None


CORS_HEADERS = "authorization, content-type, x-api-key"
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"


async def _preflight(send: Send, origin: str) -> None:
    """The answer to a listed origin's CORS preflight: which methods and headers it may send."""
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", CORS_METHODS.encode()),
        (b"access-control-allow-headers", CORS_HEADERS.encode()),
        (b"access-control-max-age", b"600"),
        (b"vary", b"Origin"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _with_cors(send: Send, origin: str) -> Send:
    """`send` with the CORS headers that let a listed origin read the answer (never cookies:
    the extension sends its key, Access-Control-Allow-Credentials is not given)."""

    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            extra = [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"vary", b"Origin"),
            ]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


REFUSAL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Refused · Civitai Daemon</title>
<style>body {{ font: 1rem/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto;
padding: 0 1rem; }} code {{ overflow-wrap: anywhere; }}</style></head>
<body><h1>The daemon refused this request</h1>
<p id="refusal">{detail}.</p>
<p><a href="{root}/gui">Back to the daemon's page</a></p></body></html>
"""


async def _refuse(scope: Scope, send: Send, status: int, detail: str, page: bool) -> None:
    """The one error shape, or for a browser's own navigation (`page`) the same sentence as a
    page; a WebSocket handshake gets it as an HTTP answer where the server can send one, else a
    close with 4403."""
    if page and scope["type"] == "http":
        root = html.escape(scope.get("root_path", "").rstrip("/"))
        body = REFUSAL_PAGE.format(detail=html.escape(detail), root=root).encode()
        kind = b"text/html; charset=utf-8"
    else:
        body = ('{"detail": ' + json.dumps(detail) + "}").encode()
        kind = b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    if page:
        csp = b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        headers.append((b"content-security-policy", csp))
    if scope["type"] == "http":
        prefix = "http.response"
    elif "websocket.http.response" in scope.get("extensions", {}):
        prefix = "websocket.http.response"
    else:
        await send({"type": "websocket.close", "code": 4403, "reason": detail[:120]})
        return
    await send({"type": f"{prefix}.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.body", "body": body})


def _limited(receive: Receive, limit: int, json_like: bool) -> Receive:
    """Count the body as it arrives (chunked ones have no Content-Length); in a JSON body,
    check it is UTF-8 and count the nesting too. Raised inside the route's body read, answered
    by the handler (an HTTPException, which FastAPI's own body parser passes on instead of
    making it a 400)."""
    seen = 0
    guard = json_body.BodyGuard() if json_like else None

    async def wrapped() -> dict:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                raise HTTPException(413, f"The request body is too large (at most {limit} bytes)")
            if guard is not None:
                try:
                    guard.feed(chunk, final=not message.get("more_body", False))
                except RequestError as exc:
                    raise HTTPException(exc.status_code, str(exc)) from None
        return message

    return wrapped


def _form_on_json_route(path: str, content_type: str) -> bool:
    """A JSON route called with a form encoding: what a cross-site <form> would send."""
    ct = json_body.media_type(content_type)
    if ct not in FORM_TYPES:
        return False
    if path.endswith((*UPLOADS, "/gui/login", "/gui/logout")):  # they take uploads or forms
        return ct == "text/plain"
    return "/api/" in path or path.endswith("/webhook")


def exposure_warning(settings: Settings) -> str | None:
    host = settings.host.strip("[]")
    if host in ("127.0.0.1", "::1", "localhost") or host.startswith("127."):
        return None
    return (
        f"host is {settings.host!r}: the API and GUI are reachable from other machines on your "
        f"network. Anyone with the API key can queue downloads and write to {settings.models_dir}. "
        f"Use a reverse proxy with TLS, or bind to 127.0.0.1."
    )
