"""The download rate cap shared by every connection of every job (config `throttle`)."""

from __future__ import annotations

import threading
import time

READ_FLOOR = 1024  # bytes: the smallest read under a throttle
LOW_SPEED_BYTES = 1024  # bytes/s: below this for `timeout` seconds a connection counts as stalled


class Throttle:
    """One token bucket shared by every transfer thread: `throttle` bytes/s in total."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.last = time.monotonic()
        self.lock = threading.Lock()
        self.streams = 0  # connections sharing the bucket now

    def set_rate(self, rate: int) -> None:
        """A new cap, for the transfers running now too."""
        with self.lock:
            if self.rate <= 0:
                self.tokens, self.last = float(rate), time.monotonic()
            self.rate = rate
            self.tokens = min(self.tokens, float(rate))

    def joined(self, change: int) -> None:
        """A connection starts (+1) or ends (-1) sharing the bucket."""
        with self.lock:
            self.streams += change

    def starves(self) -> bool:
        """Whether the cap, shared by the connections running now, leaves each of them below
        the lowest speed: then a slow connection is the throttle's doing, not a stalled link."""
        return 0 < self.rate < LOW_SPEED_BYTES * 8 * max(1, self.streams)

    def take(self, n: int, stop: threading.Event) -> None:
        """Account for `n` bytes; sleep (waking early on `stop`) while the bucket is in debt."""
        if self.rate <= 0:
            return
        with self.lock:
            rate = self.rate  # read once: set_rate may change it from another thread
            if rate <= 0:
                return
            now = time.monotonic()
            self.tokens = min(rate, self.tokens + (now - self.last) * rate)
            self.last = now
            self.tokens -= n
            wait = -self.tokens / rate
        if wait > 0:
            stop.wait(wait)

    def read_size(self, most: int) -> int:
        """Under a throttle, smaller reads keep the flow (and the progress) smooth: an eighth of
        a second's worth, and never more than READ_FLOOR bytes below that, so even a cap of
        1 KB/s shows new bytes every second (the bytes of a read wait out its share of the cap
        before they are handed over). Unthrottled, the reads stay whole."""
        return most if self.rate <= 0 else max(READ_FLOOR, min(most, self.rate // 8))
