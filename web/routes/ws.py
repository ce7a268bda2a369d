"""WebSocket `/ws/downloads` (SPEC §8): a snapshot, then every job change and update found."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from engine.jobs import ACTIVE_SQL
from events import Event, JobEvent, Overflowed, ScanEvent, SummaryEvent, UpdateEvent
from web.auth import COOKIE, TooManyFailures, key_role
from web.roles import role_for_key

log = logging.getLogger("civitai.ws")
router = APIRouter()

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_MANY = 4429  # too many wrong keys from this address; the GUI waits, then reconnects
CLOSE_TOO_SLOW = 1013  # "try again later": reconnect and start from a fresh snapshot
QUEUE_SIZE = 256  # per client; past it the oldest progress messages are dropped
# Per client; past it the socket is closed rather than lose a status change. Room for a whole
# batch (at most 5,000 new jobs, published at once) and the updates that follow as it resolves.
STATUS_LIMIT = 16_384
RECHECK_SECONDS = 2  # how often an open feed checks that its session or key is still good
SEND_BURST = 64  # messages sent to one client before the others (and HTTP answers) get a turn


def message(event: Event) -> dict[str, Any]:
    if isinstance(event, SummaryEvent):
        return {"type": "summary", "summary": event.summary}
    if isinstance(event, ScanEvent):
        return {"type": "scan", "scan": event.scan}
    if isinstance(event, UpdateEvent):
        return {"type": "update", "update": event.update}
    if isinstance(event, JobEvent):
        return {"type": "job", "job": event.job}
    return {"type": "cleared", "ids": list(event.ids)}


def text(event: Event) -> str:
    """The message as sent: serialised once per event, however many clients are connected
    (the same JSON as starlette's `send_json`)."""
    return event.once(
        "ws", lambda: json.dumps(message(event), separators=(",", ":"), ensure_ascii=False)
    )


@router.websocket("/ws/downloads")
async def downloads(ws: WebSocket) -> None:
    """Live feed. Auth: the session cookie, or `?token=<api_token or viewer_token>`; checked at
    connect and again every RECHECK_SECONDS, so Log out (or a changed key) closes it with 4401."""
    app = ws.app
    token, cookie = ws.query_params.get("token"), ws.cookies.get(COOKIE)

    def allowed() -> bool:
        settings = app.state.settings
        return (
            role_for_key(settings, token) or app.state.sessions.role(settings, cookie)
        ) is not None

    await ws.accept()  # accepted first, so the client sees the close code, not a bare 403
    try:
        # The token is counted (and refused while its address is limited) once, at connect.
        good = token is not None and key_role(ws, token) is not None
    except TooManyFailures as exc:
        reason = f"Too many wrong keys; try again in {exc.seconds} s"
        await ws.close(code=CLOSE_TOO_MANY, reason=reason)
        return
    if not (good or allowed()):
        await ws.close(code=CLOSE_UNAUTHORIZED, reason="API key or login needed")
        return
    queue = app.state.queue
    # Subscribe before the snapshot, so nothing between the two is missed.
    bus = app.state.bus
    with bus.subscribe(maxsize=QUEUE_SIZE, progress=True, limit=STATUS_LIMIT) as sub:
        rows = await queue.store.jobs_where(ACTIVE_SQL, order_by="priority, id")
        await ws.send_json({"type": "snapshot", "jobs": [queue.public(r) for r in rows]})
        receiver = asyncio.create_task(_drain(ws))
        waiter: asyncio.Future[Any] | None = None
        checked = time.monotonic()
        try:
            while not receiver.done():
                # Everything waiting is sent without a wake-up per message; between bursts the
                # loop serves the other clients (and the HTTP answers) too.
                burst = sub.get_nowait(SEND_BURST)
                for event in burst:
                    await ws.send_text(text(event))
                if burst:
                    await asyncio.sleep(0)
                else:
                    waiter = waiter or asyncio.ensure_future(sub.wait())
                    left = max(0.0, checked + RECHECK_SECONDS - time.monotonic())
                    await asyncio.wait(
                        {waiter, receiver}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                    )
                    if waiter.done():
                        waiter = None
                if time.monotonic() - checked >= RECHECK_SECONDS:
                    checked = time.monotonic()
                    if not allowed():  # logged out, expired, or the key changed meanwhile
                        log.info("closing a feed client whose session or key ended")
                        await _close(ws, CLOSE_UNAUTHORIZED, "Logged out, or the key changed")
                        break
        except Overflowed:
            log.warning("a feed client fell %d status changes behind; closing it", STATUS_LIMIT)
            await _close(ws, CLOSE_TOO_SLOW, "Too far behind; reconnect for a fresh snapshot")
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            for task in (waiter, receiver):
                if task is not None:
                    task.cancel()
            await asyncio.gather(receiver, *([waiter] if waiter else []), return_exceptions=True)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # a client that never reads may not take it
        await asyncio.wait_for(ws.close(code=code, reason=reason), 5)


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, to notice when it goes away."""
    try:
        while True:
            await ws.receive_text()
    except (WebSocketDisconnect, RuntimeError):
        return
