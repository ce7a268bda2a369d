"""The HTTP side of one file: Range parts, resume, If-Range, the signed link, content checks.

The bytes of a job go to `<filename>.part`. Large files are split into `connections` parts, each
fetched with its own Range request and written at its offset. Requests are made and bodies read
on transfer threads (transfer.py), never on the API's event loop, which only starts them, sees
the progress counters 4 times a second and awaits the result. What is saved of the parts, and
read back at a resume, is progress.py's.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import errors
from database import Store
from engine.connection import (
    Connection,
    Link,
    check_content,
    direct_error,
    host_of,
    looks_like_a_page,
    total_size,
)
from engine.progress import SavedProgress
from engine.throttle import Throttle
from engine.transfer import (
    Part,
    Stopped,
    Threads,
    pump,
    run_together,
    split,
)
from engine.writer import FileWriter
from sources.civitai import CivitaiClient, error_for, require_http

log = logging.getLogger("civitai.downloader")


PROGRESS_SECONDS = 0.25  # the API loop reads the counters (at most 4 progress events a second)
REFUSED = {400, 401, 403, 404, 410}


@dataclass
class Result:
    sha256: str
    size: int


class Download:
    """Fetch one job's file into its .part; every call to `run` resumes from what is on disk."""

    def __init__(
        self,
        *,
        job_id: int,
        store: Store,
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
        active_s: float = 0.0,
    ) -> None:
        self.job_id = job_id
        self.saved = SavedProgress(job_id, store, active_s)
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
        self._received = 0  # bytes of earlier runs' parts
        self.threads = Threads(f"job{job_id}")

    @property
    def fetched(self) -> int:
        """Bytes received over the network by this object."""
        return self._received + sum(p.received for p in self.parts)

    # Public -----------------------------------------------------------------------------

    async def run(self) -> Result:
        self._received = self.fetched
        self.threads = Threads(f"job{self.job_id}")
        parts = await self.saved.restore(self.part_path)
        if parts is not None:
            self.parts = parts
            last = self.parts[-1]
            self.total = last.end + 1 if last.end is not None else None
            have = sum(p.done for p in self.parts)
            log.info("job %s: resuming with %d of %s bytes on disk", self.job_id, have, self.total)
            return await self._transfer(first=None)
        # A fresh start: the first answer tells the size and whether Range works. When Civitai
        # said how big the file is, ask for just the first part, so the server does not push
        # bytes past it that the other parts fetch anyway.
        first_end = split(self.expected_size, self.connections)[0].end
        self.parts = [Part(0, 0, first_end if first_end != (self.expected_size or 0) - 1 else None)]
        response = await self._open(self.parts[0], fresh=True)
        return await self._transfer(first=response)

    async def discard(self) -> None:
        """Forget all progress: the next run starts from byte 0."""
        await self.saved.forget()
        await asyncio.to_thread(self.part_path.unlink, missing_ok=True)  # GBs: not on the loop

    # Internals --------------------------------------------------------------------------

    async def _transfer(self, first: Connection | None) -> Result:
        try:
            if first is not None:
                await self._plan(first)
            writer = FileWriter(
                self.part_path, self.parts, self.threads.name, self.threads.stop, self.connections
            )
        except BaseException:
            if first is not None:
                first.close()
            raise
        # One stream: cut the file back to the committed offset. Parts: a fresh start begins
        # with an empty file; a resume keeps it (each part rewrites from its own offset).
        if len(self.parts) == 1:
            truncate_to: int | None = self.parts[0].done
        else:
            truncate_to = 0 if first is not None else None
        checkpoint = ticker = None
        finished = False
        try:
            await writer.call(writer.open, truncate_to, first is not None)
            self.saved.start_clock()
            checkpoint = asyncio.create_task(self.saved.checkpoints(writer, self.parts))
            ticker = asyncio.create_task(self._ticker())
            left = sum(1 for p in self.parts if not p.complete)
            lanes = max(1, min(self.connections, left))
            await run_together(
                self._lane(writer, first if lane == 0 else None) for lane in range(lanes)
            )
            if self.total is None:  # a stream of unknown length ended: that was all of it
                self.total = self.parts[-1].next_offset
                self.parts[-1].end = self.total - 1
            checkpoint.cancel()
            digest = await writer.call(writer.finish)
            await self.saved.commit(writer, self.parts)
            finished = True
            return Result(sha256=digest, size=self.total)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        finally:
            if first is not None:
                first.close()
            for task in (checkpoint, ticker):
                if task is not None:
                    task.cancel()
            try:
                if not finished:  # stopped early: make what arrived durable for the resume
                    try:
                        await self.saved.commit(writer, self.parts)
                    except Exception as exc:  # a full disk fails SQLite too: keep what is known
                        log.warning("job %s: cannot save progress: %s", self.job_id, exc)
            finally:
                try:
                    await writer.call(writer.close)
                finally:
                    writer.shutdown()
                    self._report()

    async def _plan(self, first: Connection) -> None:
        """Decide the parts from the first answer, and persist them before any byte lands."""
        response = first.response
        total = total_size(response)
        ranged = response.status_code == 206 or response.headers.get("accept-ranges") == "bytes"
        self.total = total
        self.validator = response.headers.get("etag") or response.headers.get("last-modified")
        if self.validator and self.validator.startswith("W/"):
            self.validator = None  # a weak ETag cannot validate a Range
        asked_end = self.parts[0].end if response.status_code == 206 else None
        self.parts = split(total, self.connections if ranged else 1, asked_end)
        self.on_start(await self.saved.plan(self.parts, total, self.validator))

    async def _ticker(self) -> None:
        """Progress for the API: the counters the transfer threads keep, read 4 times a second
        (no hop to the event loop per chunk)."""
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            self._report()

    def _report(self) -> None:
        self.on_progress(sum(p.written for p in self.parts), self.total)

    async def _open(self, part: Part, fresh: bool = False) -> Connection:
        """A response streaming `part` from its next byte; renews a refused link once."""
        for attempt in range(2):
            url, generation = await self.link.get()
            conn = await self._get_following(url, self._headers(url, part, fresh))
            status = conn.status
            if status in (200, 206):
                return check_content(conn, part, fresh, self.total, len(self.parts) > 1)
            try:
                response = await self.threads.run("answer", conn.read_error)
            except (OSError, http.client.HTTPException):
                response = conn.response
            finally:
                conn.close()
            if status == 416:
                return conn
            if self.link.from_store:
                raise errors.StoreCopyFailed(f"the store answered {status}")
            if status in REFUSED and self.link.renewable and not self.link.at_origin(url):
                if attempt == 0 and await self.link.refused(generation):
                    log.info("job %s: link refused (%s); asking Civitai again", self.job_id, status)
                    continue
                if status in (404, 410):  # a fresh link that is gone too: the file is gone
                    raise errors.FileNotFound(f"the CDN answered {status} for a fresh link")
                raise errors.LinkRefused(status)
            if (source := self.link.source) is not None and source.at_hub(url):
                error = source.error_for(response, source.file_of(url))
                raise error or direct_error(status, response, host_of(url))
            if not self.link.via_civitai:
                raise direct_error(status, response, host_of(url))
            error = error_for(response, self.civitai.token is not None)
            assert error is not None
            raise error
        raise AssertionError("unreachable")

    def _headers(self, url: str, part: Part, fresh: bool = False) -> dict[str, str]:
        """The request's headers for `part` from its next byte (`fresh`: from byte 0)."""
        headers = self.link.headers_for(url)  # no Civitai or Hub token to the shared store
        headers["Accept-Encoding"] = "identity"
        end = "" if part.end is None else str(part.end)
        if fresh:
            headers["Range"] = f"bytes=0-{end}"
        else:
            headers["Range"] = f"bytes={part.next_offset}-{end}"
            if self.validator:
                headers["If-Range"] = self.validator
        return headers

    async def _get_following(self, url: str, headers: dict[str, str]) -> Connection:
        """GET, following redirects; a direct link may not be redirected into a private
        network (an allowed host must not become a way to reach this machine's neighbours)."""
        for _ in range(10):
            conn = await self._connect(url, headers)
            if not conn.response.is_redirect:
                return conn
            conn.close()
            url = str(conn.response.url.join(conn.response.headers["location"]))
            require_http(url)
            if self.link.source is not None:
                await self.link.source.check_cdn(url)
            elif not self.link.via_civitai:
                await self.civitai.check_redirect(url)
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers.update(self.link.headers_for(url))  # a token only to its own host
        raise errors.NetworkError(f"too many redirects from {host_of(url)}")

    async def _connect(self, url: str, headers: dict[str, str]) -> Connection:
        """Send the request and read the answer's head, on a transfer thread."""
        try:
            return await self.threads.run(
                "open", Connection, url, headers, self.timeout, self.threads
            )
        except ssl.SSLCertVerificationError as exc:
            raise errors.CertificateRefused(host_of(url), exc.verify_message or str(exc)) from None
        except TimeoutError:
            raise errors.NetworkError(f"{host_of(url)} did not answer in time") from None
        except (OSError, http.client.HTTPException) as exc:
            raise errors.NetworkError(
                f"Cannot reach {host_of(url)}: {exc or type(exc).__name__}"
            ) from None

    async def _lane(self, writer: FileWriter, first: Connection | None) -> None:
        """One connection's turn at the parts: the next one in file order (pieces.py), on the
        same socket while the server keeps it open, until none is left."""
        pieces = writer.pieces
        part: Part | None = None
        if first is not None:
            part = self.parts[0]
            pieces.take(part)
        idle: Connection | None = None
        try:
            while True:
                if part is None:
                    part = await self.threads.run("next", pieces.next_part, self.threads.stop)
                    if part is None:
                        return
                if first is None and idle is not None:
                    first = await self._again(idle, part)
                    idle = None
                idle = await self._fetch(writer, part, first)
                first, part = None, None
        finally:
            if idle is not None:
                idle.close()

    async def _again(self, idle: Connection, part: Part) -> Connection | None:
        """`part` asked on a connection kept from the part before; None (and the connection
        closed) when that does not work out: the caller opens a new one."""
        try:
            conn = await self.threads.run("again", idle.again, self._headers(idle.url, part))
            if conn.status == 206:
                return check_content(conn, part, False, self.total, True)
        except (OSError, http.client.HTTPException, errors.RangeIgnored):
            pass  # closed by the server meanwhile, or another answer: a new request tells
        except BaseException:
            idle.close()
            raise
        idle.close()
        return None

    async def _fetch(
        self, writer: FileWriter, part: Part, conn: Connection | None
    ) -> Connection | None:
        """Fetch `part`; its connection if it can carry the next part."""
        conn = conn or await self._open(part)
        if conn.status == 416:
            if part.end is None:  # we already hold every byte of a stream of unknown size
                part.end = part.next_offset - 1
                return None
            raise errors.RangeIgnored()
        ended: bool | None = None
        try:
            stop, label = self.threads.stop, f"part{part.idx}"
            ended = await self.threads.run(
                label, _pump, conn, part, writer, self.throttle, stop, self.timeout
            )
        finally:
            if ended is None or not (conn.reusable and part.complete):
                conn.close()
        if part.complete:
            return conn if conn.reusable else None
        if ended and part.end is None:
            return None
        raise errors.NetworkError(
            f"the connection closed after {part.written} of part {part.idx}'s bytes"
        )


def _pump(
    conn: Connection,
    part: Part,
    writer: FileWriter,
    throttle: Throttle,
    stop: threading.Event,
    timeout: float,
) -> bool:
    """On a transfer thread: copy the body into the file; True when the body ended."""
    host = host_of(conn.url)

    def check_first(chunk: memoryview) -> None:
        if looks_like_a_page("", bytes(chunk[:64])):
            raise errors.UnexpectedContent("a web page", host)

    try:
        kw = {"throttle": throttle, "stop": stop, "timeout": timeout}
        return pump(conn, part, writer, **kw, check_first=check_first)
    except TimeoutError:
        raise errors.NetworkError(f"no data for {timeout:g} s; the connection is dead") from None
    except (OSError, http.client.HTTPException) as exc:
        if exc is writer.error:
            raise
        if stop.is_set():
            raise Stopped() from None
        raise errors.NetworkError(f"the connection broke: {exc or type(exc).__name__}") from None


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
        if not isinstance(e, asyncio.CancelledError | Stopped):
            return e
    return leaves[0]
