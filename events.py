"""Events and the bus that hands each one to every subscriber separately.

A subscriber has its own bounded queue. When it falls behind, its oldest *progress* events are
dropped first; status changes and updates are kept. Publishing never waits, so no subscriber can
slow a download, and one subscriber's failure never reaches the publisher or the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("civitai.events")


@dataclass(frozen=True)
class JobEvent:
    """A job changed: its status (`progress=False`) or only its byte counters."""

    job: dict[str, Any]
    progress: bool = False

    @property
    def status(self) -> str:
        return self.job["status"]


@dataclass(frozen=True)
class UpdateEvent:
    """The update checker found a new version of a tracked model."""

    update: dict[str, Any]


Event = JobEvent | UpdateEvent


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int, progress: bool) -> None:
        self.bus = bus
        self.maxsize = maxsize
        self.wants_progress = progress
        self._items: deque[Event] = deque()
        self._ready = asyncio.Event()

    def put(self, event: Event) -> None:
        if isinstance(event, JobEvent) and event.progress and not self.wants_progress:
            return
        if len(self._items) >= self.maxsize:
            self._drop_one()
        self._items.append(event)
        self._ready.set()

    def _drop_one(self) -> None:
        for i, queued in enumerate(self._items):
            if isinstance(queued, JobEvent) and queued.progress:
                del self._items[i]
                return
        # Nothing but status events: still never block the publisher.
        self._items.popleft()

    async def get(self) -> Event:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        self.bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []

    def subscribe(self, maxsize: int = 1000, progress: bool = True) -> Subscription:
        sub = Subscription(self, maxsize, progress)
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def publish(self, event: Event) -> None:
        for sub in list(self._subscribers):
            try:
                sub.put(event)
            except Exception:  # a broken subscriber must not break the publisher
                log.exception("event subscriber failed; dropping it")
                self.unsubscribe(sub)
