"""The inbound webhook (SPEC §9): other apps queue downloads with a signed POST /webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from auth import Role, role_of
from errors import InvalidRequest
from manifest import parse_entries
from webhooks import signature

log = logging.getLogger("civitai.webhook")
router = APIRouter(tags=["webhook"])

MAX_BODY = 1024 * 1024


class WebhookResult(BaseModel):
    jobs: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    duplicate: bool = False


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """The same signature the daemon puts on its own webhooks, compared in constant time."""
    if not header:
        return False
    prefix, _, digest = header.strip().partition("=")
    given = f"{prefix}={digest.lower()}"  # hex in either case; the prefix exactly `sha256`
    return hmac.compare_digest(given.encode(), signature(secret, body).encode())


@router.post("/webhook", status_code=202, response_model=WebhookResult)
async def webhook(request: Request) -> dict[str, Any]:
    """A job request or a list of them. With `webhook_secret` set, `X-Signature-256:
    sha256=<hex HMAC of the raw body>` is required; without it, the API key. A delivery seen
    before (same `X-Delivery-Id`, or the same body) queues nothing again."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, f"The body is larger than {MAX_BODY} bytes")
    settings = request.app.state.settings
    if settings.webhook_secret:
        secret = settings.webhook_secret.get_secret_value()
        if not signature_ok(secret, body, request.headers.get("x-signature-256")):
            raise HTTPException(401, "A valid X-Signature-256 (HMAC-SHA256 of the body) is needed")
    elif role_of(request) is not Role.ADMIN:
        raise HTTPException(401, "The API key is needed (or set webhook_secret to sign requests)")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from None
    entries = data if isinstance(data, list) else [data]
    delivery = request.headers.get("x-delivery-id") or hashlib.sha256(body).hexdigest()
    store = request.app.state.store
    seen = await store.delivery(delivery)
    if seen is not None:
        log.info("webhook delivery %s seen before; nothing queued", delivery[:16])
        return {**seen, "duplicate": True}
    good, bad = parse_entries(entries)
    jobs, failed = await request.app.state.queue.submit_many(good, source="webhook")
    errors = [{"index": p.index, "detail": p.detail} for p in bad] + failed
    result = {"jobs": jobs, "errors": sorted(errors, key=lambda e: e["index"])}
    await store.record_delivery(delivery, result)
    return result
