"""Thumbnails of Civitai's previews for the GUI's Browse tab (GET /api/civitai/image).

The GUI's Content-Security-Policy keeps `img-src 'self'`, so previews come through the daemon:
fetched only from Civitai's image hosts by `metadata.fetch_image` (each redirect checked, https
only but for the configured civitai_base_url), a video as Civitai's still of its first frame,
shrunk with Pillow in a thread to one of a few widths (so the GUI's sizes share the cache), and
kept as WebP under `data/thumbnails/`, at most `thumbnail_cache_bytes` of them: past that, the
least recently used go first (each hit touches its file's mtime).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import threading
import time
from pathlib import Path

import httpx

import errors
import safefs
from library import sidecars
from sources.civitai import CivitaiClient

log = logging.getLogger("civitai.thumbnails")

# The widths served: a width asked is rounded down to one of them (64 at the least).
WIDTHS = (64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024)
MAX_SOURCE = 25 * 1024 * 1024  # bytes of one image fetched to make a thumbnail
MAX_ASPECT = 3  # a thumbnail is at most this many times as tall as it is wide
MEDIA_TYPE = "image/webp"
SUFFIX = ".webp"
MAX_AT_ONCE = 4  # thumbnails fetched and drawn at once (a page of cards asks for 20)
STALE_TEMP = 600.0  # seconds after which a temp file left by a crash is removed


def allowed_width(width: int) -> int:
    """The largest served width at or below `width` (the smallest served width below that)."""
    return max((w for w in WIDTHS if w <= width), default=WIDTHS[0])


def cache_key(url: str, width: int) -> str:
    """The thumbnail's name in the cache and its ETag."""
    return hashlib.sha256(f"{width}\n{url}".encode()).hexdigest()


def source_url(url: str) -> str:
    """Where the thumbnail is made from: a video's still (anim=false), else the image itself."""
    return sidecars.still_url(url) if sidecars.is_video({"url": url}) else url


def render(data: bytes, width: int) -> bytes:
    """The image in `data` (its first frame, upright) as WebP at most `width` pixels wide."""
    frame = sidecars.first_frame(data, (width, width * MAX_ASPECT))
    out = io.BytesIO()
    frame.save(out, format="WEBP", quality=80)
    return out.getvalue()


def evict(folder: Path, cap: int) -> int:
    """Remove the least recently used thumbnails until those left hold at most `cap` bytes (and
    temp files a crash left behind); the number of bytes left."""
    now = time.time()
    kept: list[tuple[float, int, str]] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                kept.append((st.st_mtime, st.st_size, entry.path))
            elif entry.name.endswith(".tmp") and now - st.st_mtime > STALE_TEMP:
                _unlink(entry.path)
    total = sum(size for _, size, _ in kept)
    for _, size, path in sorted(kept):
        if total <= cap:
            break
        _unlink(path)
        total -= size
    return total


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _for_thumbnail(url: str, why: errors.PreviewUnavailable) -> errors.PreviewUnavailable:
    """The same error (and status), its message a sentence about the thumbnail asked."""
    return type(why)(f"No thumbnail of {url}: {why}.")


class Thumbnails:
    """The cache under `folder`; one fetch per thumbnail however many ask for it at once."""

    def __init__(
        self,
        folder: Path,
        http: httpx.AsyncClient,
        civitai: CivitaiClient,
        cap: int,
    ) -> None:
        self.folder = folder
        self.http = http
        self.civitai = civitai
        self.cap = cap  # bytes the cache may hold
        self._making: dict[str, asyncio.Task[bytes]] = {}
        self._slots = asyncio.Semaphore(MAX_AT_ONCE)  # bounds the memory and CPU they take
        # Bytes in the cache as last counted, plus what was stored since: the folder is scanned
        # (evict) on the first store and when this passes the cap, not on every store.
        self._total: int | None = None
        self._count_lock = threading.Lock()  # stores run in worker threads

    def check(self, url: str) -> None:
        """Raise ImageHostRefused (422) for a URL off Civitai's image hosts."""
        try:
            sidecars.check_image_host(url, self.civitai)
        except errors.PreviewUnavailable as exc:
            raise _for_thumbnail(url, exc) from None

    async def get(self, url: str, width: int) -> bytes:
        """The WebP thumbnail of `url` at `width` (an allowed width), from the cache or made."""
        key = cache_key(url, width)
        path = self.folder / (key + SUFFIX)
        cached = await asyncio.to_thread(self._read, path)
        if cached is not None:
            return cached
        task = self._making.get(key)
        if task is None:
            task = asyncio.create_task(self._make(url, width, path), name=f"thumbnail {key}")
            self._making[key] = task
            task.add_done_callback(lambda _: self._making.pop(key, None))
        # Shielded: a client that hangs up does not cancel the fetch the others wait for.
        return await asyncio.shield(task)

    async def close(self) -> None:
        tasks = list(self._making.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _make(self, url: str, width: int, path: Path) -> bytes:
        try:
            if self._slots.locked():  # said, so that a wait can be seen (and tested) as one
                log.debug("thumbnail %s waits: %d are being made", path.stem, MAX_AT_ONCE)
            async with self._slots:
                source = source_url(url)
                data = await sidecars.fetch_image(source, self.http, self.civitai, MAX_SOURCE)
                thumbnail = await asyncio.to_thread(render, data, width)
        except errors.PreviewUnavailable as exc:
            raise _for_thumbnail(url, exc) from None
        await asyncio.to_thread(self._store, path, thumbnail)
        return thumbnail

    def _read(self, path: Path) -> bytes | None:
        # Never read (nor touch) through a link planted in the cache or at the cache itself.
        if self.folder.is_symlink() or not safefs.is_file(path):
            return None
        try:
            data = path.read_bytes()
            os.utime(path)  # recently used: evicted last
        except OSError:
            return None
        return data

    def _store(self, path: Path, data: bytes) -> None:
        """Keep `data` in the cache; a cache that cannot be written is logged, never fatal."""
        try:
            if self.folder.is_symlink():
                raise OSError(f"{self.folder} is a link; the cache stays inside data/")
            safefs.write_atomic(path, data)
            with self._count_lock:
                if self._total is None or self._total + len(data) > self.cap:
                    self._total = evict(self.folder, self.cap)
                else:
                    self._total += len(data)
        except OSError as exc:
            log.warning("thumbnail not cached: %s", exc)
