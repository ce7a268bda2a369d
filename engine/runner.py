"""Runs one claimed job: resolve late, transfer, verify, place, record (SPEC §5, §7, §14).

The queue (daemon.py) claims a job and hands it here; what the runner needs of the queue — its
job states (the transition function, the live rows, the links) and which jobs are being
cancelled — is handed in, so this module never imports daemon.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Container
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

import errors
import job_secrets
import safefs
from config.settings import Settings
from database import Store, utcnow
from engine import job_query
from engine.completed import file_state
from engine.connection import Link
from engine.downloader import Download
from engine.jobs import JobRequest, JobStatus
from engine.origins import origin_of
from engine.rates import RateMeter, SpeedMeter
from engine.shared_copy import Shared, fetch, offer_upload
from engine.throttle import Throttle
from events import ClearedEvent, Event, JobEvent
from library import catalog, files, twins
from library.policy import retires_old
from library.sidecars import write_sidecars
from library.tracking import Tracker
from logger import safe_url
from sources.civitai import CivitaiClient, Resolved, backoff
from sources.huggingface import GitBlobMismatch, blob_sha1

log = logging.getLogger("civitai.daemon")

SPACE_MARGIN = 16 * 1024 * 1024


class JobBook(Protocol):
    """What the runner needs of the queue's job states (states.JobStates)."""

    live: dict[int, dict[str, Any]]  # job id → its row as last seen, with progress
    links: dict[int, Link]  # job id → its download link, kept across retries

    async def transition(
        self, row: dict[str, Any], new: JobStatus, **fields: Any
    ) -> dict[str, Any]: ...

    async def fail(self, job_id: int, message: str, retry_blocked: str | None = None) -> None: ...

    def public(self, row: dict[str, Any]) -> dict[str, Any]: ...


class JobRunner:
    """Runs claimed jobs to their end: completed, failed, or back to the queue at a stop."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        civitai: CivitaiClient,
        http: httpx.AsyncClient,
        publish: Callable[[Event], None],
        states: JobBook,
        resolved_fields: Callable[[Resolved, str, str | None], dict[str, Any]],
        models_root: Path,
        cancelling: Container[int],
        claim_lock: asyncio.Lock,
        tracker: Tracker,
        shared: Shared | None = None,  # the fleet's store (fleet/): asked first, given files
    ) -> None:
        self.settings, self.store = settings, store
        self.civitai, self.http = civitai, http
        self.publish = publish
        self.transition = states.transition  # the queue's one transition function
        self.fail = states.fail
        self.public = states.public
        self.live = states.live
        self.links = states.links
        self.resolved_fields = resolved_fields
        self.models_root = models_root
        self.finishing: set[int] = set()  # the file is being placed: too late to cancel
        self.claim_lock = claim_lock  # the queue's: who holds which file is decided under it
        self.cancelling = cancelling  # jobs whose cancel cleans up after their task (the queue's)
        self.tracker, self.shared = tracker, shared
        self.throttle = Throttle(settings.throttle)
        self.network_bytes = 0  # bytes received since start (resumes make it less than sizes)
        self.rate = RateMeter()  # the daemon's current rate, over every job

    async def run(self, row: dict[str, Any]) -> None:
        job_id = row["id"]
        try:
            row = await self._download(row)
        except asyncio.CancelledError:
            if job_id in self.cancelling:
                raise  # cancel() cleans up once this task has stopped
            current = await self.store.get_job(job_id) or row
            if current["status"] in (JobStatus.DOWNLOADING, JobStatus.WAITING, JobStatus.VERIFYING):
                await self.transition(current, JobStatus.QUEUED, speed_bps=0, next_attempt_at=None)
                log.info("job %s: stopping; progress kept for the next start", job_id)
            raise
        except errors.DaemonError as exc:
            await self.fail(job_id, str(exc), exc.retry_blocked, exc.error_class)
        except OSError as exc:
            await self.fail(job_id, disk_error(exc, row), error_class=type(exc).__name__)
        except Exception as exc:  # a bug must fail one job, not the worker
            log.exception("job %s: unexpected error", job_id)
            message = safe_url(f"Internal error: {type(exc).__name__}: {exc}")
            await self.fail(job_id, message, error_class="InternalError")

    async def _download(self, row: dict[str, Any]) -> dict[str, Any]:
        job_id = row["id"]
        attempts = row["attempts"] or 0
        if not row.get("download_url"):
            row = await self._resolve_late(row)
        path = Path(row["path"])
        part_path = path.with_name(path.name + ".part")
        await asyncio.to_thread(make_folder, path.parent, self.models_root)
        expected = (row.get("sha256") or "").lower() or None

        replaces = json.loads(row["replaces"]) if row.get("replaces") else None
        swap = replaces is not None and replaces.get("path") == str(path)
        if await asyncio.to_thread(path.exists):
            if not swap:
                return await self._already_there(row, path, expected)
            actual = await asyncio.to_thread(files.sha256_file, path)
            if actual == expected:
                size = (await asyncio.to_thread(path.stat)).st_size
                return await self._complete(row, path, actual, size, 0.0)
            if actual != (replaces.get("sha256") or "").lower():
                raise errors.FileConflict(str(path))  # not the file the daemon put there
        if expected and not swap and self.settings.link_duplicates:  # the folder: no link out
            if twin := await link_twin(self.store, row["id"], path, expected, self.models_root):
                return await self._complete(row, path, expected, twin[1], 0, linked_from=twin[0])
        await asyncio.to_thread(
            check_space, path, part_path, row.get("bytes_total") or row.get("size")
        )

        url = job_secrets.revealed(row, "download_url")  # with its credentials, if it has any
        link = self.links.setdefault(job_id, Link(self.civitai, url, self.shared, expected))
        refetched = False
        while True:
            # The .part is opened (and discarded) by name: its folder is checked each time.
            await self._check_folder(path)
            download = self._make_download(row, link, part_path)
            try:
                result = await fetch(self.shared, link, download, lambda: self._check_folder(path))
            except errors.DaemonError as exc:
                self.network_bytes += download.fetched
                if isinstance(exc, errors.RangeIgnored):
                    await self._check_folder(path)
                    await download.discard()
                if not exc.retryable:
                    raise
                attempts += 1
                if attempts >= self.settings.retries:
                    await self.store.update_job(job_id, attempts=attempts)
                    raise errors.GaveUp(attempts, exc) from None
                row = await self._wait_to_retry(row, attempts, exc)
                continue
            self.network_bytes += download.fetched
            await self._check_folder(path)  # before the .part is discarded, kept or placed
            row = await self.transition(
                row, JobStatus.VERIFYING, bytes_done=result.size, bytes_total=result.size
            )
            wrong_size = size_mismatch(row, result.size)
            wrong_blob = not wrong_size and await blob_mismatch(row, part_path)
            if (expected and result.sha256 != expected) or wrong_size or wrong_blob:
                if not refetched:
                    got = result.size if wrong_size else (wrong_blob or result.sha256)
                    log.warning("job %s: mismatch (%s); fetching once more", job_id, got)
                    await download.discard()
                    refetched = True
                    row = await self.transition(row, JobStatus.DOWNLOADING, bytes_done=0)
                    continue
                kept = path.with_name(path.name + ".unverified")
                await self._check_folder(path)
                await asyncio.to_thread(safefs.refuse_link, part_path)
                await asyncio.to_thread(os.replace, part_path, kept)
                await self.store.set_parts(job_id, [])
                if wrong_size:
                    raise errors.SizeMismatch(row["size"], result.size, str(kept))
                if wrong_blob:
                    raise GitBlobMismatch(row["git_sha1"], wrong_blob, str(kept))
                raise errors.HashMismatch(expected, result.sha256, str(kept))
            break

        self.finishing.add(job_id)  # from here on a cancel waits and is told it completed
        await self._check_folder(path)  # the transfer may have taken minutes
        if swap and await asyncio.to_thread(path.exists):
            kind = row["model_type"]
            await asyncio.to_thread(swap_in, self.settings, part_path, path, replaces, kind)
        else:
            await asyncio.to_thread(place, part_path, path)
            if retires_old(replaces, self.settings.manifest_mode):
                old, kind = Path(replaces["path"]), row["model_type"]
                await asyncio.to_thread(retire_old, self.settings, self.models_root, old, kind)
        await self.store.set_parts(job_id, [])
        await offer_upload(self.shared, link, row, path, result.sha256)
        self.links.pop(job_id, None)
        # Seconds spent transferring, over every attempt and run (saved with the progress).
        elapsed = row.get("elapsed_s") or 0.0
        return await self._complete(row, path, result.sha256, result.size, elapsed)

    def _make_download(self, row: dict[str, Any], link: Link, part_path: Path) -> Download:
        job_id = row["id"]
        meter = SpeedMeter(self.rate)

        def on_progress(done: int, total: int | None) -> None:
            live = self.live.get(job_id)
            if live is None:
                return
            live["bytes_done"] = done
            live["bytes_total"] = total or live.get("bytes_total")
            speed = meter.update(done)
            if speed is not None:
                live["speed_bps"] = speed
                self.publish(JobEvent(self.public(live), progress=True))

        def on_start(updated: dict[str, Any]) -> None:
            self.live[job_id] = updated

        return Download(
            job_id=job_id,
            store=self.store,
            civitai=self.civitai,
            link=link,
            part_path=part_path,
            validator=row.get("validator"),
            expected_size=row.get("size"),
            connections=self.settings.connections,
            timeout=self.settings.timeout,
            throttle=self.throttle,
            on_progress=on_progress,
            on_start=on_start,
            active_s=row.get("elapsed_s") or 0.0,
        )

    async def _resolve_late(self, row: dict[str, Any]) -> dict[str, Any]:
        """A job queued while Civitai was unreachable: ask now, with the job's retries."""
        req = JobRequest.model_validate_json(job_secrets.revealed(row, "request"))
        attempts = row["attempts"] or 0
        while True:
            try:
                resolved = await self.civitai.resolve(req)
                break
            except errors.DaemonError as exc:
                attempts += 1
                if not exc.retryable or attempts >= self.settings.retries:
                    raise
                row = await self._wait_to_retry(row, attempts, exc)
        fields = await asyncio.to_thread(
            self.resolved_fields, resolved, row["model_type"], row.get("folder")
        )
        # Another worker may have learned meanwhile that its job is this same file (asked for in
        # other words): decided under the claim lock, so only one of them downloads it.
        async with self.claim_lock:
            if (problem := await job_query.taken(self.store, fields, row["id"])) is not None:
                raise problem
            return await self.store.update_job(row["id"], attempts=attempts, error=None, **fields)

    async def _wait_to_retry(
        self, row: dict[str, Any], attempts: int, exc: errors.DaemonError
    ) -> dict[str, Any]:
        """Show the job as waiting until its next attempt (Retry-After, else backoff), then as
        downloading again. A cancel or a stop during the wait ends it like any other moment."""
        wait = exc.retry_after if exc.retry_after is not None else backoff(attempts)
        retries = self.settings.retries
        log.warning(
            "job %s: attempt %d failed (%s); retrying in %.1f s", row["id"], attempts, exc, wait
        )
        row = await self.transition(
            row,
            JobStatus.WAITING,
            attempts=attempts,
            max_attempts=retries,
            speed_bps=0,
            next_attempt_at=utc_iso(time.time() + wait),
            error=f"Attempt {attempts} of {retries} failed: {exc}. Retrying.",
        )
        await asyncio.sleep(wait)
        return await self.transition(row, JobStatus.DOWNLOADING, next_attempt_at=None)

    async def _already_there(
        self, row: dict[str, Any], path: Path, expected: str | None
    ) -> dict[str, Any]:
        """A file at the final path: the right one completes the job; any other is kept."""
        if not expected:
            raise errors.FileConflict(str(path))
        actual = await asyncio.to_thread(files.sha256_file, path)
        if actual != expected:
            raise errors.FileConflict(str(path))
        log.info("job %s: %s is already in place and verified", row["id"], path)
        size = (await asyncio.to_thread(path.stat)).st_size
        return await self._complete(row, path, actual, size, 0.0)

    async def _check_folder(self, path: Path) -> None:
        """`path`'s folder, chosen as a real path when the job was queued, must not have become
        a link out of download_dir since: checked right before each step that names a file in
        it (a narrow window remains between the check and the step)."""
        await asyncio.to_thread(safefs.check_unmoved, path.parent, self.models_root)

    async def _complete(
        self, row: dict[str, Any], path: Path, sha256: str, size: int, elapsed: float, **note: str
    ) -> dict[str, Any]:
        self.finishing.add(row["id"])
        info = json.loads(row["info"]) if row.get("info") else {}
        if self.settings.save_metadata and info:
            await self._check_folder(path)
            await write_sidecars(path, info, self.http, self.civitai, row.get("fileId"), sha256)
        now = utcnow()
        state = await asyncio.to_thread(file_state, path)
        mtime_ns = state[1] if state else None
        await self.store.add_completed(
            {
                "job_id": row["id"],
                "model_type": row["model_type"],
                "modelId": row.get("modelId"),
                "modelVersionId": row.get("modelVersionId"),
                "fileId": row.get("fileId"),
                "filename": path.name,
                "path": str(path),
                "sha256": sha256,
                "size": size,
                "model_name": row.get("model_name"),
                "version_name": row.get("version_name"),
                **catalog.fields(info),  # base model, trigger words, the preview's NSFW mark
                "completed_at": now,
                "elapsed_s": elapsed,
                "mtime_ns": mtime_ns,
                "origin": origin_of(row, self.settings.hf_base_url),
            }
        )
        log.info("job %s completed: %s (%d bytes, sha256 %s)", row["id"], path, size, sha256)
        await forget_older(self.store, self.publish, path, row["id"])
        return await self.transition(
            row,
            JobStatus.COMPLETED,
            path=str(path),
            sha256=sha256,
            bytes_done=size,
            bytes_total=size,
            speed_bps=size / elapsed if elapsed > 0 else 0,
            elapsed_s=elapsed,
            error=await self.tracker.record(row, path, sha256),  # "track": only now, verified
            completed_at=now,
            mtime_ns=mtime_ns,
            **note,  # linked_from: the file it is a hard link to
        )


async def link_twin(
    store: Store, job_id: int, path: Path, sha256: str, models_root: Path
) -> tuple[str, int] | None:
    """`link_duplicates`: the same bytes already elsewhere under download_dir (checked by their
    hash) become a hard link at `path` instead of a second download (made through a descriptor
    of its folder, no link followed); the file linked to and its size."""
    found = await twins.find_copy(store, sha256, path.parent, models_root)
    if found is None:
        return None
    try:
        await asyncio.to_thread(twins.link_copy, found, path, models_root)
    except OSError as exc:
        log.warning("job %s: cannot link %s (%s); downloading it", job_id, found, exc)
        return None
    log.info("job %s: %s is a hard link to %s (same SHA256)", job_id, path, found)
    return str(found), (await asyncio.to_thread(path.stat)).st_size


FINISHED_SQL = "status in ('completed', 'cancelled', 'failed')"


async def forget_older(
    store: Store, publish: Callable[[Event], None], path: Path, job_id: int
) -> None:
    """A file's earlier rows (deleted and downloaded again, failed, cancelled) leave the history
    once it completes: one row per file, in every open browser too."""
    older = await job_query.delete(
        store, f"path = ? and id != ? and {FINISHED_SQL}", [str(path), job_id]
    )
    if older:
        publish(ClearedEvent(tuple(older)))


def size_mismatch(row: dict[str, Any], size: int) -> bool:
    """A file with no published SHA256 that its source sized exactly (a Hugging Face file kept
    in git) is checked by its size."""
    exact = row.get("verified_by") in ("size", "git-sha1")
    return exact and row.get("size") not in (None, size)


async def blob_mismatch(row: dict[str, Any], part_path: Path) -> str | None:
    """A Hugging Face file kept in git: its git blob SHA-1 when it is not the Hub's ETag."""
    if row.get("verified_by") != "git-sha1" or not row.get("git_sha1"):
        return None
    actual = await asyncio.to_thread(blob_sha1, part_path)
    return actual if actual != row["git_sha1"] else None


def swap_in(
    settings: Settings, part_path: Path, path: Path, replaces: dict[str, Any], model_type: str
) -> None:
    """Put a new version over the old one at the same path, in one atomic rename, after
    keeping or archiving the old bytes as `old_versions` says."""
    archive = settings.data_dir / "old_versions" / model_type
    files.preserve_before_swap(path, settings.old_versions, replaces.get("version_id"), archive)
    safefs.refuse_link(part_path)
    os.replace(part_path, path)
    fsync_dir(path.parent)


def retire_old(settings: Settings, models_root: Path, old: Path, model_type: str) -> None:
    """An update's new file sits at another path: `old_versions` decides the old one's fate."""
    archive = settings.data_dir / "old_versions" / model_type
    files.retire(old, settings.old_versions, archive, models_root)


def make_folder(folder: Path, models_root: Path) -> None:
    """The folder was chosen (as a real path) when the job was queued; if it has become a link
    out of download_dir since, the job fails rather than write through it."""
    safefs.check_unmoved(folder, models_root)
    folder.mkdir(parents=True, exist_ok=True)
    safefs.check_unmoved(folder, models_root)


def utc_iso(seconds: float) -> str:
    """A moment (seconds since the epoch) as ISO 8601 UTC with milliseconds and a Z."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_space(path: Path, part_path: Path, total: int | None) -> None:
    if not total:
        return
    have = os.lstat(part_path).st_size if safefs.is_file(part_path) else 0
    need = max(0, total - have)
    free = shutil.disk_usage(path.parent).free
    if need + SPACE_MARGIN > free:
        raise errors.NotEnoughSpace(need, free, str(path.parent), SPACE_MARGIN)


def place(part_path: Path, path: Path) -> None:
    """Rename the verified bytes into place, never over a file that appeared meanwhile."""
    safefs.refuse_link(part_path)
    try:
        os.link(part_path, path)  # fails if anything is at `path`
        os.unlink(part_path)
    except FileExistsError:
        raise errors.FileConflict(str(path)) from None
    except OSError:
        if path.exists():
            raise errors.FileConflict(str(path)) from None
        os.replace(part_path, path)  # filesystems without hard links
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def disk_error(exc: OSError, row: dict[str, Any]) -> str:
    where = Path(row.get("path") or ".").parent
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = "Not enough disk space" if exc.errno != errno.EFBIG else "The file is too large"
        return (
            f"{why} in {where} ({exc.strerror}). Free some space and retry the job; the part "
            f"already downloaded is kept."
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"Cannot write to {where}: {exc.strerror}. Check the folder's permissions."
    return f"Disk error in {where}: {exc.strerror or exc}"
