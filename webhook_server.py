"""The inbound webhook (SPEC §9): other apps queue downloads with a signed POST /webhook."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

import json_body
from database import utcnow
from library.manifest import parse_entries
from notify.webhooks import signature
from web.auth import Role, role_of

log = logging.getLogger("civitai.webhook")
router = APIRouter(tags=["webhook"])

MAX_BODY = 1024 * 1024
WINDOW = 5 * 60  # seconds a signed delivery is accepted before or after its X-Timestamp
MAX_DELIVERY_ID = 128
# How long a delivery id is remembered: far past WINDOW, after which a signed replay is refused by
# its timestamp anyway; an unsigned (API key) delivery is deduplicated for that long.
REMEMBER = 24 * 3600
# A delivery claimed this long ago and never answered was lost with its handler (the daemon was
# killed mid-request): a retry may claim it again rather than get 409 until REMEMBER has passed.
CLAIM_TIMEOUT = 60
SIG = "x-signature-256"


class WebhookResult(BaseModel):
    jobs: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    duplicate: bool = False


def signed_message(timestamp: str, delivery_id: str, body: bytes) -> bytes:
    """What the sender signs: the timestamp and the delivery id bind the body to one delivery."""
    return f"{timestamp}.{delivery_id}.".encode() + body


def signature_ok(secret: str, message: bytes, header: str | None) -> bool:
    """The same signer as the daemon's own webhooks, compared in constant time."""
    if not header:
        return False
    prefix, _, digest = header.strip().partition("=")
    given = f"{prefix}={digest.lower()}"  # hex in either case; the prefix exactly `sha256`
    return hmac.compare_digest(given.encode(), signature(secret, message).encode())


def signed_delivery(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> str:
    """The delivery id of a correctly signed, current delivery; else 401 saying what is wrong."""
    timestamp = headers.get("x-timestamp", "").strip()
    delivery = headers.get("x-delivery-id", "")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise HTTPException(401, "X-Timestamp is needed: the time of sending in Unix seconds")
    if not 0 < len(delivery) <= MAX_DELIVERY_ID or not delivery.isprintable():
        raise HTTPException(
            401,
            f"X-Delivery-Id is needed: a unique string of at most {MAX_DELIVERY_ID} printable "
            "characters",
        )
    if not signature_ok(secret, signed_message(timestamp, delivery, body), headers.get(SIG)):
        raise HTTPException(
            401,
            "A valid X-Signature-256 is needed: sha256=<hex HMAC-SHA256 under webhook_secret of "
            "'<X-Timestamp>.<X-Delivery-Id>.' followed by the body>",
        )
    age = now - int(timestamp)
    if age > WINDOW:
        raise HTTPException(
            401,
            f"The delivery is older than {WINDOW // 60} minutes (X-Timestamp {timestamp}); "
            "sign and send it again with the current time",
        )
    if age < -WINDOW:
        raise HTTPException(
            401,
            f"X-Timestamp {timestamp} is more than {WINDOW // 60} minutes in the future; "
            "check the sending machine's clock",
        )
    return delivery


@router.post("/webhook", status_code=202, response_model=WebhookResult)
async def webhook(request: Request) -> dict[str, Any]:
    """A job request or a list of them. With `webhook_secret` set, the delivery is signed:
    `X-Timestamp` (Unix seconds, within 5 minutes), `X-Delivery-Id` (unique) and
    `X-Signature-256: sha256=<hex HMAC of "<timestamp>.<delivery id>." + body>`; without it, the
    API key. A delivery id seen before queues nothing again and answers as the first time."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, f"The body is larger than {MAX_BODY} bytes")
    settings = request.app.state.settings
    if settings.webhook_secret:
        secret = settings.webhook_secret.get_secret_value()
        delivery = signed_delivery(secret, request.headers, body, time.time())
    elif role_of(request) is not Role.ADMIN:
        raise HTTPException(401, "The API key is needed (or set webhook_secret to sign requests)")
    else:
        delivery = request.headers.get("x-delivery-id") or hashlib.sha256(body).hexdigest()
    data = json_body.loads(body)
    entries = data if isinstance(data, list) else [data]
    store = request.app.state.store
    now = time.time()
    claimed, seen = await store.deliveries.claim(
        delivery, forget_before=utcnow(now - REMEMBER), stale_before=utcnow(now - CLAIM_TIMEOUT)
    )
    if not claimed:
        if seen is None:
            raise HTTPException(409, "This delivery is still being handled; send it again soon")
        log.info("webhook delivery %s seen before; nothing queued", delivery[:16])
        return {**seen, "duplicate": True}
    try:
        good, bad = parse_entries(entries)
        jobs, failed = await request.app.state.queue.submit_many(good, source="webhook")
    except BaseException:
        await store.deliveries.release(delivery)  # not handled: a retry may try again
        raise
    errors = [{"index": p.index, "detail": p.detail} for p in bad] + failed
    result = {"jobs": jobs, "errors": sorted(errors, key=lambda e: e["index"])}
    await store.deliveries.record(delivery, result)
    return result
