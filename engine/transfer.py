"""The byte path of a download, on threads of its own, off the API's event loop.

Each connection of a job has a transfer thread that reads the response body straight into a few
preallocated buffers and hands each full buffer to the job's writer thread, which writes it at
its offset (pwrite) and passes it to the job's hasher thread, which hashes it when it lies at the
hash frontier; so reading, writing and hashing overlap. Other parts' bytes are read back from the
file once the frontier reaches them. fsync runs on a fourth thread. The event loop only
starts and awaits these threads and reads counters.

Why http.client and a hasher thread (figures from bench/candidates.py): README, Performance.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import hashlib
import logging
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import errors
import safefs
from engine.throttle import LOW_SPEED_BYTES, Throttle

log = logging.getLogger("civitai.transfer")

MULTIPART_MIN = 64 * 1024 * 1024
BUFFER_SIZE = 1024 * 1024  # one hand-over to the writer; a socket read fills at most this much
BUFFERS = 4  # per connection: one being filled, the others being written or hashed (4 MiB)
FLUSH_SECONDS = 0.1  # on a slow link a buffer is handed over at least this often
READ_BACK = 4 * 1024 * 1024
POLL_SECONDS = 0.25  # how often a thread waiting on another one looks at the stop flag
# The byte path yields the CPU to the API (and to the apps beside the daemon): its threads run at
# nice 10. bench/run.py scenario 4 (4 downloads x 4 connections on 2 cores, two runs each, other
# work on the machine): GET /api/status p50 11-13 ms, p99 78-84 ms at nice 0; p50 4 ms, p99
# 32-36 ms at nice 10. An idle machine gives the downloads all of its CPU either way.
TRANSFER_NICE = 10
# Writes go past the page cache (O_DIRECT, page-aligned buffers, aligned offsets): no cost of
# taking fresh pages, and a 10 GB download does not evict the models ComfyUI keeps cached.
# 1 GiB of 1 MiB pwrites + fsync on this VM, 3 rounds: buffered 0.43-2.75 s wall, 0.21-2.34 s
# system CPU; O_DIRECT 0.44-0.51 s, 0.07 s. Unaligned writes (a tail, a slow link's partial
# buffer, a resume mid-block) go through the cache; other parts' bytes are read back from disk.
DIRECT_ALIGN = 4096
O_DIRECT = getattr(os, "O_DIRECT", 0)

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

    @property
    def next_offset(self) -> int:
        return self.start + self.written

    @property
    def complete(self) -> bool:
        return self.end is not None and self.next_offset > self.end

    def row(self) -> dict[str, Any]:
        return {"idx": self.idx, "start": self.start, "end": self.end, "done": self.done}


def split(size: int | None, connections: int, first_end: int | None = None) -> list[Part]:
    """The parts of a file. `first_end`: the first part was already asked for up to there."""
    if not size or size < MULTIPART_MIN or connections <= 1:
        return [Part(0, 0, size - 1 if size else None)]
    if first_end is not None and first_end + 1 < size:
        rest = size - first_end - 1
        step = _block_multiple(-(-rest // (connections - 1)))
        return [Part(0, 0, first_end)] + [
            Part(i + 1, first_end + 1 + i * step, min(size, first_end + 1 + (i + 1) * step) - 1)
            for i in range(connections - 1)
            if i * step < rest
        ]
    step = _block_multiple(-(-size // connections))
    return [
        Part(i, i * step, min(size, (i + 1) * step) - 1)
        for i in range(connections)
        if i * step < size
    ]


def _block_multiple(n: int) -> int:
    """`n` rounded up to whole blocks, so each part starts aligned and is written past the cache."""
    return -(-n // DIRECT_ALIGN) * DIRECT_ALIGN


def _pwrite(fd: int, data: memoryview, offset: int) -> None:
    while data:
        if hasattr(os, "pwrite"):
            n = os.pwrite(fd, data, offset)
        else:  # Windows: safe, as one thread does all of a file's writes
            os.lseek(fd, offset, os.SEEK_SET)
            n = os.write(fd, data)
        data = data[n:]
        offset += n


def _pread(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


class Body(Protocol):
    """A response body being read on a transfer thread."""

    def readinto(self, view: memoryview) -> int: ...  # at most one socket read; 0 at the end


_Item = tuple[Part, memoryview, int, int, "queue.SimpleQueue[memoryview]"]


class FileWriter:
    """All writes and hashing of one .part file, in hand-over order: a writer thread writes each
    buffer, then hands it to a hasher thread, so writing one buffer and hashing the one before run
    at the same time (both release the GIL)."""

    def __init__(
        self, path: Path, parts: list[Part], name: str, stop: threading.Event | None = None
    ) -> None:
        self.path = path
        self.parts = parts
        self.sha = hashlib.sha256()
        self.hashed = 0
        self._hp = 0  # index of the part holding the hash frontier
        self.fd = -1
        self.dfd = -1  # the same file opened with O_DIRECT, or -1
        self.direct_bytes = 0  # written past the page cache
        self.read_back = 0  # hashed from the file rather than from a buffer
        self._rbuf: mmap.mmap | None = None  # page-aligned, for reading back past the cache
        self.error: BaseException | None = None
        self.sync_error: OSError | None = None
        self.stop = stop  # a job being stopped: the hasher's catch-up ends early
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._hashes: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        # per part, the offsets of buffers handed over and not yet seen by the hasher, in order:
        # the catch-up stops at the first of them, whose bytes come from memory, not from disk
        self._pending: dict[int, collections.deque[int]] = {}
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer")
        self._hasher = threading.Thread(target=self._hash_run, name=f"{name}-hasher")
        # open, fsync, finish, close: one thread, so no fsync runs on a closed descriptor.
        self._io = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"{name}-sync", initializer=lower_priority
        )

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def open(self, truncate_to: int | None, fresh: bool) -> None:
        """Open the .part, never through a link; `fresh`: a new file (O_EXCL)."""
        self.fd = safefs.open_rw(self.path, new=fresh)
        if truncate_to is not None:
            os.ftruncate(self.fd, truncate_to)
        if O_DIRECT:
            try:  # the very file of self.fd (no path look-up, so no link can come between)
                self.dfd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDWR | O_DIRECT)
            except OSError:
                self.dfd = -1  # no /proc, or a file system without O_DIRECT (tmpfs): the cache
        self._thread.start()
        self._hasher.start()

    def put(
        self, part: Part, buf: memoryview, size: int, offset: int, back: queue.SimpleQueue
    ) -> None:
        """Hand the first `size` bytes of `buf` over; `buf` comes back on `back` once written
        (or dropped after a write error)."""
        self._pending.setdefault(part.idx, collections.deque()).append(offset)
        self._queue.put((part, buf, size, offset, back))

    def _run(self) -> None:
        """The writer thread: write each buffer at its offset, then pass it to the hasher."""
        lower_priority()
        while (item := self._queue.get()) is not None:
            part, buf, size, offset, back = item
            try:
                if self.error is None:
                    self._write(buf[:size], offset)
                    part.written += size
            except BaseException as exc:  # noqa: BLE001 - handed to the transfer threads
                self.error = exc
            self._hashes.put(item)
        self._hashes.put(None)

    def _write(self, data: memoryview, offset: int) -> None:
        if self.dfd >= 0 and not (offset | len(data)) % DIRECT_ALIGN:
            try:
                _pwrite(self.dfd, data, offset)
                self.direct_bytes += len(data)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                os.close(self.dfd)  # this device wants another alignment: use the cache
                self.dfd = -1
        _pwrite(self.fd, data, offset)

    def _hash_run(self) -> None:
        """The hasher thread: hash each written buffer that lies at the hash frontier, catch up
        from the page cache past it, then give the buffer back to its transfer thread."""
        lower_priority()
        while (item := self._hashes.get()) is not None:
            part, buf, size, offset, back = item
            try:
                if self.error is None and offset == self.hashed:
                    self.sha.update(buf[:size])
                    self.hashed += size
            except BaseException as exc:  # noqa: BLE001 - handed to the transfer threads
                self.error = exc
            finally:
                self._pending[part.idx].popleft()
                back.put(buf)  # before any catch-up: reading goes on while a prefix is hashed
            try:
                if self.error is None:
                    self._catch_up()
            except BaseException as exc:  # noqa: BLE001 - handed to the transfer threads
                self.error = exc

    def _catch_up(self) -> None:
        """Hash what is already on disk at the hash frontier (other parts' bytes, or a resumed
        prefix), read back once, up to the first buffer still on its way here."""
        while self._hp < len(self.parts):
            part = self.parts[self._hp]
            frontier = part.next_offset
            pending = self._pending.get(part.idx)
            if pending:  # its next bytes are on their way to the hasher in a buffer
                try:
                    frontier = min(frontier, pending[0])
                except IndexError:  # seen just now: the frontier as written holds
                    pass
            while self.hashed < frontier:
                if self.stop is not None and self.stop.is_set():
                    return  # stopping: the rest is hashed by the next run, from disk
                chunk = self._read_back(min(READ_BACK, frontier - self.hashed))
                if not chunk:
                    return
                self.sha.update(chunk)
                self.hashed += len(chunk)
                self.read_back += len(chunk)
            if not part.complete or self.hashed < part.next_offset:
                return  # the rest of this part is still to come, or on its way in a buffer
            self._hp += 1

    def _read_back(self, size: int) -> bytes | memoryview:
        """Bytes at the hash frontier from the file: past the page cache too where aligned."""
        whole = size - size % DIRECT_ALIGN
        if self.dfd >= 0 and whole and not self.hashed % DIRECT_ALIGN:
            if self._rbuf is None:
                self._rbuf = mmap.mmap(-1, READ_BACK)
            try:
                n = os.preadv(self.dfd, [memoryview(self._rbuf)[:whole]], self.hashed)
                return memoryview(self._rbuf)[:n]
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        return _pread(self.fd, size, self.hashed)

    def sync(self) -> list[dict[str, Any]]:
        """Note each part's written offset, then fsync: those offsets are now safe to commit.
        (Writes that land during the fsync are counted at the next checkpoint.)"""
        offsets = [{"idx": p.idx, "done": p.written} for p in self.parts]
        self._fsync()
        return offsets

    def _fsync(self) -> None:
        """fsync, and once it has failed, fail for good: Linux may drop the pages a failed fsync
        could not write and let the next one succeed, so no later offset may be committed."""
        if self.sync_error is not None:
            raise self.sync_error
        try:
            os.fsync(self.fd)
        except OSError as exc:
            self.sync_error = exc
            raise

    def finish(self) -> str:
        """After every transfer thread has ended: hash the rest, fsync; the SHA256."""
        self._stop_thread()
        if self.error is not None:
            raise self.error
        self._catch_up()
        self._fsync()
        return self.sha.hexdigest()

    def _stop_thread(self) -> None:
        """End the writer and then the hasher, once each has done what was handed over."""
        if self._thread.is_alive():
            self._queue.put(None)  # the writer passes the end on to the hasher
            self._thread.join()
        if self._hasher.is_alive():
            self._hasher.join()

    def close(self) -> None:
        self._stop_thread()
        if self.dfd >= 0:
            os.close(self.dfd)
            self.dfd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def shutdown(self) -> None:
        self._io.shutdown(wait=True)


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
    back: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
    for _ in range(BUFFERS):
        back.put(memoryview(mmap.mmap(-1, BUFFER_SIZE)))  # page-aligned, for O_DIRECT
    held = 0  # 1 while this thread holds a buffer; the others are free or with the writer
    throttle.joined(+1)
    offset = part.next_offset
    window_start, window_bytes = time.monotonic(), 0
    first = offset == 0
    try:
        while True:
            buf = _next_buffer(back, writer, stop)
            held = 1
            fill, ended = 0, False
            handed = time.monotonic()
            while fill < BUFFER_SIZE:
                want = min(BUFFER_SIZE - fill, throttle.read_size(BUFFER_SIZE))
                if part.end is not None:
                    want = min(want, part.end + 1 - offset - fill)
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
                if now - handed >= FLUSH_SECONDS:
                    break
            if fill:
                writer.put(part, buf, fill, offset, back)
                offset += fill
            else:
                back.put(buf)
            held = 0
            if ended:
                return True
            if part.end is not None and offset > part.end:
                return False
    finally:
        throttle.joined(-1)
        for _ in range(BUFFERS - held):  # every buffer back: all handed-over bytes written
            back.get()
        if writer.error is not None and not stop.is_set():
            raise writer.error


def _next_buffer(
    back: queue.SimpleQueue[memoryview], writer: FileWriter, stop: threading.Event
) -> memoryview:
    while True:
        if writer.error is not None:
            raise writer.error
        if stop.is_set():
            raise Stopped()
        try:
            return back.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue


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
