"""The `store` setting at work: a file's shared copy found before a download, and each verified
download uploaded after it, in the background.

Uploads wait in the `store_uploads` table (one row per SHA256), so one interrupted by a stop or a
crash is made after the next start. A failed upload is tried again with backoff and never
touches its job. The counters (`hits`, `misses`, `fallbacks`, `uploads`, `upload_failures`,
`upload_skips`) are read by whoever reports on the daemon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from config.settings import Settings
from database import Store
from fleet.s3 import Bucket, StoreUnavailable, UploadStopped, object_metadata

log = logging.getLogger("civitai.store")

T = TypeVar("T")
RETRY_FIRST_S = 60.0  # a failed upload waits this long, doubling each time, up to RETRY_MAX_S
RETRY_MAX_S = 3600.0


class SharedStore:
    """Finds shared copies (HEAD + a presigned GET URL) and uploads verified files."""

    def __init__(self, settings: Settings, db: Store) -> None:
        self.db = db
        self.bucket: Bucket | None = Bucket(settings.store) if settings.store else None
        self.hits = 0  # downloads that found their file in the store
        self.misses = 0  # lookups that found nothing
        self.fallbacks = 0  # store copies that failed (an error, a wrong hash): source instead
        self.uploads = 0  # files uploaded
        self.upload_failures = 0  # upload attempts that failed (each is tried again)
        self.upload_skips = 0  # files the store already held
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._task: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return self.bucket is not None

    def apply(self, settings: Settings) -> None:
        """`store` changed (config.json read again on SIGHUP): the next request uses it."""
        current = self.bucket.settings if self.bucket else None
        if settings.store != current:
            self.bucket = Bucket(settings.store) if settings.store else None
            log.info("shared store: %s", where(self.bucket))
            self._wake.set()

    # Lookups ----------------------------------------------------------------------------

    async def find(self, sha256: str) -> str | None:
        """A presigned GET URL of the store's copy of `sha256`, or None (none there, or the
        store cannot be asked: the source is used as without a store)."""
        bucket = self.bucket
        if bucket is None:
            return None
        key = bucket.key(sha256)
        try:
            head = await asyncio.to_thread(bucket.head, key)
            if head is None:
                self.misses += 1
                return None
            url = await asyncio.to_thread(bucket.presign, key)
        except Exception as exc:  # down, refused, misconfigured: the source, as without a store
            log.warning("shared store %s: cannot look up %s: %s", where(bucket), sha256, exc)
            return None
        self.hits += 1
        log.info("%s is downloaded from the shared store %s", sha256, where(bucket))
        return url

    def fell_back(self) -> None:
        self.hits -= 1  # it was not a hit after all
        self.fallbacks += 1

    # Uploads ----------------------------------------------------------------------------

    async def offer(
        self, path: Path, sha256: str, fields: dict[str, Any], replace: bool = False
    ) -> None:
        """Queue `path` (verified as `sha256`) for upload; returns at once. `replace`: the
        store's copy failed its check, so it is overwritten rather than kept."""
        if self.bucket is None:
            return
        size = (await asyncio.to_thread(path.stat)).st_size
        row = {
            "sha256": sha256.lower(),
            "path": str(path),
            "size": size,
            "meta": json.dumps({**fields, "sha256": sha256.lower()}),
            "attempts": 0,
            "next_at": 0.0,
            "error": None,
            "replace": int(replace),
        }
        await self.db.run(lambda db: db["store_uploads"].upsert(row, pk="sha256"))
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-uploads")

    async def stop(self) -> None:
        """Abandon the upload under way (it is made again after the next start)."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        # Whatever waited at the last stop is due now: a restart is a reason to try again.
        await self.db.run(lambda db: db.execute("update store_uploads set next_at = 0"))
        while True:
            self._wake.clear()
            row = await self._next() if self.bucket is not None else None
            if row is None:
                await self._sleep()
                continue
            try:
                await self._upload(row)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must not end the uploads for good
                log.exception("shared store: upload of %s failed unexpectedly", row["path"])
                await self._failed(row, f"{type(exc).__name__}: {exc}")

    async def _next(self) -> dict[str, Any] | None:
        now = time.time()
        rows = await self.db.read(
            lambda db: list(
                db.query(
                    "select * from store_uploads where next_at <= ? order by next_at limit 1",
                    [now],
                )
            )
        )
        return rows[0] if rows else None

    async def _sleep(self) -> None:
        """Until an upload is offered, the store changes, or the next retry is due."""
        rows = await self.db.read(
            lambda db: list(db.query("select min(next_at) as at from store_uploads"))
        )
        due = rows[0]["at"] if rows and rows[0]["at"] is not None else None
        timeout = None if due is None or self.bucket is None else max(0.0, due - time.time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _upload(self, row: dict[str, Any]) -> None:
        bucket = self.bucket
        assert bucket is not None
        path, sha256 = Path(row["path"]), row["sha256"]
        state = await asyncio.to_thread(_stat, path)
        if state is None or state.st_size != row["size"]:
            log.info("shared store: %s is gone or changed; not uploaded", path)
            await self._done(sha256)
            return
        key = bucket.key(sha256)
        try:
            held = not row["replace"] and await asyncio.to_thread(bucket.head, key) is not None
            if held:
                self.upload_skips += 1
                log.info("shared store %s: already holds %s", where(bucket), sha256)
                await self._done(sha256)
                return
            metadata = object_metadata(json.loads(row["meta"]))
            await in_own_thread(bucket.upload, path, key, metadata, self._stop)
        except UploadStopped:
            log.info("shared store: upload of %s stopped; made after the next start", path)
            return
        except (StoreUnavailable, OSError) as exc:
            await self._failed(row, str(exc))
            return
        self.uploads += 1
        log.info("shared store %s: uploaded %s as %s", where(bucket), path, key)
        await self._done(sha256)

    async def _done(self, sha256: str) -> None:
        await self.db.run(
            lambda db: db.execute("delete from store_uploads where sha256 = ?", [sha256])
        )

    async def _failed(self, row: dict[str, Any], error: str) -> None:
        self.upload_failures += 1
        attempts = (row["attempts"] or 0) + 1
        wait = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
        log.warning(
            "shared store: upload of %s failed (attempt %d: %s); trying again in %.0f s",
            row["path"],
            attempts,
            error,
            wait,
        )
        changes = {"attempts": attempts, "next_at": time.time() + wait, "error": error[:500]}
        await self.db.run(lambda db: db["store_uploads"].update(row["sha256"], changes))


def where(bucket: Bucket | None) -> str:
    """The store named for a log line: endpoint and bucket, never a credential."""
    if bucket is None:
        return "none"
    return f"{bucket.settings.endpoint}/{bucket.settings.bucket}/{bucket.settings.prefix}"


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


async def in_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` on a daemon thread of its own: an upload of many GB must not hold the
    interpreter's exit (the default executor's threads are joined at shutdown)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def body() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to the awaiting task
            future.set_exception(exc)

    threading.Thread(target=body, name="store-upload", daemon=True).start()
    return await asyncio.wrap_future(future)
