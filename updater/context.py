"""What one update check works with and what it finds: its context and its result (below both
the Civitai check, updater/checker.py, and the Hub check, updater/hub.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from config.settings import Settings
from database import Store
from events import EventBus
from library import manifest
from sources.civitai import CivitaiClient, with_retries

if TYPE_CHECKING:
    from daemon import DownloadQueue

T = TypeVar("T")


@dataclass
class CheckResult:
    started_at: str
    finished_at: str | None = None
    checked: int = 0  # manifest entries compared
    requests: int = 0  # requests made to Civitai
    updates: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float | None = None  # wall-clock seconds the check took (GET /metrics)

    def summary(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "checked": self.checked,
            "requests": self.requests,
            "updates": self.updates,
            "errors": self.errors,
            "duration_s": self.duration_s,
        }


@dataclass
class CheckContext:
    """Everything one check reads, queues, tells and writes; built once per check."""

    settings: Settings
    store: Store
    civitai: CivitaiClient
    queue: DownloadQueue
    bus: EventBus
    manifest_lock: asyncio.Lock  # the daemon's one, shared with the queue and the scanner
    result: CheckResult

    async def ask(self, call: Callable[[], Awaitable[T]]) -> T:
        """One question to Civitai or the Hub, retried politely; each attempt counted."""

        async def once() -> T:
            self.result.requests += 1  # an attempt that fails counts too
            return await call()

        return await with_retries(once, attempts=4, base=2.0, max_wait=300)

    async def record(
        self,
        index: int,
        same: Callable[[dict[str, Any]], bool],
        change: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        """Write an update into the manifest entry at `index` (manifest.record_update)."""
        path, mode = self.settings.manifest_path, self.settings.manifest_mode
        async with self.manifest_lock:
            await asyncio.to_thread(manifest.record_update, path, index, same, change, mode)
