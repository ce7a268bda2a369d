"""The routes this package adds to ComfyUI's server, each forwarding to the daemon with its key.

ComfyUI registers a custom node's routes from `PromptServer.instance.routes` (an aiohttp
`RouteTableDef`) and serves each of them bare and under `/api` (server.py,
`PromptServer.add_routes`); its origin check (server.py, `create_origin_only_middleware`) already
refuses a cross-origin request to a loopback ComfyUI. The POST route takes JSON only, so a
cross-origin page cannot send it without a CORS preflight, which ComfyUI never grants.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web

from .link import CONFIG_NAME, load_link

PREFIX = "/civitai_daemon"
TIMEOUT = aiohttp.ClientTimeout(total=30)
MAX_JOBS = 200  # ids asked in one poll: a workflow names a few models, never thousands
JOB_FIELDS = ("id", "status", "filename", "path", "bytes_done", "bytes_total", "error")


def _error(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)


def _no_link() -> web.Response:
    return _error(
        503,
        "No daemon URL and key are set for ComfyUI: set CIVITAI_DAEMON_URL and "
        "CIVITAI_DAEMON_KEY, or "
        f'write {{"url": …, "key": …}} to {CONFIG_NAME} in ComfyUI\'s user folder.',
    )


async def _ask(
    method: str, path: str, *, params: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, Any]:
    """(status, JSON) of the daemon's answer; `DaemonError` (holding the page's answer) when
    no key is set or the daemon cannot be asked."""
    found = load_link()
    if found is None:
        raise DaemonError(_no_link())
    headers = {"Authorization": f"Bearer {found.key}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.request(
                method, found.url + path, params=params, data=body, headers=headers
            ) as answer:
                text = await answer.text()
                status = answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        # The URL is the user's own setting; the key never appears in it or in this text.
        raise DaemonError(
            _error(502, f"The daemon at {found.url} did not answer ({type(exc).__name__}).")
        ) from exc
    try:
        return status, json.loads(text)
    except ValueError as exc:
        raise DaemonError(
            _error(502, f"The daemon at {found.url} answered {status} without JSON.")
        ) from exc


class DaemonError(Exception):
    """The answer to give the page when the daemon cannot be asked."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


def _passed_on(status: int, data: Any) -> web.Response:
    """The daemon's error as the page sees it: its status and one-sentence `detail`."""
    detail = data.get("detail") if isinstance(data, dict) else None
    if not isinstance(detail, str):
        detail = f"The daemon answered {status}."
    if status == 401:
        detail = "The daemon refused the key ComfyUI has for it; check CIVITAI_DAEMON_KEY."
    return _error(status, detail)


async def status(request: web.Request) -> web.Response:
    """Whether a key is set and the daemon answers; never the key."""
    if load_link() is None:
        return web.json_response({"configured": False, "reachable": False})
    try:
        code, _ = await _ask("GET", "/api/health")
    except DaemonError as exc:
        detail = json.loads(exc.response.text)["detail"]
        return web.json_response({"configured": True, "reachable": False, "detail": detail})
    return web.json_response({"configured": True, "reachable": code == 200})


async def workflow(request: web.Request) -> web.Response:
    """The open workflow to the daemon's POST /api/workflow (`?dry_run=true` passed on)."""
    if request.content_type != "application/json":
        return _error(415, "Send the workflow as JSON (Content-Type: application/json).")
    body = await request.read()
    params = {"dry_run": "true"} if request.query.get("dry_run") == "true" else None
    try:
        code, data = await _ask("POST", "/api/workflow", params=params, body=body)
    except DaemonError as exc:
        return exc.response
    return web.json_response(data) if code == 200 else _passed_on(code, data)


def _job_ids(raw: str) -> list[int] | None:
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    if not ids or len(ids) > MAX_JOBS or not all(i.isdigit() for i in ids):
        return None
    return [int(i) for i in ids]


async def jobs(request: web.Request) -> web.Response:
    """The state and progress of the jobs `?ids=1,2` (the daemon's GET /api/jobs/{id})."""
    ids = _job_ids(request.query.get("ids", ""))
    if ids is None:
        return _error(422, f"Give ids=1,2,… (up to {MAX_JOBS} job ids, digits only).")
    out = []
    try:
        for job_id in ids:
            code, data = await _ask("GET", f"/api/jobs/{job_id}")
            if code != 200:
                return _passed_on(code, data)
            out.append({k: data.get(k) for k in JOB_FIELDS})
    except DaemonError as exc:
        return exc.response
    return web.json_response({"jobs": out})


HUB_FIELDS = ("source", "repo", "revision", "path", "size", "sha256", "gated", "url", "page")


def _candidate(model: dict[str, Any]) -> dict[str, Any]:
    """A Civitai model with what the sidebar shows and queues of it; a Hub file as it is."""
    if model.get("source") == "huggingface":
        return {k: model.get(k) for k in HUB_FIELDS}
    versions = [
        {
            "id": v.get("id"),
            "name": v.get("name"),
            "baseModel": v.get("baseModel"),
            "files": [
                {k: f.get(k) for k in ("id", "name", "size", "primary", "sha256")}
                for f in v.get("files") or []
            ],
        }
        for v in model.get("versions") or []
    ]
    keep = ("source", "id", "name", "type", "model_type", "folder", "creator", "state")
    return {**{k: model.get(k) for k in keep}, "versions": versions}


async def search(request: web.Request) -> web.Response:
    """A model's file name looked for on Civitai and the Hugging Face Hub (the daemon's
    GET /api/search/file): Civitai's models matching its words, the Hub's files of that name."""
    name = request.query.get("name", "").strip()
    if not name or len(name) > 200:
        return _error(422, "Give name= with a model's file name of 1 to 200 characters.")
    try:
        code, data = await _ask("GET", "/api/search/file", params={"name": name})
    except DaemonError as exc:
        return exc.response
    if code != 200:
        return _passed_on(code, data)
    return web.json_response(
        {
            "items": [_candidate(m) for m in data.get("items") or []],
            "unavailable": data.get("unavailable") or [],
        }
    )


def register(routes: web.RouteTableDef) -> None:
    """Add this package's routes to ComfyUI's table (before ComfyUI's `add_routes` copies it)."""
    routes.get(f"{PREFIX}/status")(status)
    routes.post(f"{PREFIX}/workflow")(workflow)
    routes.get(f"{PREFIX}/jobs")(jobs)
    routes.get(f"{PREFIX}/search")(search)
