"""The bus's per-subscriber queue: progress may be dropped, a status change never silently."""

from __future__ import annotations

import asyncio

import pytest

from events import EventBus, JobEvent, Overflowed
from tests.conftest import loop_thread


def status(n: int) -> JobEvent:
    return JobEvent({"id": n, "status": "queued"})


def progress(n: int) -> JobEvent:
    return JobEvent({"id": n, "status": "downloading"}, progress=True)


@pytest.fixture
def drain():
    """Everything a subscription hands out now: events, and `Overflowed` where it says so."""
    with loop_thread() as run:  # one loop per test, as in the daemon
        yield lambda sub: run(_read(sub))


async def _read(sub) -> list:
    got: list = []
    while True:
        try:
            got.append(await asyncio.wait_for(sub.get(), 0.05))
        except Overflowed as exc:
            got.append(exc)
        except TimeoutError:
            return got


def no_silent_gap(got: list) -> list[int]:
    """The status events' numbers; between two delivered ones, nothing lost unless reported."""
    seen, last = [], 0
    for item in got:
        if isinstance(item, Overflowed):
            last = None
        elif not item.progress:
            n = item.job["id"]
            assert last is None or n == last + 1, f"status {last + 1}..{n - 1} lost silently"
            seen.append(n)
            last = n
    return seen


@pytest.mark.parametrize("maxsize", [256, 16])
def test_a_reader_that_never_reads_gets_every_status_change_in_order(maxsize, drain):
    bus = EventBus()
    sub = bus.subscribe(maxsize=maxsize, limit=1000)
    for n in range(1, 401):  # 400 status changes, each followed by progress
        bus.publish(status(n))
        for _ in range(3):
            bus.publish(progress(n))
    got = drain(sub)
    assert no_silent_gap(got) == list(range(1, 401))
    assert not any(isinstance(g, Overflowed) for g in got)
    assert sum(g.progress for g in got) == 0  # every progress event gave way to a status change


def test_progress_is_dropped_oldest_first(drain):
    bus = EventBus()
    sub = bus.subscribe(maxsize=10)
    bus.publish(status(1))
    for n in range(300):
        bus.publish(JobEvent({"id": 1, "status": "downloading", "bytes_done": n}, progress=True))
    got = drain(sub)
    assert got[0].job["id"] == 1 and not got[0].progress
    assert [g.job["bytes_done"] for g in got[1:]] == list(range(291, 300))


def test_past_the_limit_the_subscription_reports_overflow_instead_of_a_gap(drain):
    bus = EventBus()
    sub = bus.subscribe(maxsize=50, limit=100)
    for n in range(1, 351):
        bus.publish(status(n))
    got = drain(sub)
    overflows = [g for g in got if isinstance(g, Overflowed)]
    assert len(overflows) == 1 and "Read a fresh snapshot" in str(overflows[0])
    no_silent_gap(got)
    # After the overflow is reported, the subscription delivers again.
    bus.publish(status(1000))
    assert [g.job["id"] for g in drain(sub)] == [1000]


def test_a_reader_takes_a_burst_at_once_in_order_and_still_hears_of_an_overflow(drain):
    bus = EventBus()
    sub = bus.subscribe(maxsize=16, limit=3000)
    bus.publish_many([status(n) for n in range(1, 2001)] + [progress(2001)])
    got = sub.get_nowait(5000)
    assert [g.job["id"] for g in got] == list(range(1, 2001))  # the late progress gave way
    assert sub.get_nowait(10) == []
    bus.publish_many([status(n) for n in range(1, 3002)])  # one past the limit
    with pytest.raises(Overflowed):
        sub.get_nowait(10)
    bus.publish(status(1))
    assert [g.job["id"] for g in drain(sub)] == [1]


def test_an_event_is_serialised_once_however_many_readers_ask():
    event = status(1)
    made = []
    for _ in range(200):
        event.once("ws", lambda: made.append(1) or "text")
    assert made == [1]
