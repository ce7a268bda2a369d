"""Streaming one file to disk: Range parts, resume, hashing as bytes arrive, durable progress.

The bytes of a job go to `<filename>.part`. Large files are split into `connections` parts, each
fetched with its own Range request and written at its offset. All file I/O and hashing of a job
happen on one thread of its own (`FileWriter`), in order, so the event loop never blocks on disk.
Progress is made durable in this order: write, fsync, then commit each part's offset to SQLite;
after a crash every committed byte is on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpcore._async.http11 as _http11
import httpx

import errors
import safefs
from civitai import CivitaiClient, error_for, require_http, retry_after_seconds
from database import Store

log = logging.getLogger("civitai.downloader")


MULTIPART_MIN = 64 * 1024 * 1024
# Measured on loopback (bench/run.py, 1 GiB, one connection, tmpfs): 64 KiB socket reads and
# 1 MiB writes took 4.2 s; 1 MiB reads 3.4 s; plus 4 MiB writes 2.8 s; plus a 0.5 ms GIL switch
# interval (launch.py) 2.5 s. Memory: at most two batches per connection.
WRITE_BATCH = 4 * 1024 * 1024
READ_SIZE = 1024 * 1024
FLUSH_SECONDS = 0.1

# httpcore reads a response 64 KiB at a time, and each read costs a trip through h11, httpcore,
# anyio and the event loop; 1 MiB reads cut that cost sixteenfold (figures above).
_http11.AsyncHTTP11Connection.READ_NUM_BYTES = READ_SIZE
READ_BACK = 4 * 1024 * 1024
# Progress is made durable 4 times a second (fsync on its own thread, so writes never wait):
# a crash re-fetches at most about a quarter second of data per connection.
CHECKPOINT_SECONDS = 0.25
LOW_SPEED_BYTES = 1024  # bytes/s: below this for `timeout` seconds a connection counts as stalled
REFUSED = {400, 401, 403, 404, 410}


@dataclass
class Part:
    idx: int
    start: int
    end: int | None  # inclusive; None while the size is unknown
    done: int = 0  # bytes committed to SQLite (and so on disk)
    written: int = 0  # bytes written to the file so far

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
        step = -(-rest // (connections - 1))
        return [Part(0, 0, first_end)] + [
            Part(i + 1, first_end + 1 + i * step, min(size, first_end + 1 + (i + 1) * step) - 1)
            for i in range(connections - 1)
            if i * step < rest
        ]
    step = -(-size // connections)
    return [
        Part(i, i * step, min(size, (i + 1) * step) - 1)
        for i in range(connections)
        if i * step < size
    ]


def _pwrite(fd: int, data: memoryview, offset: int) -> int:
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows: safe, as one thread does all of a file's I/O
    return os.write(fd, data)


def _pwritev(fd: int, chunks: list[bytes], offset: int, size: int) -> None:
    if hasattr(os, "pwritev") and len(chunks) <= 512:  # IOV_MAX is 1024 on Linux
        written = os.pwritev(fd, chunks, offset)
        if written == size:
            return
        data = memoryview(b"".join(chunks))[written:]  # a short write: finish the rest
        offset += written
    else:
        data = memoryview(b"".join(chunks))
    while data:
        n = _pwrite(fd, data, offset)
        data = data[n:]
        offset += n


def _pread(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


class FileWriter:
    """All I/O and hashing of one .part file, run on its own thread, in submission order."""

    def __init__(self, path: Path, parts: list[Part]) -> None:
        self.path = path
        self.parts = parts
        self.sha = hashlib.sha256()
        self.hashed = 0
        self._hp = 0  # index of the part holding the hash frontier
        self.fd = -1
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        # fsync on a thread of its own, so writes go on while the disk catches up.
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncer")

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def checkpoint(self) -> list[dict[str, Any]]:
        return await asyncio.get_running_loop().run_in_executor(self._syncer, self.sync)

    def open(self, truncate_to: int | None, fresh: bool) -> None:
        """Open the .part, never through a link; `fresh`: a new file (O_EXCL)."""
        self.fd = safefs.open_rw(self.path, new=fresh)
        if truncate_to is not None:
            os.ftruncate(self.fd, truncate_to)

    def write(self, part: Part, offset: int, chunks: list[bytes]) -> None:
        """Write the chunks at `offset` (one pwritev, no joining copy) and hash them in order."""
        size = sum(len(c) for c in chunks)
        _pwritev(self.fd, chunks, offset, size)
        if offset == self.hashed:
            for chunk in chunks:
                self.sha.update(chunk)
            self.hashed += size
        part.written += size
        self._catch_up()

    def _catch_up(self) -> None:
        """Hash what is already on disk at the hash frontier (other parts' bytes, or a resumed
        prefix), read back once from the page cache."""
        while self._hp < len(self.parts):
            part = self.parts[self._hp]
            frontier = part.next_offset
            while self.hashed < frontier:
                chunk = _pread(self.fd, min(READ_BACK, frontier - self.hashed), self.hashed)
                if not chunk:
                    return
                self.sha.update(chunk)
                self.hashed += len(chunk)
            if not part.complete:
                return
            self._hp += 1

    def sync(self) -> list[dict[str, Any]]:
        """Note each part's written offset, then fsync: those offsets are now safe to commit.
        (Writes that land during the fsync are counted at the next checkpoint.)"""
        offsets = [{"idx": p.idx, "done": p.written} for p in self.parts]
        os.fsync(self.fd)
        return offsets

    def finish(self) -> str:
        self._catch_up()
        os.fsync(self.fd)
        return self.sha.hexdigest()

    def close(self) -> None:
        self._syncer.shutdown(wait=True)  # no fsync may run on a closed (or reused) descriptor
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


class Throttle:
    """One token bucket shared by every worker: `throttle` bytes/s in total."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.last = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        async with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
            self.last = now
            self.tokens -= n
            if self.tokens < 0:
                await asyncio.sleep(-self.tokens / self.rate)


class Link:
    """Where a job's bytes come from. For Civitai: the signed CDN URL, resolved once and shared
    by the parts and retries of one file, and resolved afresh only when the CDN refuses it."""

    def __init__(self, civitai: CivitaiClient, download_url: str) -> None:
        self.civitai = civitai
        self.download_url = download_url
        self.via_civitai = civitai.is_civitai_url(download_url) or download_url.startswith(
            civitai.base_url
        )
        self.url: str | None = None
        self.generation = 0
        self.lock = asyncio.Lock()

    async def get(self) -> tuple[str, int]:
        async with self.lock:
            if self.url is None:
                if self.via_civitai:
                    self.url = await self.civitai.signed_link(self.download_url)
                else:
                    self.url = self.download_url
            return self.url, self.generation

    async def refused(self, generation: int) -> bool:
        """Forget a refused link; False when it cannot be renewed (not a Civitai link)."""
        async with self.lock:
            if not self.via_civitai:
                return False
            if generation == self.generation:
                self.url = None
                self.generation += 1
            return True


@dataclass
class Result:
    sha256: str
    size: int


def looks_like_a_page(content_type: str, first: bytes) -> bool:
    """A web page or an error document, by its type or by its first bytes: never a model."""
    ct = content_type.lower()
    if "text/html" in ct or "application/json" in ct or "text/xml" in ct:
        return True
    head = first[:64].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b'{"error"'))


class Download:
    """Fetch one job's file into its .part; every call to `run` resumes from what is on disk."""

    def __init__(
        self,
        *,
        job_id: int,
        store: Store,
        http: httpx.AsyncClient,
        civitai: CivitaiClient,
        link: Link,
        part_path: Path,
        validator: str | None,
        expected_size: int | None,
        connections: int,
        timeout: float,
        throttle: Throttle,
        on_progress: Callable[[int, int | None], None],
        on_start: Callable[[dict[str, Any]], None],
    ) -> None:
        self.job_id = job_id
        self.store = store
        self.http = http
        self.civitai = civitai
        self.link = link
        self.part_path = part_path
        self.validator = validator
        self.expected_size = expected_size
        self.connections = connections
        self.timeout = timeout
        self.throttle = throttle
        self.on_progress = on_progress
        self.on_start = on_start
        self.parts: list[Part] = []
        self.total: int | None = None
        self.fetched = 0  # bytes received over the network by this object
        # A deliberate throttle below the lowest speed must not look like a stalled link.
        self.watch_speed = not (0 < throttle.rate < LOW_SPEED_BYTES * 8)

    # Public -----------------------------------------------------------------------------

    async def run(self) -> Result:
        rows = await self.store.get_parts(self.job_id)
        await asyncio.to_thread(safefs.refuse_link, self.part_path)
        if rows and await asyncio.to_thread(safefs.is_file, self.part_path):
            on_disk = (await asyncio.to_thread(os.lstat, self.part_path)).st_size
            self.parts = []
            for r in rows:
                # Never trust an offset past what the file holds (it was changed behind us).
                done = max(0, min(r["done"], on_disk - r["start"]))
                self.parts.append(Part(r["idx"], r["start"], r["end"], done, done))
            last = self.parts[-1]
            self.total = last.end + 1 if last.end is not None else None
            have = sum(p.done for p in self.parts)
            log.info("job %s: resuming with %d of %s bytes on disk", self.job_id, have, self.total)
            return await self._transfer(first=None)
        # A fresh start: the first answer tells the size and whether Range works. When Civitai
        # said how big the file is, ask for just the first part, so the server does not push
        # bytes past it that the other parts fetch anyway.
        if rows:
            await self.store.set_parts(self.job_id, [])
        first_end = split(self.expected_size, self.connections)[0].end
        self.parts = [Part(0, 0, first_end if first_end != (self.expected_size or 0) - 1 else None)]
        response = await self._open(self.parts[0], fresh=True)
        return await self._transfer(first=response)

    async def discard(self) -> None:
        """Forget all progress: the next run starts from byte 0."""
        await self.store.set_parts(self.job_id, [])
        self.part_path.unlink(missing_ok=True)

    # Internals --------------------------------------------------------------------------

    async def _transfer(self, first: httpx.Response | None) -> Result:
        if first is not None:
            await self._plan(first)
        writer = FileWriter(self.part_path, self.parts)
        # One stream: cut the file back to the committed offset. Parts: a fresh start begins
        # with an empty file; a resume keeps it (each part rewrites from its own offset).
        if len(self.parts) == 1:
            truncate_to: int | None = self.parts[0].done
        else:
            truncate_to = 0 if first is not None else None
        await writer.call(writer.open, truncate_to, first is not None)
        checkpoint = asyncio.create_task(self._checkpoints(writer))
        finished = False
        try:
            async with asyncio.TaskGroup() as group:
                for part in self.parts:
                    if part.complete:
                        continue
                    response = first if (first is not None and part.idx == 0) else None
                    group.create_task(self._fetch(writer, part, response))
            if self.total is None:  # a stream of unknown length ended: that was all of it
                self.total = self.parts[-1].next_offset
                self.parts[-1].end = self.total - 1
            checkpoint.cancel()
            digest = await writer.call(writer.finish)
            await self._commit(writer)
            finished = True
            return Result(sha256=digest, size=self.total)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        finally:
            if first is not None:
                await first.aclose()
            checkpoint.cancel()
            if not finished:  # stopped early: make what arrived durable for the resume
                try:
                    await self._commit(writer)
                except OSError as exc:
                    log.warning("job %s: cannot save progress: %s", self.job_id, exc)
            await writer.call(writer.close)
            writer.shutdown()

    async def _plan(self, response: httpx.Response) -> None:
        """Decide the parts from the first answer, and persist them before any byte lands."""
        total = _total_size(response)
        ranged = response.status_code == 206 or response.headers.get("accept-ranges") == "bytes"
        self.total = total
        self.validator = response.headers.get("etag") or response.headers.get("last-modified")
        if self.validator and self.validator.startswith("W/"):
            self.validator = None  # a weak ETag cannot validate a Range
        asked_end = self.parts[0].end if response.status_code == 206 else None
        self.parts = split(total, self.connections if ranged else 1, asked_end)
        row = await self.store.set_parts(
            self.job_id, [p.row() for p in self.parts], bytes_total=total, validator=self.validator
        )
        self.on_start(row)

    async def _commit(self, writer: FileWriter) -> None:
        if writer.fd < 0:
            return
        synced = await writer.checkpoint()
        for p, s in zip(self.parts, synced, strict=True):
            p.done = s["done"]
        await self.store.save_progress(
            self.job_id, synced, bytes_done=sum(p.done for p in self.parts)
        )

    async def _checkpoints(self, writer: FileWriter) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                await self._commit(writer)
            except OSError as exc:
                log.warning("job %s: cannot save progress: %s", self.job_id, exc)

    async def _open(self, part: Part, fresh: bool = False) -> httpx.Response:
        """A response streaming `part` from its next byte; renews a refused link once."""
        for attempt in range(2):
            url, generation = await self.link.get()
            headers = self.civitai.headers_for(url)
            headers["Accept-Encoding"] = "identity"
            end = "" if part.end is None else str(part.end)
            if fresh:
                headers["Range"] = f"bytes=0-{end}"
            else:
                headers["Range"] = f"bytes={part.next_offset}-{end}"
                if self.validator:
                    headers["If-Range"] = self.validator
            try:
                response = await self._get_following(url, headers)
            except httpx.TimeoutException:
                raise errors.NetworkError(f"{_host(url)} did not answer in time") from None
            except httpx.TransportError as exc:
                raise errors.NetworkError(f"Cannot reach {_host(url)}: {exc}") from None
            status = response.status_code
            if status in (200, 206):
                return await self._check_content(response, part, fresh)
            await response.aread()
            await response.aclose()
            if status == 416:
                return response
            if status in REFUSED and self.link.via_civitai and _host(url) != self.civitai.host:
                if attempt == 0 and await self.link.refused(generation):
                    log.info(
                        "job %s: download link refused (%s); asking Civitai again",
                        self.job_id,
                        status,
                    )
                    continue
                if status in (404, 410):  # a fresh link that is gone too: the file is gone
                    raise errors.FileNotFound(f"the CDN answered {status} for a fresh link")
                raise errors.LinkRefused(status)
            if not self.link.via_civitai:
                raise _direct_error(status, response, _host(url))
            error = error_for(response, self.civitai.token is not None)
            assert error is not None
            raise error
        raise AssertionError("unreachable")

    async def _get_following(self, url: str, headers: dict[str, str]) -> httpx.Response:
        """GET, following redirects; a direct link may not be redirected into a private
        network (an allowed host must not become a way to reach this machine's neighbours)."""
        for _ in range(10):
            request = self.http.build_request("GET", url, headers=headers)
            response = await self.http.send(request, stream=True, follow_redirects=False)
            if not response.is_redirect:
                return response
            await response.aclose()
            url = str(response.url.join(response.headers["location"]))
            require_http(url)
            if not self.link.via_civitai:
                await self.civitai.check_redirect(url)
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if self.civitai.host == _host(url):
                headers.update(self.civitai.headers_for(url))
        raise errors.NetworkError(f"too many redirects from {_host(url)}")

    async def _check_content(
        self, response: httpx.Response, part: Part, fresh: bool
    ) -> httpx.Response:
        ct = response.headers.get("content-type", "")
        if looks_like_a_page(ct, b""):
            await response.aclose()
            raise errors.UnexpectedContent(ct, _host(str(response.url)))
        if response.status_code == 200 and not fresh and part.next_offset > 0:
            await response.aclose()
            raise errors.RangeIgnored()
        if response.status_code == 206:
            m = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
            expected = 0 if fresh else part.next_offset
            total = _total_size(response)
            if (
                not m
                or int(m[1]) != expected
                or (self.total is not None and total is not None and total != self.total)
            ):
                await response.aclose()
                raise errors.RangeIgnored()
        return response

    async def _fetch(self, writer: FileWriter, part: Part, response: httpx.Response | None) -> None:
        while not part.complete:
            if response is None:
                response = await self._open(part)
            if response.status_code == 416:
                if part.end is None:  # we already hold every byte of a stream of unknown size
                    part.end = part.next_offset - 1
                    return
                raise errors.RangeIgnored()
            try:
                ended = await self._stream(writer, part, response)
            finally:
                await response.aclose()
                response = None
            if ended and part.end is None:
                return
            if not part.complete:
                raise errors.NetworkError(
                    f"the connection closed after {part.written} of part {part.idx}'s bytes"
                )

    async def _stream(self, writer: FileWriter, part: Part, response: httpx.Response) -> bool:
        """Copy the body into the file; True when the body ended before the part did."""
        pending: asyncio.Future | None = None
        batch: list[bytes] = []
        batch_len = 0
        offset = part.next_offset
        window_start, window_bytes = time.monotonic(), 0
        last_flush = window_start
        first = True
        try:
            async for chunk in response.aiter_raw():
                if first and looks_like_a_page("", chunk) and offset == 0:
                    raise errors.UnexpectedContent("a web page", _host(str(response.url)))
                first = False
                if part.end is not None:
                    room = part.end + 1 - (offset + batch_len)
                    if room <= 0:
                        break
                    chunk = chunk[:room]
                self.fetched += len(chunk)
                await self.throttle.take(len(chunk))
                batch.append(chunk)
                batch_len += len(chunk)
                window_bytes += len(chunk)
                now = time.monotonic()
                # Large writes on fast links; on slow ones, at least 4 a second (progress).
                if (
                    batch_len >= WRITE_BATCH
                    or now - last_flush >= FLUSH_SECONDS
                    or (part.end is not None and offset + batch_len > part.end)
                ):
                    if pending is not None:
                        await pending
                    pending = asyncio.ensure_future(writer.call(writer.write, part, offset, batch))
                    offset += batch_len
                    batch, batch_len, last_flush = [], 0, now
                    self.on_progress(sum(p.written for p in self.parts), self.total)
                if now - window_start >= self.timeout and self.watch_speed:
                    if window_bytes < LOW_SPEED_BYTES * self.timeout:
                        raise errors.NetworkError(
                            f"the connection stalled: {window_bytes} bytes in {self.timeout:g} s"
                        )
                    window_start, window_bytes = now, 0
                if part.end is not None and offset + batch_len > part.end:
                    break
            else:
                return True
            return False
        except httpx.TimeoutException:
            raise errors.NetworkError(
                f"no data for {self.timeout:g} s; the connection is dead"
            ) from None
        except httpx.TransportError as exc:
            raise errors.NetworkError(
                f"the connection broke: {exc or type(exc).__name__}"
            ) from None
        finally:
            if pending is not None:
                await pending
            if batch:
                await writer.call(writer.write, part, offset, batch)
            self.on_progress(sum(p.written for p in self.parts), self.total)


def _total_size(response: httpx.Response) -> int | None:
    if m := re.search(r"/(\d+)\s*$", response.headers.get("content-range", "")):
        return int(m[1])
    length = response.headers.get("content-length")
    if response.status_code == 200 and length and length.isdigit():
        return int(length)
    return None


def _direct_error(status: int, response: httpx.Response, host: str) -> errors.DaemonError:
    """An error answer of a direct (non-Civitai) download, named by host only: the URL itself
    may carry a token and must not reach the database or the API."""
    if status == 429:
        return errors.RateLimited(retry_after_seconds(response))
    if status >= 500:
        return errors.ServerError(status, where=host)
    return errors.DownloadError(f"{host} refused the download ({status} {response.reason_phrase})")


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a group of part failures: a fatal one before a retryable one."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup) -> None:
        for e in g.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)

    walk(group)
    for e in leaves:
        if isinstance(e, errors.DaemonError) and not e.retryable:
            return e
    for e in leaves:
        if not isinstance(e, asyncio.CancelledError):
            return e
    return leaves[0]
