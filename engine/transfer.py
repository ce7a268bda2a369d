"""The byte path of a download, on threads of its own, off the API's event loop.

Each connection of a job has a transfer thread that reads the response body straight into
buffers of the job's pool (pieces.py) and hands each full buffer to the job's writer thread,
which writes it at its offset (pwrite) and passes it to the job's hasher thread, which hashes it
once it lies at the hash frontier (a buffer ahead of it waits in memory); so reading, writing and
hashing overlap and nothing is read back but a resumed prefix. The connections take the parts in
file order (pieces.py). fsync runs on a fourth thread. The event loop only starts and awaits
these threads and reads counters.

Why http.client and a hasher thread (figures from bench/candidates.py): README, Performance.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import errors
from engine.throttle import LOW_SPEED_BYTES, Throttle

if TYPE_CHECKING:
    from engine.writer import FileWriter

log = logging.getLogger("civitai.transfer")

MULTIPART_MIN = 64 * 1024 * 1024
BUFFER_SIZE = 1024 * 1024  # one hand-over to the writer; a socket read fills at most this much
MIB = 1024 * 1024
WINDOW = 64 * MIB  # bytes ahead of the hash frontier a job may hold in memory (pieces.py)
PIECE_MAX = 16 * MIB  # a part of a file of several: one Range request each (keep-alive)
PIECE_MIN = 4 * MIB
PIECE_TAIL = 2 * MIB  # the smallest piece, at the end of a file
FLUSH_SECONDS = 0.1  # on a slow link a buffer is handed over at least this often
POLL_SECONDS = 0.25  # how often a thread waiting on another one looks at the stop flag
# The byte path yields the CPU to the API (and to the apps beside the daemon): its threads run at
# nice 10. bench/run.py scenario 4 (4 downloads x 4 connections on 2 cores, two runs each, other
# work on the machine): GET /api/status p50 11-13 ms, p99 78-84 ms at nice 0; p50 4 ms, p99
# 32-36 ms at nice 10. An idle machine gives the downloads all of its CPU either way.
TRANSFER_NICE = 10
T = TypeVar("T")


def lower_priority() -> None:
    """Run the calling thread at TRANSFER_NICE (Linux sets nice per thread; elsewhere a no-op)."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TRANSFER_NICE)
        except OSError:  # not allowed here: run at the daemon's own priority
            pass


class Stopped(Exception):
    """The job was stopped (cancelled, paused, shut down): a transfer thread ends here."""


@dataclass
class Part:
    idx: int
    start: int
    end: int | None  # inclusive; None while the size is unknown
    done: int = 0  # bytes committed to SQLite (and so on disk)
    written: int = 0  # bytes written to the file so far (only the writer thread changes it)
    received: int = 0  # bytes read from the network for this part (only its thread changes it)
    got: int = 0  # the offset up to which bytes have arrived (pieces.py sets it at the start)
    claim: int = 0  # the offset up to which a read under way may fill (pieces.py)

    @property
    def next_offset(self) -> int:
        return self.start + self.written

    @property
    def complete(self) -> bool:
        return self.end is not None and self.next_offset > self.end

    def row(self) -> dict[str, Any]:
        return {"idx": self.idx, "start": self.start, "end": self.end, "done": self.done}


def piece_size(connections: int) -> int:
    """The parts of a file fetched by several connections: each connection has one within the
    window with one to spare; whole MiB, so each part starts on a block (O_DIRECT)."""
    return max(PIECE_MIN, min(PIECE_MAX, WINDOW // (connections + 1)) // MIB * MIB)


def split(size: int | None, connections: int, first_end: int | None = None) -> list[Part]:
    """The parts of a file, in file order. `first_end`: the first part was already asked for
    up to there."""
    if not size or size < MULTIPART_MIN or connections <= 1:
        return [Part(0, 0, size - 1 if size else None)]
    step = piece_size(connections)
    starts = [0]
    if first_end is not None and first_end + 1 < size:
        at = first_end + 1
    else:
        at = _piece_at(size, step, connections)
    while at < size:
        starts.append(at)
        at += _piece_at(size - at, step, connections)
    return [
        Part(i, start, (starts[i + 1] if i + 1 < len(starts) else size) - 1)
        for i, start in enumerate(starts)
    ]


def _piece_at(left: int, step: int, connections: int) -> int:
    """Whole pieces, then smaller ones toward the end (a share of what is left), so the
    connections finish together rather than one fetching the last piece alone."""
    return max(PIECE_TAIL, min(step, left // (2 * connections) // MIB * MIB))


DIRECT_ALIGN = 4096  # O_DIRECT's alignment (writer.py): each part starts on a block


class Body(Protocol):
    """A response body being read on a transfer thread."""

    def readinto(self, view: memoryview) -> int: ...  # at most one socket read; 0 at the end


class Threads:
    """The transfer threads of one job. `run` calls a function on a thread of its own; when the
    awaiting task is cancelled, every thread of the job is told to stop (a flag checked per read,
    and the sockets shut down so a blocked read returns) and the task waits for its thread to end:
    a transfer thread never outlives its job."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._aborts: dict[int, Callable[[], None]] = {}
        self._count = 0

    def watch(self, key: int, abort: Callable[[], None]) -> None:
        """`abort` (shutting a socket down) runs when the job stops; at once if it already has."""
        with self._lock:
            self._aborts[key] = abort
            stopped = self.stop.is_set()
        if stopped:
            abort()

    def unwatch(self, key: int) -> None:
        with self._lock:
            self._aborts.pop(key, None)

    def halt(self) -> None:
        with self._lock:
            self.stop.set()
            aborts = list(self._aborts.values())
        for abort in aborts:
            try:
                abort()
            except OSError:
                pass

    async def run(self, label: str, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if done.cancelled():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        def target() -> None:
            lower_priority()
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        self._count += 1
        thread = threading.Thread(target=target, name=f"{self.name}-{label}-{self._count}")
        thread.start()
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            self.halt()
            while not done.done():
                try:
                    await asyncio.shield(done)
                except asyncio.CancelledError:
                    continue
                except BaseException:  # noqa: BLE001, S110 - the thread's own end after a stop
                    break
            if done.done() and not done.cancelled() and done.exception() is None:
                closer = getattr(done.result(), "close", None)
                if closer is not None:
                    closer()  # a connection opened for a job that no longer wants it
            raise


def pump(
    body: Body,
    part: Part,
    writer: FileWriter,
    *,
    throttle: Throttle,
    stop: threading.Event,
    timeout: float,
    check_first: Callable[[memoryview], None],
) -> bool:
    """Copy a body into `part` (on a transfer thread); True when the body ended before the part
    did (or, for a part of unknown size, at all). Returns only once every buffer it handed over
    has been written, so `part.written` is final; raises the writer's error, Stopped on a stop,
    and errors.NetworkError for a stall."""
    pieces = writer.pieces
    written: queue.SimpleQueue[None] = queue.SimpleQueue()  # one per buffer the writer wrote
    handed = 0
    buf: memoryview | None = None
    throttle.joined(+1)
    offset = part.next_offset
    window_start, window_bytes = time.monotonic(), 0
    first = offset == 0
    try:
        while True:
            buf = pieces.buffer(part, stop, lambda: writer.error)
            fill, ended = 0, False
            handed_at = time.monotonic()
            while fill < BUFFER_SIZE:
                want = min(BUFFER_SIZE - fill, throttle.read_size(BUFFER_SIZE))
                want = pieces.claim(part, offset + fill, want)  # a steal may end the part sooner
                if want <= 0:
                    break
                if stop.is_set():
                    raise Stopped()
                n = body.readinto(buf[fill : fill + want])
                if stop.is_set():
                    raise Stopped()
                if n == 0:
                    ended = True
                    break
                if first:
                    check_first(buf[:n])
                    first = False
                fill += n
                part.got = offset + fill
                part.received += n
                throttle.take(n, stop)
                window_bytes += n
                now = time.monotonic()
                if now - window_start >= timeout and not throttle.starves():
                    if window_bytes < LOW_SPEED_BYTES * timeout:
                        raise errors.NetworkError(
                            f"the connection stalled: {window_bytes} bytes in {timeout:g} s"
                        )
                    window_start, window_bytes = now, 0
                if now - handed_at >= FLUSH_SECONDS:
                    break
            if fill:
                writer.put(part, buf, fill, offset, written)
                handed += 1
                offset += fill
            else:
                pieces.give_back(buf)
            buf = None
            if ended:
                return True
            if part.end is not None and offset > part.end:
                return False
    finally:
        throttle.joined(-1)
        if buf is not None:
            pieces.give_back(buf)
        for _ in range(handed):  # every handed-over buffer written (the hasher may hold it)
            written.get()
        if writer.error is not None and not stop.is_set():
            raise writer.error


async def run_together(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the parts' fetches as tasks until all are done: the first error stops the others and
    is raised (in a group) once they have all stopped. A cancel of the awaiting task always wins,
    even one that arrives while the others are stopping after an error (a TaskGroup of Python
    3.11 would swallow it and let the job retry instead of ending)."""
    tasks = [asyncio.create_task(c) for c in coros]
    cancelled = False
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        cancelled = True
    if cancelled or any(t.done() and not t.cancelled() and t.exception() for t in tasks):
        for t in tasks:
            t.cancel()
    while not all(t.done() for t in tasks):  # every part stops before the file is closed
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()
    failures = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
    if failures:
        raise BaseExceptionGroup("a part failed", failures)
