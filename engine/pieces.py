"""Which piece of a file each connection fetches next, and the buffers they fill.

A file of several parts is fetched in file order: each connection takes the lowest part nobody
has taken yet, as long as that part ends within WINDOW bytes of the hash frontier, so every byte
that arrives ahead of the frontier waits in memory (never more than the window) and the hasher
takes it from there instead of reading the file back. A connection that finds the next part out
of the window while the part at the frontier is still coming (a slow connection holds it) takes
the upper half of what is left of that part: the slow one stops short, and the window moves on.
"""

from __future__ import annotations

import bisect
import mmap
import threading
import time
from collections.abc import Callable

from engine.transfer import BUFFER_SIZE, POLL_SECONDS, Part, Stopped, piece_size

WINDOW = 64 * 1024 * 1024  # bytes ahead of the hash frontier a job may hold in memory
RESERVE = 4  # buffers only the connection at the frontier may take: it can always go on
ONE_STREAM = 8  # buffers of a file of one part, besides the reserve
STEAL_MIN = 2 * BUFFER_SIZE  # a steal leaves at least this much to each side
# A connection waits this long for the window to open before it steals: on a fast link the
# frontier moves on in a moment, and a split would cost a request (and bytes sent for nothing).
STEAL_WAIT = 0.5


class Pieces:
    """The parts of one file (sorted by start; a steal splits one in two), which of them are
    taken, the hash frontier, and a pool of page-aligned buffers shared by the connections."""

    def __init__(self, parts: list[Part], window: int = WINDOW, connections: int = 1) -> None:
        parts.sort(key=lambda p: p.start)  # in place: the writer and the progress share the list
        self.parts = parts
        self.window = window
        self.piece = piece_size(connections)
        self.cond = threading.Condition()
        self.hashed = 0  # the hasher's frontier, as it last told
        self.layout = 0  # bumped by each split: the database's rows of the parts are stale
        self.steals = 0
        self._taken: set[int] = set()
        self._low = 0  # index of the lowest part not yet wholly received
        self._free: list[memoryview] = []
        self._made = 0
        # one part holds nothing back for the hasher: a few buffers keep reading, writing and
        # hashing going at once (more only cost memory while the hasher is behind)
        self._cap = (window // BUFFER_SIZE if len(parts) > 1 else ONE_STREAM) + RESERVE
        for p in parts:
            p.got = p.claim = p.next_offset

    # Parts --------------------------------------------------------------------------------

    def take(self, part: Part) -> None:
        """`part` is being fetched (the first one, whose answer came with the file's size)."""
        with self.cond:
            self._taken.add(part.idx)

    def next_part(self, stop: threading.Event) -> Part | None:
        """The part a connection fetches next, waiting while the window is full; None when
        every part is taken."""
        blocked = time.monotonic()
        with self.cond:
            while True:
                if stop.is_set():
                    raise Stopped()
                part = next(
                    (p for p in self.parts if p.idx not in self._taken and not p.complete), None
                )
                if part is None:
                    return None
                if self._front() is part or (
                    part.end is not None and part.end < self.hashed + self.window
                ):
                    self._taken.add(part.idx)
                    return part
                waited = time.monotonic() - blocked
                if waited >= STEAL_WAIT and (stolen := self._steal()) is not None:
                    return stolen
                self.cond.wait(max(0.01, min(POLL_SECONDS, STEAL_WAIT - waited)))

    def _front(self) -> Part | None:
        """The lowest part not yet wholly received: its bytes are hashed as soon as written."""
        while self._low < len(self.parts):
            p = self.parts[self._low]
            if p.end is None or p.got <= p.end:
                return p
            self._low += 1
        return None

    def _steal(self) -> Part | None:
        """Split the part at the frontier, being fetched by another connection: the caller
        takes the upper half of what is left of it (no further than the window reaches)."""
        victim = self._front()
        if victim is None or victim.end is None or victim.idx not in self._taken:
            return None
        if self.hashed + 2 * BUFFER_SIZE < victim.got:
            return None  # the hasher is behind, not that connection: a split would not help
        left = victim.end + 1 - victim.claim
        if left < 2 * STEAL_MIN:
            return None
        cut = victim.claim + left // 2
        cut += -cut % BUFFER_SIZE  # on a buffer's edge: the thief writes past the page cache
        if victim.end + 1 - cut < STEAL_MIN:
            return None
        last = min(victim.end, cut + self.piece - 1, self.hashed + self.window - 1)
        if last + 1 - cut < STEAL_MIN:
            return None
        end, victim.end = victim.end, cut - 1
        thief = self._insert(cut, last)
        if last < end:
            self._insert(last + 1, end)  # the rest goes back to be taken in its turn
        self._taken.add(thief.idx)
        self.layout += 1
        self.steals += 1
        return thief

    def _insert(self, start: int, end: int) -> Part:
        part = Part(max(p.idx for p in self.parts) + 1, start, end)
        part.got = part.claim = start
        at = bisect.bisect_left([p.start for p in self.parts], start)
        self.parts.insert(at, part)
        return part

    def claim(self, part: Part, at: int, want: int) -> int:
        """How much of `want` bytes from `at` a read may fill: never past the part's end, which
        a steal may move back, but never behind a read already under way."""
        with self.cond:
            if part.end is not None:
                want = min(want, part.end + 1 - at)
            part.claim = at + max(0, want)
            return want

    def advanced(self, hashed: int) -> None:
        """The hasher's frontier moved: parts that did not fit the window may now."""
        with self.cond:
            self.hashed = hashed
            self.cond.notify_all()

    # Buffers ------------------------------------------------------------------------------

    def buffer(
        self, part: Part, stop: threading.Event, failed: Callable[[], BaseException | None]
    ) -> memoryview:
        """A free buffer; the last RESERVE go only to the part at the frontier, so a buffer held
        for a later part never keeps the frontier from moving."""
        with self.cond:
            while True:
                if (error := failed()) is not None:
                    raise error
                if stop.is_set():
                    raise Stopped()
                spare = len(self._free) + self._cap - self._made
                if spare > RESERVE or (spare > 0 and self._front() is part):
                    if self._free:
                        return self._free.pop()
                    self._made += 1
                    return memoryview(mmap.mmap(-1, BUFFER_SIZE))  # page-aligned, for O_DIRECT
                self.cond.wait(POLL_SECONDS)

    def give_back(self, buf: memoryview) -> None:
        with self.cond:
            self._free.append(buf)
            self.cond.notify_all()

    @property
    def buffers_made(self) -> int:
        """Buffers allocated so far: the job's memory for bytes in flight, in BUFFER_SIZE."""
        return self._made
