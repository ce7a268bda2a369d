"""Events and the bus that hands each one to every subscriber separately.

A subscriber has its own bounded queue. When it holds `maxsize` events, its oldest *progress*
event is dropped to make room (or the new progress event, when none is queued). Status changes
and updates are never dropped one by one: they queue up to `limit`, and past it the subscription
*overflows* — its queue is emptied and the next `get()` raises `Overflowed`, so the subscriber
knows it lost some and can start again from a snapshot. Publishing never waits, so no subscriber
can slow a download, and one subscriber's failure never reaches the publisher or the others.
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


class Overflowed(Exception):
    """A subscriber fell so far behind that status changes were lost; start from a snapshot."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"More than {limit} status changes were waiting for this subscriber; they were "
            f"discarded. Read a fresh snapshot."
        )


def _is_progress(event: Event) -> bool:
    return isinstance(event, JobEvent) and event.progress


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int, progress: bool, limit: int) -> None:
        self.bus = bus
        self.maxsize = maxsize  # past it, progress events are dropped, oldest first
        self.limit = max(limit, maxsize)  # past it, the subscription overflows
        self.wants_progress = progress
        self.overflowed = False
        self._items: deque[Event] = deque()
        self._ready = asyncio.Event()

    def put(self, event: Event) -> None:
        if self.overflowed or (_is_progress(event) and not self.wants_progress):
            return
        if len(self._items) >= self.maxsize and not self._drop_oldest_progress():
            if _is_progress(event):
                return  # only status changes are queued: this progress is stale soon anyway
            if len(self._items) >= self.limit:
                self.overflowed = True  # never a silent gap: the reader is told instead
                self._items.clear()
                self._ready.set()
                return
        self._items.append(event)
        self._ready.set()

    def _drop_oldest_progress(self) -> bool:
        for i, queued in enumerate(self._items):
            if _is_progress(queued):
                del self._items[i]
                return True
        return False

    async def get(self) -> Event:
        """The next event; `Overflowed` once after status changes were lost."""
        while not self._items:
            if self.overflowed:
                self.overflowed = False
                raise Overflowed(self.limit)
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

    def subscribe(
        self, maxsize: int = 1000, progress: bool = True, limit: int | None = None
    ) -> Subscription:
        """A queue of every event from now on; status changes queue up to `limit` (default
        `maxsize`) before the subscription overflows."""
        sub = Subscription(self, maxsize, progress, limit or maxsize)
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
