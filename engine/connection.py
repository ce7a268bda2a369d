"""One connection of a download and where its bytes come from: a GET on a socket of its own
(made and read on a transfer thread), the link it asks (Civitai's signed CDN URL, a source's,
or a direct URL), and the checks an answer must pass before its bytes are taken."""

from __future__ import annotations

import asyncio
import base64
import functools
import http.client
import re
import socket
import ssl
from typing import Protocol
from urllib.parse import unquote, urlsplit

import httpx

import errors
from engine.transfer import Part, Stopped, Threads
from sources.civitai import USER_AGENT, CivitaiClient, retry_after_seconds

ERROR_BODY_MAX = 64 * 1024  # of an error answer, enough to read its message


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """Certificates are verified against certifi's bundle, as httpx does; `SSL_CERT_FILE` (or
    `SSL_CERT_DIR`) names another set of trusted certificates, e.g. a private CA."""
    return httpx.create_ssl_context(trust_env=True)


class Connection:
    """One GET on a blocking socket of its own (http.client), made and read on a transfer
    thread. Its status and headers are kept as an httpx.Response, so one error mapping
    (`error_for`, `_direct_error`) serves this and the API client alike."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float, threads: Threads):
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
        if parts.scheme == "https":
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=ssl_context()
            )
        else:
            self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.url = url
        self.threads = threads
        threads.watch(id(self), self.abort)
        try:
            self.conn.connect()
            self._send(headers)
        except BaseException:
            threads.unwatch(id(self))
            self.conn.close()
            raise

    def _send(self, headers: dict[str, str]) -> None:
        """Send the GET and read the answer's head."""
        if self.threads.stop.is_set():  # stopped while connecting: send nothing
            raise Stopped()
        parts = urlsplit(self.url)
        headers = dict(headers)
        if parts.username or parts.password:  # user:pass@host, for this host only (as httpx)
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.conn.putrequest("GET", target, skip_accept_encoding=True)
        for k, v in headers.items():
            self.conn.putheader(k, v)
        self.conn.endheaders()
        self.raw = self.conn.getresponse()
        self.remaining = self.raw.length  # None: chunked, or until the server closes
        self.response = self._response(b"")

    @property
    def reusable(self) -> bool:
        """The body was read to its end and the server keeps the connection open."""
        return not self.raw.chunked and self.remaining == 0 and not self.raw.will_close

    def again(self, headers: dict[str, str]) -> Connection:
        """The next GET of the same URL on this connection (keep-alive: no new handshake);
        on a transfer thread. The caller closes it if this fails."""
        self.raw.close()  # the body was read to its end: the socket stays for the next answer
        self._send(headers)
        return self

    def _response(self, content: bytes) -> httpx.Response:
        raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.raw.getheaders()]
        headers = [(k, v) for k, v in raw_headers if k.lower() != b"content-encoding"]
        return httpx.Response(
            self.raw.status,
            headers=headers,
            content=content,
            request=httpx.Request("GET", self.url),
        )

    @property
    def status(self) -> int:
        return self.raw.status

    def read_error(self) -> httpx.Response:
        """The answer with (the start of) its body, for an error's message."""
        body = self.raw.read(ERROR_BODY_MAX) if self.raw.status != 416 else b""
        self.response = self._response(body)
        return self.response

    def readinto(self, view: memoryview) -> int:
        """At most one socket read into `view`; 0 at the end of the body."""
        if self.raw.chunked:
            data = self.raw.read1(len(view))
            view[: len(data)] = data
            return len(data)
        if self.remaining is not None:
            if self.remaining <= 0:
                return 0
            view = view[: self.remaining]
        assert self.raw.fp is not None
        n = self.raw.fp.readinto1(view)
        if self.remaining is not None:
            self.remaining -= n
        return n

    def abort(self) -> None:
        """Shut the socket down (from any thread): a read blocked on it returns at once."""
        sock = self.conn.sock
        if sock is not None:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close(self) -> None:
        self.threads.unwatch(id(self))
        self.raw.close()
        self.conn.close()


class SharedCopies(Protocol):
    """The fleet's shared store (fleet/shared.py), as a link asks it."""

    async def find(self, sha256: str) -> str | None: ...


class Link:
    """Where a job's bytes come from. For Civitai: the signed CDN URL, resolved once and shared
    by the parts and retries of one file, and resolved afresh only when the CDN refuses it. For
    another source (sources/, e.g. the Hugging Face Hub): the same, asked of that source. Before
    either, a file whose SHA256 is known comes from the fleet's shared store when it holds it
    (`from_store`), until `leave_store` sends the link back to the source."""

    def __init__(
        self,
        civitai: CivitaiClient,
        download_url: str,
        shared: SharedCopies | None = None,
        sha256: str | None = None,
    ) -> None:
        self.civitai = civitai
        self.download_url = download_url
        self.shared = shared if sha256 else None
        self.sha256 = sha256
        self.from_store = False
        self.store_copy_wrong = False  # the store's copy failed its check: replace it
        self.source = civitai.source_for(download_url)
        self.via_civitai = self.source is None and (
            civitai.is_civitai_url(download_url) or download_url.startswith(civitai.base_url)
        )
        self.renewable = self.via_civitai or self.source is not None
        self.url: str | None = None
        self.generation = 0
        self.lock = asyncio.Lock()

    def at_origin(self, url: str) -> bool:
        """`url` is the source's own host (Civitai, the Hub), not the CDN it sends bytes from."""
        if self.source is not None:
            return self.source.at_hub(url)
        return host_of(url) == self.civitai.host

    def headers_for(self, url: str) -> dict[str, str]:
        """The store's presigned URL carries its own signature: no source's token goes there
        (the store may share a host name with Civitai or the Hub)."""
        if self.from_store:
            return {"User-Agent": USER_AGENT}
        return self.civitai.headers_for(url)

    def leave_store(self, wrong: bool) -> None:
        """The store's copy failed (`wrong`: its bytes did): from now on, the source."""
        self.shared, self.from_store, self.url = None, False, None
        self.store_copy_wrong = wrong
        self.generation += 1

    async def get(self) -> tuple[str, int]:
        async with self.lock:
            if self.url is None and self.shared is not None and self.sha256:
                self.url = await self.shared.find(self.sha256)
                self.from_store = self.url is not None
                if self.url is None:
                    self.shared = None  # asked once per link: not there, the source it is
            if self.url is None:
                if self.via_civitai:
                    self.url = await self.civitai.signed_link(self.download_url)
                elif self.source is not None:
                    self.url = await self.source.cdn_link(self.download_url)
                else:
                    self.url = self.download_url
            return self.url, self.generation

    async def refused(self, generation: int) -> bool:
        """Forget a refused link; False when it cannot be renewed (a direct link)."""
        async with self.lock:
            if not self.renewable:
                return False
            if generation == self.generation:
                self.url = None
                self.generation += 1
            return True


def looks_like_a_page(content_type: str, first: bytes) -> bool:
    """A web page or an error document, by its type or by its first bytes: never a model."""
    ct = content_type.lower()
    if "text/html" in ct or "application/json" in ct or "text/xml" in ct:
        return True
    head = first[:64].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b'{"error"'))


def total_size(response: httpx.Response) -> int | None:
    if m := re.search(r"/(\d+)\s*$", response.headers.get("content-range", "")):
        return int(m[1])
    length = response.headers.get("content-length")
    if response.status_code == 200 and length and length.isdigit():
        return int(length)
    return None


def direct_error(status: int, response: httpx.Response, host: str) -> errors.DaemonError:
    """An error answer of a direct (non-Civitai) download, named by host only: the URL itself
    may carry a token and must not reach the database or the API."""
    if status == 429:
        return errors.RateLimited(retry_after_seconds(response))
    if status >= 500:
        return errors.ServerError(status, where=host)
    return errors.DownloadError(f"{host} refused the download ({status} {response.reason_phrase})")


def host_of(url: str) -> str:
    return urlsplit(url).hostname or url


def check_content(
    conn: Connection, part: Part, fresh: bool, total: int | None, multipart: bool
) -> Connection:
    """The answer to a part's request carries that part: no web page, no whole body (200) where
    a range was asked for (a resumed file of several parts takes none), the range asked for."""
    response = conn.response
    ct = response.headers.get("content-type", "")
    if looks_like_a_page(ct, b""):
        conn.close()
        raise errors.UnexpectedContent(ct, host_of(conn.url))
    if response.status_code == 200 and not fresh and (part.next_offset > 0 or multipart):
        conn.close()
        raise errors.RangeIgnored()
    if response.status_code == 206:
        m = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
        expected = 0 if fresh else part.next_offset
        size = total_size(response)
        if (
            not m
            or int(m[1]) != expected
            or (total is not None and size is not None and size != total)
        ):
            conn.close()
            raise errors.RangeIgnored()
    return conn
