"""Transfer rates: one job's speed, and the whole daemon's current rate (SPEC §5, §6).

The current rate is bytes received over the last WINDOW seconds, from every job's progress: it
falls to 0 within WINDOW seconds of the last byte. It is not the average speed, which is the
bytes of completed jobs over the seconds they spent transferring (Store.completed_totals).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

PROGRESS_INTERVAL = 0.25  # at most 4 progress events a second per job
WINDOW = 3.0  # seconds the current rate looks back
HISTORY_SECONDS = 3600  # the Status chart's history: one sample a second, the last hour
SMOOTH_SECONDS = 8.0  # seconds a job's speed looks back: lumps of a slow link even out


class RateMeter:
    """Bytes/s over the last WINDOW seconds, summed over every job."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, n: int) -> None:
        if n > 0:
            self.samples.append((time.monotonic(), n))

    def rate(self) -> float:
        horizon = time.monotonic() - WINDOW
        while self.samples and self.samples[0][0] < horizon:
            self.samples.popleft()
        return sum(n for _, n in self.samples) / WINDOW


class SpeedMeter:
    """A job's bytes/s, smoothed: the bytes of the last SMOOTH_SECONDS over that time (or over
    the time since the first look, when that is shorter), a value at most every
    PROGRESS_INTERVAL. A link that sends in lumps reads as its steady rate, not as a value
    between silences of 0 (which the GUI shows as "–"); only a link silent for the whole window
    reads 0."""

    def __init__(self, total: RateMeter) -> None:
        self.samples: deque[tuple[float, int]] = deque()
        self.last_emit = 0.0
        self.total = total  # the daemon's: every byte this job receives counts there too

    def update(self, done: int) -> float | None:
        now = time.monotonic()
        if self.samples and done > self.samples[-1][1]:
            self.total.add(done - self.samples[-1][1])
        self.samples.append((now, done))  # the first: the baseline (a resume's bytes are old)
        while len(self.samples) > 2 and now - self.samples[1][0] >= SMOOTH_SECONDS:
            self.samples.popleft()
        if now - self.last_emit < PROGRESS_INTERVAL:
            return None
        self.last_emit = now
        t0, d0 = self.samples[0]
        return (done - d0) / max(now - t0, PROGRESS_INTERVAL)


class SpeedHistory:
    """The daemon's current rate once a second over the last hour, for the Status chart: kept
    here, so a page opened (or reloaded) later shows what happened before it."""

    def __init__(self, rate: Callable[[], float]) -> None:
        self.rate = rate
        self.samples: deque[tuple[float, float]] = deque(maxlen=HISTORY_SECONDS)

    async def run(self) -> None:
        """Sample until cancelled (the daemon's lifespan owns the task)."""
        while True:
            self.samples.append((round(time.time(), 1), round(self.rate(), 1)))
            await asyncio.sleep(1)

    def recent(self) -> list[list[float]]:
        """[unix time, bytes/s] pairs, oldest first."""
        return [[t, bps] for t, bps in self.samples]
