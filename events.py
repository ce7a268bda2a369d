"""Events and the bus that hands each one to every subscriber separately.

A subscriber has its own bounded queue. When it holds `maxsize` events, its oldest *progress*
event is dropped to make room (or the new progress event, when none is queued). Status changes
and updates are never dropped one by one: they queue up to `limit`, and past it the subscription
*overflows* — its queue is emptied and the next `get()` raises `Overflowed`, so the subscriber
knows it lost some and can start again from a snapshot. Publishing never waits, so no subscriber
can slow a download, and one subscriber's failure never reaches the publisher or the others.

Fan-out to many subscribers stays cheap: an event carries a memo (`once`), so what every
subscriber would compute from it (the feed's JSON text) is computed once; `publish_many` hands a
burst (a batch's 2,000 new jobs) to each subscriber in one call; and a reader takes everything
waiting at once (`get_nowait`) instead of one wake-up per event.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger("civitai.events")
T = TypeVar("T")


@dataclass(frozen=True)
class _Memo:
    _memo: dict[str, Any] = field(
        default_factory=dict, init=False, compare=False, repr=False, kw_only=True
    )

    def once(self, key: str, make: Callable[[], T]) -> T:
        """`make()`, computed once for this event however many subscribers ask."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]


@dataclass(frozen=True)
class JobEvent(_Memo):
    """A job changed: its status (`progress=False`) or only its byte counters."""

    job: dict[str, Any]
    progress: bool = False
    previous: str | None = None  # the status it left, on a status change

    @property
    def status(self) -> str:
        return self.job["status"]


@dataclass(frozen=True)
class UpdateEvent(_Memo):
    """The update checker found a new version of a tracked model."""

    update: dict[str, Any]


@dataclass(frozen=True)
class ClearedEvent(_Memo):
    """Jobs left the history (a clear, or a file's older rows once it is downloaded again)."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class SummaryEvent(_Memo):
    """An update check ended: what it found, told once (`check.summary`)."""

    summary: dict[str, Any]


@dataclass(frozen=True)
class ScanEvent(_Memo):
    """The library scan's progress (`progress=True`: may be dropped) or its start and end."""

    scan: dict[str, Any]
    progress: bool = False


Event = JobEvent | UpdateEvent | ClearedEvent | SummaryEvent | ScanEvent


class Overflowed(Exception):
    """A subscriber fell so far behind that status changes were lost; start from a snapshot."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"More than {limit} status changes were waiting for this subscriber; they were "
            f"discarded. Read a fresh snapshot."
        )


def _is_progress(event: Event) -> bool:
    return isinstance(event, JobEvent | ScanEvent) and event.progress


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int, progress: bool, limit: int) -> None:
        self.bus = bus
        self.maxsize = maxsize  # past it, progress events are dropped, oldest first
        self.limit = max(limit, maxsize)  # past it, the subscription overflows
        self.wants_progress = progress
        self.overflowed = False
        self._items: deque[Event] = deque()
        self._progress = 0  # how many of `_items` are progress events
        self._ready = asyncio.Event()

    def put(self, event: Event) -> None:
        self.put_many((event,))

    def put_many(self, events: Iterable[Event]) -> None:
        for event in events:
            if self.overflowed:
                break
            progress = _is_progress(event)
            if progress and not self.wants_progress:
                continue
            if len(self._items) >= self.maxsize and not self._drop_oldest_progress():
                if progress:
                    continue  # only status changes are queued: this progress is stale soon anyway
                if len(self._items) >= self.limit:
                    self.overflowed = True  # never a silent gap: the reader is told instead
                    self._items.clear()
                    self._progress = 0
                    break
            self._items.append(event)
            self._progress += progress
        self._ready.set()

    def _drop_oldest_progress(self) -> bool:
        if not self._progress:  # a queue of status changes alone is not scanned each time
            return False
        for i, queued in enumerate(self._items):
            if _is_progress(queued):
                del self._items[i]
                self._progress -= 1
                return True
        return False

    def _pop(self) -> Event:
        event = self._items.popleft()
        self._progress -= _is_progress(event)
        return event

    async def get(self) -> Event:
        """The next event; `Overflowed` once after status changes were lost."""
        await self.wait()
        return self.get_nowait(1)[0]

    async def wait(self) -> None:
        """Until an event is waiting, or the subscription has overflowed."""
        while not self._items and not self.overflowed:
            self._ready.clear()
            await self._ready.wait()

    def get_nowait(self, most: int) -> list[Event]:
        """Up to `most` events waiting now, oldest first (maybe none); `Overflowed` once after
        status changes were lost."""
        if not self._items and self.overflowed:
            self.overflowed = False
            raise Overflowed(self.limit)
        return [self._pop() for _ in range(min(most, len(self._items)))]

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
        self.publish_many([event])

    def publish_many(self, events: list[Event]) -> None:
        """Each event, in order, to every subscriber: one call per subscriber for the lot."""
        if not events:
            return
        for sub in list(self._subscribers):
            try:
                sub.put_many(events)
            except Exception:  # a broken subscriber must not break the publisher
                log.exception("event subscriber failed; dropping it")
                self.unsubscribe(sub)
