"""The writes and hashing of one .part file, on a writer thread and a hasher thread of their own
(transfer.py hands them the buffers its transfer threads fill; pieces.py lends the buffers)."""

from __future__ import annotations

import asyncio
import collections
import errno
import hashlib
import mmap
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import safefs
from engine.pieces import Pieces
from engine.transfer import Part, lower_priority

READ_BACK = 4 * 1024 * 1024
T = TypeVar("T")
# Writes go past the page cache (O_DIRECT, page-aligned buffers, aligned offsets): no cost of
# taking fresh pages, and a 10 GB download does not evict the models ComfyUI keeps cached.
# 1 GiB of 1 MiB pwrites + fsync on this VM, 3 rounds: buffered 0.43-2.75 s wall, 0.21-2.34 s
# system CPU; O_DIRECT 0.44-0.51 s, 0.07 s. Unaligned writes (a tail, a slow link's partial
# buffer, a resume mid-block) go through the cache; only a resumed prefix is read back.
DIRECT_ALIGN = 4096
O_DIRECT = getattr(os, "O_DIRECT", 0)


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


_Item = tuple[Part, memoryview, int, int, "queue.SimpleQueue[None]"]


class FileWriter:
    """All writes and hashing of one .part file: a writer thread writes each buffer in hand-over
    order, then hands it to a hasher thread, which hashes the buffers in file order (holding
    those ahead of the frontier), so writing and hashing run at the same time (both release the
    GIL) and no byte that came in a buffer is read back."""

    def __init__(
        self,
        path: Path,
        parts: list[Part],
        name: str,
        stop: threading.Event | None = None,
        connections: int = 1,
    ) -> None:
        self.path = path
        self.pieces = Pieces(parts, connections=connections)
        self.sha = hashlib.sha256()
        self.hashed = 0
        self._hp = 0  # index of the part holding the hash frontier
        self.fd = -1
        self.dfd = -1  # the same file opened with O_DIRECT, or -1
        self.direct_bytes = 0  # written past the page cache
        self.read_back = 0  # hashed from the file rather than from a buffer
        self.held_most = 0  # the most buffers held ahead of the hash frontier at once
        self._held: dict[int, _Item] = {}  # by offset: written, waiting for the frontier
        self._rbuf: mmap.mmap | None = None  # page-aligned, for reading back past the cache
        self.error: BaseException | None = None
        self.sync_error: OSError | None = None
        self.stop = stop  # a job being stopped: the hasher's catch-up ends early
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._hashes: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        # per part, the offsets of buffers handed over and not yet hashed, in order: the
        # catch-up stops at the first of them, whose bytes come from memory, not from disk
        self._pending: dict[int, collections.deque[int]] = {}
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer")
        self._hasher = threading.Thread(target=self._hash_run, name=f"{name}-hasher")
        # open, fsync, finish, close: one thread, so no fsync runs on a closed descriptor.
        self._io = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"{name}-sync", initializer=lower_priority
        )

    @property
    def parts(self) -> list[Part]:
        return self.pieces.parts

    @parts.setter
    def parts(self, parts: list[Part]) -> None:
        self.pieces.parts = parts

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
        self, part: Part, buf: memoryview, size: int, offset: int, written: queue.SimpleQueue
    ) -> None:
        """Hand the first `size` bytes of `buf` over; `written` hears once they are written (or
        dropped after a write error); `buf` goes back to the pool once hashed."""
        self._pending.setdefault(part.idx, collections.deque()).append(offset)
        self._queue.put((part, buf, size, offset, written))

    def _run(self) -> None:
        """The writer thread: write each buffer at its offset, then pass it to the hasher."""
        lower_priority()
        while (item := self._queue.get()) is not None:
            part, buf, size, offset, written = item
            try:
                if self.error is None:
                    self._write(buf[:size], offset)
                    part.written += size
            except BaseException as exc:  # noqa: BLE001 - handed to the transfer threads
                self.error = exc
            self._hashes.put(item)
            written.put(None)
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
        """The hasher thread: hash each written buffer once the frontier reaches it (holding it
        until then), catching up from the file over a resumed prefix; a hashed buffer goes back
        to the pool."""
        lower_priority()
        while (item := self._hashes.get()) is not None:
            if self.error is not None:
                self.pieces.give_back(item[1])
                continue
            self._held[item[3]] = item
            self.held_most = max(self.held_most, len(self._held))
            try:
                self._advance()
            except BaseException as exc:  # noqa: BLE001 - handed to the transfer threads
                self.error = exc
        for item in self._held.values():  # stopped or failed: the rest is hashed next run
            self.pieces.give_back(item[1])
        self._held.clear()

    def _advance(self) -> None:
        """Hash all that lies at the frontier: held buffers, and resumed bytes on disk."""
        before = self.hashed
        while True:
            item = self._held.pop(self.hashed, None)
            if item is not None:
                part, buf, size, _, _ = item
                try:
                    self.sha.update(buf[:size])
                    self.hashed += size
                finally:
                    self._pending[part.idx].popleft()
                    self.pieces.give_back(buf)
                continue
            if not self._catch_up():
                break
        if self.hashed != before:
            self.pieces.advanced(self.hashed)

    def _catch_up(self) -> bool:
        """Hash what is already on disk at the hash frontier (a resumed prefix), read back once,
        up to the first buffer still on its way here; whether anything was hashed."""
        progressed = False
        while self._hp < len(self.parts):
            part = self.parts[self._hp]
            if part.end is not None and self.hashed > part.end:
                self._hp += 1  # hashed; a steal only ever splits a part past the frontier
                continue
            frontier = part.next_offset
            pending = self._pending.get(part.idx)
            if pending:  # its next bytes are on their way to the hasher in a buffer
                frontier = min(frontier, pending[0])
            while self.hashed < frontier:
                if self.stop is not None and self.stop.is_set():
                    return progressed  # stopping: the rest is hashed by the next run, from disk
                chunk = self._read_back(min(READ_BACK, frontier - self.hashed))
                if not chunk:
                    return progressed
                self.sha.update(chunk)
                self.hashed += len(chunk)
                self.read_back += len(chunk)
                progressed = True
            return progressed
        return progressed

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
        offsets = [{"idx": p.idx, "done": p.written} for p in list(self.parts)]
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
        self._advance()
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
