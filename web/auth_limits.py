"""Failed authentications, counted per client address (issue 23).

A wrong key (API header, the GUI's login form, the feed's `?token=`) counts against the address
it came from: past LIMIT in a WINDOW that starts at its first failure, every key from that
address is refused (429, `Retry-After`) without being checked until the window ends, the right
key too (else each refusal would still answer "wrong" and each success "right"). A right key
does not clear the count (the viewer key must not buy more guesses at the API key), and one
address's success or failure never touches another's. A session cookie is not counted: it is
signed, not guessed, and a stale tab must not lock its user out.

The address is the one uvicorn reports: behind the README's nginx, the browser's address from
`X-Forwarded-For` (uvicorn trusts that header from 127.0.0.1 and ::1 only). At most
MAX_ADDRESSES are tracked; past that (an attacker cycling addresses), new ones share one count,
so cycling neither grows the memory nor escapes the limit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("civitai.auth")

LIMIT = 10  # failures an address may have in a window; a person mistyping meets none of it
WINDOW = 60.0  # seconds from an address's first failure; also how often a limit is logged
MAX_ADDRESSES = 4096
OTHERS = "addresses beyond the first 4096"  # the count the rest share when the table is full


@dataclass
class _Count:
    start: float  # when this window began (the first failure in it)
    failures: int = 0
    refused: int = 0  # attempts refused since the last log line
    logged: float = -math.inf


class FailedAuths:
    """The counts of one daemon; plain memory, reset by a restart."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._counts: dict[str, _Count] = {}
        self._pruned = -math.inf

    def __len__(self) -> int:
        return len(self._counts)

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until `address` may present a key again; None when it may now. A
        refusal is counted for the log, which names the address at most once a window."""
        now = self.clock()
        count = self._counts.get(self._key(address, now))
        if count is None or now - count.start >= WINDOW or count.failures < LIMIT:
            return None
        count.refused += 1
        self._log(address, count, now)
        return max(1, math.ceil(count.start + WINDOW - now))

    def failed(self, address: str) -> None:
        """One wrong key from `address`."""
        now = self.clock()
        key = self._key(address, now)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = _Count(start=now)
        elif now - count.start >= WINDOW:
            count.start, count.failures, count.refused = now, 0, 0
        count.failures += 1
        if count.failures == LIMIT:
            self._log(address, count, now)

    def _key(self, address: str, now: float) -> str:
        room = MAX_ADDRESSES - 1  # one entry is kept for OTHERS
        if address in self._counts or len(self._counts) < room:
            return address
        if now - self._pruned >= 1.0:  # at most once a second, however fast addresses come
            self._pruned = now
            self._counts = {
                a: c for a, c in self._counts.items() if now - c.start < WINDOW or a == OTHERS
            }
        return address if len(self._counts) < room else OTHERS

    def _log(self, address: str, count: _Count, now: float) -> None:
        if now - count.logged < WINDOW:
            return
        count.logged = now
        who = OTHERS if address not in self._counts else address
        log.warning(
            "%d wrong keys from %s within %g s: its keys are refused for %d s (%d refused so far)",
            count.failures,
            who,
            WINDOW,
            max(1, math.ceil(count.start + WINDOW - now)),
            count.refused,
        )


def too_many(address: str, seconds: int) -> str:
    """The sentence a limited address gets."""
    return (
        f"Too many wrong keys from {address}: keys from this address are refused for "
        f"{seconds} s more"
    )
