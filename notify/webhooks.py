"""Outbound webhooks and notifications (SPEC §9, §12): signed, retried, never in the way."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any

import httpx

from config.settings import NotifyTarget, Settings
from database import utcnow
from events import EventBus, JobEvent, Overflowed, SummaryEvent, UpdateEvent
from sources.civitai import backoff
from sources.versions import FAR_FUTURE

log = logging.getLogger("civitai.webhooks")

ATTEMPTS = 5
JOB_EVENTS = {
    "completed": "download.completed",
    "failed": "download.failed",
    "paused": "download.paused",
}
# For people: one message per check (check.summary) rather than one per update it found.
NOTIFY_EVENTS = {"download.completed", "download.failed", "check.summary"}


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def discord_message(payload: dict[str, Any]) -> dict[str, Any]:
    title, description, color = _summary(payload)
    return {"embeds": [{"title": title, "description": description, "color": color}]}


def telegram_message(payload: dict[str, Any], chat_id: str | int) -> dict[str, Any]:
    title, description, _ = _summary(payload)
    return {"chat_id": chat_id, "text": f"{title}\n{description}", "disable_web_page_preview": True}


def _summary(payload: dict[str, Any]) -> tuple[str, str, int]:
    event = payload["event"]
    if event == "check.summary":
        s = payload["summary"]
        lines = [s.get("text") or "Nothing new."]
        for f in s.get("follows") or []:
            names = [str(i.get("name")) for i in (f.get("new") or [])[:10]]
            if names:
                lines.append(f"{f.get('title')}: {', '.join(names)}")
        for u in (s.get("update_items") or [])[:10]:
            lines.append(": ".join(_update_text(u)))
        return "Update check", "\n".join(lines), 0x9B59B6
    if event == "model.update_found":
        title, what = _update_text(payload["update"])
        return title, what, 0x3498DB
    job = payload["job"]
    name = job.get("filename") or f"job {job['id']}"
    if event == "download.completed":
        return f"Downloaded {name}", f"{job.get('model_type')}: {job.get('path')}", 0x2ECC71
    return f"Download failed: {name}", str(job.get("error") or ""), 0xE74C3C


def _update_text(u: dict[str, Any]) -> tuple[str, str]:
    """(title, sentence) of an update: queued, listed only (policy notify, or a file not
    tracked) or held in early access until its date."""
    version = u.get("version_name") or u.get("new_version_id")
    until = u.get("early_access_until")
    until = until if until and until != FAR_FUTURE else None
    if u.get("job_id") is not None:
        what = f"{version} is queued for download."
    elif u.get("policy") == "notify":
        held = f" (in early access until {until})" if until else ""
        what = f"{version} is listed only: this model's update policy is notify{held}."
    elif u.get("early_access_until"):  # queued by the first check after it ends
        when = f" until {until}" if until else ""
        what = f"{version} is in early access{when}; it is queued once that ends."
    else:
        what = f"{version} is listed only: the file on disk is not tracked."
    return f"New version of {u.get('model_name') or u.get('modelId')}", what


class WebhookSender:
    """Subscribes to the bus; sends each completed/failed job and each update out."""

    def __init__(self, settings: Settings, bus: EventBus, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.bus = bus
        self.http = http
        self.delivered = 0
        self.failed = 0
        self._task: asyncio.Task | None = None
        self._deliveries: set[asyncio.Task] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.webhook_url or self.settings.notify)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._sub = self.bus.subscribe(maxsize=10_000, progress=False)
            self._task = asyncio.create_task(self._run(), name="webhooks")

    def apply(self, settings: Settings) -> None:
        """Settings changed while running: the next event goes to the new targets."""
        self.settings = settings
        self.start()

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self._deliveries] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._task is not None:
            self._sub.close()

    async def _run(self) -> None:
        while True:
            try:
                event = await self._sub.get()
            except Overflowed as exc:  # 10,000 waiting: deliveries cannot keep up
                log.error("webhooks: %s", exc)
                continue
            payload = self.payload(event)
            if payload is not None:
                self.send(payload)

    def payload(self, event: Any) -> dict[str, Any] | None:
        if isinstance(event, JobEvent) and not event.progress:
            name = JOB_EVENTS.get(event.status)
            if event.status == "queued" and event.previous == "paused":
                name = "download.resumed"
            if name is not None and event.status != event.previous:
                return {"event": name, "timestamp": utcnow(), "job": event.job}
        if isinstance(event, UpdateEvent):
            return {"event": "model.update_found", "timestamp": utcnow(), "update": event.update}
        if isinstance(event, SummaryEvent):
            return {"event": "check.summary", "timestamp": utcnow(), "summary": event.summary}
        return None

    def send(self, payload: dict[str, Any]) -> None:
        """Deliver in the background, each target on its own."""
        if self.settings.webhook_url:
            self._spawn(self._deliver_webhook(payload))
        quiet = payload["event"] == "check.summary" and not payload["summary"].get("text")
        for target in (
            self.settings.notify if payload["event"] in NOTIFY_EVENTS and not quiet else []
        ):
            self._spawn(self._deliver_notify(target, payload))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver_webhook(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "civitai-daemon-webhook/0.1",
            # The same id on every retry of this delivery, so a receiver can drop repeats.
            "X-Delivery-Id": uuid.uuid4().hex,
            "X-Timestamp": str(int(time.time())),
        }
        if self.settings.webhook_secret:
            headers["X-Signature-256"] = signature(
                self.settings.webhook_secret.get_secret_value(), body
            )
        assert self.settings.webhook_url
        await self._post(self.settings.webhook_url, body, headers, payload["event"])

    async def _deliver_notify(self, target: NotifyTarget, payload: dict[str, Any]) -> None:
        if target.type == "discord" and target.url:
            body = json.dumps(discord_message(payload)).encode()
            await self._post(target.url, body, {"Content-Type": "application/json"}, "discord")
        elif target.type == "telegram" and target.bot_token and target.chat_id is not None:
            token = target.bot_token.get_secret_value()
            url = f"{target.api_base.rstrip('/')}/bot{token}/sendMessage"
            body = json.dumps(telegram_message(payload, target.chat_id)).encode()
            await self._post(url, body, {"Content-Type": "application/json"}, "telegram")

    async def _post(self, url: str, body: bytes, headers: dict[str, str], what: str) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await self.http.post(url, content=body, headers=headers, timeout=10)
                if response.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"answered {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}"
            if attempt < ATTEMPTS:
                wait = backoff(attempt, base=1.0, cap=30)
                log.warning(
                    "%s delivery failed (%s); retry %d in %.1f s", what, problem, attempt, wait
                )
                await asyncio.sleep(wait)
        self.failed += 1
        log.error("%s delivery failed %d times (%s); giving up", what, ATTEMPTS, problem)
