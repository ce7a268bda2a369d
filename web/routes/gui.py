"""The browser GUI at /gui: login, logout, the page, and its static files (SPEC §6, §7)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bootstrap_wrapper
from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from web.auth import COOKIE, TooManyFailures, key_role
from web.roles import Role
from web.sessions import SESSION_SECONDS

ROOT = Path(__file__).resolve().parent.parent.parent
router = APIRouter(tags=["gui"], include_in_schema=False)


@functools.cache
def templates() -> Any:
    """The page templates, loaded at the first page: jinja2's imports (0.1 s) are not paid by a
    daemon driven by its API alone."""
    from fastapi.templating import Jinja2Templates

    return Jinja2Templates(directory=ROOT / "templates")


def mount_static(app: FastAPI) -> None:
    """Our own files and Bootstrap, served by the daemon: the GUI needs no CDN."""
    app.mount(
        "/static/bootstrap",
        StaticFiles(directory=bootstrap_wrapper.get_bootstrap_dir()),
        name="bootstrap",
    )
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")


def root_of(request: Request) -> str:
    """The sub-path a reverse proxy serves the daemon under ('' when there is none)."""
    return request.scope.get("root_path", "").rstrip("/")


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context = {"version": request.app.version, "root": root_of(request), **context}
    response = templates().TemplateResponse(request, name, context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src * data:; connect-src 'self' ws: wss:; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    return response


@router.get("/", include_in_schema=False)
async def root(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{root_of(request)}/gui", status_code=307)


@router.get("/gui", response_class=HTMLResponse)
async def gui(request: Request) -> Response:
    role = request.app.state.sessions.role(request.app.state.settings, request.cookies.get(COOKIE))
    if role is None:
        return _page(request, "login.html")
    return _page(request, "gui.html", role=role.value)


MAX_ADD = 4096  # a deep link's url: a page URL or an AIR, never a body


@router.get("/gui/add", response_class=HTMLResponse)
async def gui_add(request: Request, url: str = Query("", max_length=MAX_ADD)) -> Response:
    """The deep link (issue 25): the Add tab with `url` looked up; without a session the login
    form first, which carries the link through."""
    role = request.app.state.sessions.role(request.app.state.settings, request.cookies.get(COOKIE))
    if role is None:
        # Arriving from another site (the bookmarklet, the extension), the browser withholds
        # the SameSite=Strict cookie: the page reloads itself once, from here, to send it.
        again = request.headers.get("sec-fetch-site") == "cross-site"
        return _page(request, "login.html", add=url, again=again)
    return _page(request, "gui.html", role=role.value, add_url=url)


def _after_login(request: Request, add: str) -> str:
    """Where a login goes: the GUI, or back to the deep link it came from (always our own
    /gui/add: the link's url is a query value, never a place to go)."""
    if add:
        return f"{root_of(request)}/gui/add?url={quote(add, safe='')}"
    return f"{root_of(request)}/gui"


@router.post("/gui/login", response_class=HTMLResponse)
async def login(
    request: Request, key: str = Form(""), add: str = Form("", max_length=MAX_ADD)
) -> Response:
    """Takes the API key (or the viewer key) and sets the session cookie."""
    key = key.strip()
    try:
        role = key_role(request, key)
    except TooManyFailures as exc:
        page = _page(request, "login.html", status=429, error=f"{exc.detail}.", add=add)
        page.headers["Retry-After"] = str(exc.seconds)
        return page
    if role is None:
        # 200, the form again with the sentence (as form frameworks answer): a 401 would be
        # logged by the browser as a failed resource on the page a person is looking at.
        return _page(
            request,
            "login.html",
            error="That key is not right. It is api_token in the daemon's config.json.",
            add=add,
        )
    return _signed_in(request, role, key, _after_login(request, add))


def _signed_in(request: Request, role: Role, key: str, to: str | None = None) -> Response:
    """To `to` (the GUI by default), with a session cookie for `role` (issued for `key`)."""
    response = RedirectResponse(to or f"{root_of(request)}/gui", status_code=303)
    response.set_cookie(
        COOKIE,
        request.app.state.sessions.issue(role, key),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=root_of(request) or "/",
    )
    return response


@router.get("/gui/link/{token}", response_class=HTMLResponse)
async def link(request: Request, token: str) -> Response:
    """A one-time login link (the first start prints one): a session, once, within 10 minutes."""
    key = await request.app.state.sessions.redeem_link(request.app.state.settings, token)
    if key is None:
        return _page(
            request,
            "login.html",
            error="That login link was used already or has expired: log in with the key.",
        )
    return _signed_in(request, Role.ADMIN, key)


@router.post("/gui/logout")
async def logout(request: Request) -> Response:
    """Ends the session server-side too: a copy of the cookie is refused from now on."""
    await request.app.state.sessions.revoke(request.cookies.get(COOKIE))
    root = root_of(request)
    response = RedirectResponse(f"{root}/gui", status_code=303)
    response.delete_cookie(COOKIE, path=root or "/", httponly=True, samesite="strict")
    return response
