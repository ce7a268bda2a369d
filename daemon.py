"""The download queue: persisted jobs, workers, retries, resume, SHA256, events (SPEC §4–§5).

request → JobRequest → Civitai resolution → row in SQLite (before the caller hears back) →
a worker claims it (lowest priority first, then oldest) → Download into `.part` → verify →
atomic rename → sidecars → `completed` → events (WebSocket, webhooks).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import httpx

import errors
import library
import manifest
import safefs
from civitai import CivitaiClient, Resolved, backoff
from database import Store, utcnow
from downloader import Download, Link, Throttle
from events import EventBus, JobEvent
from jobs import ACTIVE, JobRequest, JobStatus, check_transition, public_job
from logger import safe_url
from metadata import write_sidecars
from resolver import Resolver
from scanner import file_sha256
from settings import Settings

log = logging.getLogger("civitai.daemon")

PROGRESS_INTERVAL = 0.25  # at most 4 progress events a second per job
SPACE_MARGIN = 16 * 1024 * 1024


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def request_key(req: JobRequest) -> str:
    """What makes two unresolved requests the same file."""
    if req.modelVersionId:
        return f"civitai:{req.modelVersionId}:{req.fileId or 'primary'}"
    if req.modelId:
        return f"model:{req.modelId}:{req.fileId or 'primary'}"
    return f"url:{req.url}"


class DownloadQueue:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        bus: EventBus,
        civitai: CivitaiClient,
        http: httpx.AsyncClient,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.civitai = civitai
        self.http = http
        # Resolved once: download_dir may itself be a link (to a big disk); what lies below it
        # may not lead out of it.
        self.models_root = Path(os.path.realpath(settings.models_dir))
        self.throttle = Throttle(settings.throttle)
        self.paused = False
        self._wake = asyncio.Event()
        self._claim_lock = asyncio.Lock()
        self._workers: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self.resolver = Resolver(self)  # asks Civitai about batch jobs ahead of the workers
        # Claim, cancel and a job's task are kept consistent under `_claim_lock`: a job that is
        # downloading or verifying always has its task in `_running`.
        self._running: dict[int, asyncio.Task] = {}
        self._cancelling: dict[int, asyncio.Task] = {}  # job id → the task cancelling it
        self._finishing: set[int] = set()  # the file is being placed: too late to cancel
        self._links: dict[int, Link] = {}
        self._live: dict[int, dict[str, Any]] = {}
        self._stopping = False
        self.network_bytes = 0  # bytes received since start (resumes make it less than sizes)

    # Lifecycle --------------------------------------------------------------------------

    async def start(self, enqueue_manifest: bool = True) -> None:
        """Requeue what a stop or crash interrupted, then start the workers."""
        for row in await self.store.jobs_where("status in ('downloading', 'verifying')"):
            await self.store.update_job(row["id"], status=JobStatus.QUEUED, speed_bps=0)
            log.info("job %s: interrupted earlier; queued again to resume", row["id"])
        self._workers = [
            asyncio.create_task(self._worker(n), name=f"worker-{n}")
            for n in range(self.settings.workers)
        ]
        if enqueue_manifest:
            self.spawn(self.enqueue_manifest())

    async def stop(self) -> None:
        """Stop taking work; running jobs save their progress and go back to the queue."""
        self._stopping = True
        self._wake.set()
        # A cancel already decided finishes first: its job must end cancelled, not resume at the
        # next start as if nobody had asked.
        while self._cancelling:
            await asyncio.wait(set(self._cancelling.values()))
        tasks = self._workers + list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, coro: Any) -> asyncio.Task:
        """A background task the queue owns and cancels at stop."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # Submitting -------------------------------------------------------------------------

    async def submit(
        self, req: JobRequest, source: str = "api", replaces: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Queue a request; (job, created). The same file already active returns that job; the
        same file already completed and still in place returns that job with `duplicate: true`.

        Civitai's "no" (unknown model, bad URL, host not allowed) is raised to the caller; a
        Civitai that cannot be reached right now only delays resolution to the worker.
        """
        [outcome] = await self._enqueue([await self._prepare(req, source, replaces)])
        if isinstance(outcome, errors.DaemonError):
            raise outcome
        return outcome

    async def submit_many(
        self, entries: list[tuple[int, JobRequest]], source: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Queue many requests without waiting for Civitai; (jobs in the order given, errors by
        index). Each entry is checked as far as no network is needed (its folder; a direct URL's
        host; a civitai.com URL's form) and deduplicated by what it asks for; the new jobs are
        inserted in one transaction. Civitai is asked afterwards, a few at a time ahead of the
        workers (resolver.py): its "no" fails that job, with the sentence, on the feed and
        the webhooks."""
        prepared = await asyncio.to_thread(self._rows_without_civitai, entries, source)
        rows = [(index, row) for index, row in prepared if isinstance(row, dict)]
        failed = [
            {"index": index, "detail": str(problem)}
            for index, problem in prepared
            if not isinstance(problem, dict)
        ]
        jobs = []
        outcomes = await self._enqueue([row for _, row in rows])
        for (index, _), outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, errors.DaemonError):
                failed.append({"index": index, "detail": str(outcome)})
            else:
                jobs.append(outcome[0])
        failed.sort(key=lambda f: f["index"])
        self.resolver.wake()
        return jobs, failed

    def _rows_without_civitai(
        self, entries: list[tuple[int, JobRequest]], source: str
    ) -> list[tuple[int, dict[str, Any] | errors.DaemonError]]:
        """Each entry's job row as far as it is known without asking Civitai, or why it cannot
        be queued. Runs in a thread: it looks at folders."""
        folders: dict[str, errors.DaemonError | None] = {}
        out: list[tuple[int, dict[str, Any] | errors.DaemonError]] = []
        for index, req in entries:
            try:
                if req.model_type not in folders:
                    try:
                        self.folder(req.model_type)  # a link out: refused before Civitai
                        folders[req.model_type] = None
                    except errors.DaemonError as exc:
                        folders[req.model_type] = exc
                if (problem := folders[req.model_type]) is not None:
                    raise problem
                out.append((index, self._row(req, source, None, self._resolve_locally(req))))
            except errors.DaemonError as exc:
                out.append((index, exc))
        return out

    def _resolve_locally(self, req: JobRequest) -> Resolved | None:
        """A direct URL is resolved here (its host must be allowed: no network is needed to
        say so), and a civitai.com URL must name a model or a version; None: ask Civitai."""
        if req.url and not (req.modelId or req.modelVersionId):
            if not self.civitai.is_civitai_url(req.url):
                return self.civitai.resolve_direct(req)
            self.civitai.parse_url(req.url)
        return None

    async def _prepare(
        self, req: JobRequest, source: str, replaces: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The job row for a request, with what Civitai says about it."""
        note = None
        await asyncio.to_thread(self.folder, req.model_type)  # a link out: refused before Civitai
        try:
            resolved: Resolved | None = await self.civitai.resolve(req)
        except errors.Retryable as exc:
            resolved = None
            note = f"Civitai could not be asked yet ({exc}); the job will try again"
        if resolved is not None:  # names a path: looked at in a thread
            return await asyncio.to_thread(self._row, req, source, replaces, resolved, note)
        return self._row(req, source, replaces, resolved, note)

    def _row(
        self,
        req: JobRequest,
        source: str,
        replaces: dict[str, Any] | None,
        resolved: Resolved | None,
        note: str | None = None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "status": JobStatus.QUEUED,
            "model_type": req.model_type,
            "modelId": req.modelId,
            "modelVersionId": req.modelVersionId,
            "fileId": req.fileId,
            "url": req.url,
            "filename": req.filename,
            "sha256": req.sha256,
            "priority": req.priority,
            "dedupe_key": resolved.dedupe_key if resolved else request_key(req),
            "request_key": request_key(req),
            "source": source,
            "error": note,
            "request": req.model_dump_json(exclude_none=True),
            "replaces": json.dumps(replaces) if replaces else None,
        }
        if resolved:
            row.update(self._resolved_fields(resolved, req.model_type))
        return row

    async def _enqueue(
        self, rows: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any], bool] | errors.DaemonError]:
        """Insert the rows (one transaction) unless the same file is already active, earlier in
        `rows`, or completed and in place; per row, (job, created) or why it was refused."""
        # Before the lock: this may hash a file, and a slow disk must not stall claims and cancels.
        done = await self._completed_in_place(rows)
        keys = [key for row in rows for key in (row["dedupe_key"], row["request_key"])]
        outcomes: list[Any] = [None] * len(rows)
        async with self._claim_lock:
            by_key = {key: jobs[0] for key, jobs in (await self._active_by_key(keys)).items()}
            # Checked again under the lock, by a stat only: the file may have changed meanwhile.
            paths = [Path(d[0]["path"]) if d else None for d in done]
            states = await asyncio.to_thread(lambda: [p and _file_state(p) for p in paths])
            new: list[dict[str, Any]] = []
            for i, row in enumerate(rows):
                other = by_key.get(row["dedupe_key"]) or by_key.get(row["request_key"])
                if other is not None:
                    outcomes[i] = other  # settled below, once the new rows have their ids
                elif done[i] is not None and states[i] == done[i][1]:
                    job = done[i][0]
                    log.info("job %s: %s is already completed and in place", job["id"], job["path"])
                    outcomes[i] = ({**self.public(job), "duplicate": True}, False)
                else:
                    pending = {"_new": len(new), "model_type": row["model_type"]}
                    by_key[row["dedupe_key"]] = by_key[row["request_key"]] = pending
                    new.append(row)
                    outcomes[i] = pending
            inserted = await self.store.insert_jobs(new)
        created: set[int] = set()
        for i, row in enumerate(rows):
            other = outcomes[i]
            if isinstance(other, tuple):
                continue
            job = inserted[other["_new"]] if "_new" in other else other
            if job["model_type"] != row["model_type"]:
                outcomes[i] = errors.SameFileActive(job["id"], job["status"], job["model_type"])
            else:
                first = "_new" in other and job["id"] not in created
                created.add(job["id"])
                outcomes[i] = (self.public(job), first)
        if len(inserted) == 1:
            job = inserted[0]
            where = job.get("path") or job["model_type"]
            log.info("job %s queued: %s → %s", job["id"], safe_url(job["dedupe_key"]), where)
        elif inserted:
            log.info("jobs %s–%s queued", inserted[0]["id"], inserted[-1]["id"])
        self.bus.publish_many([JobEvent(self.public(job)) for job in inserted])
        if inserted:
            self._wake.set()
        return outcomes

    async def _active_by_key(self, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The active jobs whose dedupe_key or request_key is one of `keys`, oldest first."""
        by_key: dict[str, list[dict[str, Any]]] = {}
        for job in reversed(await self.store.jobs_with_keys(keys, list(ACTIVE))):
            for key in {job["dedupe_key"], job.get("request_key")} - {None}:
                by_key.setdefault(key, []).append(job)
        return by_key

    async def _completed_in_place(
        self, rows: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any], tuple[int, int, int]] | None]:
        """Per row, the completed job of the same file whose file is still in place, and the
        file's state as seen. The same file: the same Civitai file or direct URL, the same
        version asked for in the same words (known before Civitai is asked), or the same SHA256
        at the same path."""
        keys = {row["dedupe_key"] for row in rows} | {
            row["request_key"] for row in rows if row["request_key"].startswith("civitai:")
        }
        by_key: dict[str, list[dict[str, Any]]] = {}
        for job in await self.store.jobs_with_keys(sorted(keys), ["completed"]):  # newest first
            for key in {job["dedupe_key"], job.get("request_key")} & keys:
                by_key.setdefault(key, []).append(job)
        found: list[tuple[dict[str, Any], tuple[int, int, int]] | None] = []
        for row in rows:
            candidates = by_key.get(row["dedupe_key"], [])
            if row["request_key"].startswith("civitai:"):  # a "latest version" may have moved
                candidates = candidates + by_key.get(row["request_key"], [])
            candidates = [j for j in candidates if j["model_type"] == row["model_type"]]
            candidates.sort(key=lambda j: -j["id"])
            if row.get("sha256") and row.get("path"):
                candidates += await self.store.jobs_where(
                    "status = 'completed' and lower(sha256) = ? and path = ?",
                    [row["sha256"].lower(), row["path"]],
                    order_by="id desc",
                )
            match = None
            for job in candidates:
                if seen := await self._still_in_place(job):
                    match = (job, seen)
                    break
            found.append(match)
        return found

    async def _still_in_place(self, done: dict[str, Any]) -> tuple[int, int, int] | None:
        """Whether a completed file (a job or `completed` row) is still what was completed: a
        regular file, not a link, at its path with the size and mtime recorded at completion.
        A record from before mtimes were kept is hashed instead (through the scanner's cache).
        The file's (size, mtime_ns, inode) when it is; None when it is not."""
        size = done.get("bytes_total") or done.get("size")
        if not done.get("path") or not size:
            return None
        path = Path(done["path"])
        state = await asyncio.to_thread(_file_state, path)
        if state is None or state[0] != size:
            return None
        if done.get("mtime_ns") is not None:
            return state if state[1] == done["mtime_ns"] else None
        if not done.get("sha256"):
            return None
        st = await asyncio.to_thread(os.lstat, path)
        sha, _ = await file_sha256(self.store, path, st)
        return state if sha == done["sha256"].lower() else None

    def _resolved_fields(self, r: Resolved, model_type: str) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "modelId": r.model_id,
            "modelVersionId": r.version_id,
            "fileId": r.file_id,
            "download_url": r.download_url,
            "filename": r.filename,
            "sha256": r.sha256,
            "size": r.size,
            "bytes_total": r.size,
            "model_name": r.model_name,
            "version_name": r.version_name,
            "dedupe_key": r.dedupe_key,
        }
        if r.info is not None:
            fields["info"] = json.dumps(r.info)
        if r.filename:
            fields["path"] = str(self.final_path(model_type, r.filename))
        return fields

    def folder(self, model_type: str) -> Path:
        """The real folder of a model_type; one that leads out of download_dir is refused."""
        return safefs.real_folder(self.models_root / model_type, self.models_root)

    def final_path(self, model_type: str, filename: str) -> Path:
        folder = self.folder(model_type)
        path = folder / filename
        # The last guard; names are already made safe upstream.
        if path.parent != folder or path.name in ("", ".", ".."):
            raise errors.InvalidRequest(f"{filename!r} would be written outside {folder}")
        return path

    async def enqueue_manifest(self) -> list[manifest.Problem]:
        """Queue each manifest entry unless its file is already completed and in place."""
        _, entries, problems = manifest.load(self.settings.manifest_path)
        todo = [(i, req) for i, req in entries if not await self._already_done(req)]
        _, failed = await self.submit_many(todo, source="manifest")
        for f in failed:
            log.warning("manifest.json entry %d not queued: %s", f["index"], f["detail"])
            problems.append(manifest.Problem(f["index"], f["detail"]))
        return problems

    async def _already_done(self, req: JobRequest) -> bool:
        for record in await self.store.find_completed(req.modelVersionId, req.modelId, req.sha256):
            if await self._still_in_place(record):
                return True
        return False

    # Control ----------------------------------------------------------------------------

    async def get(self, job_id: int) -> dict[str, Any]:
        row = await self.store.get_job(job_id)
        if row is None:
            raise errors.JobNotFound(job_id)
        return self.public(row)

    async def cancel(self, job_id: int) -> dict[str, Any]:
        """Cancel an active job. Decided under the claim lock, so a worker never starts a job
        after its cancel was answered; a job whose file is already being placed completes."""
        async with self._claim_lock:
            stopping = self._cancelling.get(job_id)
            task = self._running.get(job_id)
            if stopping is None:
                row = await self.store.get_job(job_id)
                if row is None:
                    raise errors.JobNotFound(job_id)
                if row["status"] not in ACTIVE:
                    raise _not_cancellable(job_id, row["status"])
                if task is None:  # queued: no worker has it, and none can claim it meanwhile
                    return self.public(await self._cancelled(row))
                if job_id not in self._finishing:
                    task.cancel()  # now, under the lock: the job cannot reach its finish
                    stopping = self.spawn(self._stop_job(job_id, task))
                    self._cancelling[job_id] = stopping
                    stopping.add_done_callback(lambda _: self._cancelling.pop(job_id, None))
        if stopping is None:  # finishing: wait for it, then say it completed
            assert task is not None
            await asyncio.wait({task})
            row = await self.store.get_job(job_id)
            assert row is not None
            raise _not_cancellable(job_id, row["status"])
        return self.public(await asyncio.shield(stopping))

    async def _stop_job(self, job_id: int, task: asyncio.Task) -> dict[str, Any]:
        """Wait until a cancelled job's task has stopped writing, then remove its .part. When
        that fails, the job fails with the reason: it never stays active with no task."""
        await asyncio.wait({task})
        row = await self.store.get_job(job_id)
        assert row is not None
        if row["status"] not in ACTIVE:
            return row
        try:
            row = await self._cancelled(row)
        except Exception as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            await self._fail(
                job_id,
                f"Stopped, but the partial file {row['path']}.part could not be removed ({why}); "
                f"delete it, then retry or leave the job",
            )
            row = await self.store.get_job(job_id)
            assert row is not None
            return row
        log.info("job %s cancelled", job_id)
        return row

    async def _cancelled(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.get("path"):
            await asyncio.to_thread(self._remove_part, Path(row["path"] + ".part"))
        await self.store.set_parts(row["id"], [])
        self._links.pop(row["id"], None)
        return await self.transition(row, JobStatus.CANCELLED, speed_bps=0, bytes_done=0)

    async def retry(self, job_id: int) -> dict[str, Any]:
        """Queue a failed or cancelled job again. Read and decided under the claim lock: of two
        retries at once, the second sees the job already queued (or running) and is refused."""
        async with self._claim_lock:
            row = await self.store.get_job(job_id)
            if row is None:
                raise errors.JobNotFound(job_id)
            if row["status"] not in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise errors.InvalidRequest(
                    f"Job {job_id} is {row['status']}; only failed or cancelled jobs can be retried"
                )
            duplicate = await self.store.jobs_where(
                "dedupe_key = ? and id != ? and status in ('queued', 'downloading', 'verifying')",
                [row["dedupe_key"], job_id],
            )
            if duplicate:
                return self.public(duplicate[0])
            row = await self.transition(
                row, JobStatus.QUEUED, attempts=0, error=None, completed_at=None
            )
        self._wake.set()
        return self.public(row)

    async def transition(
        self, row: dict[str, Any], new: JobStatus, **fields: Any
    ) -> dict[str, Any]:
        """The one place a job changes state: checked, stored, then announced."""
        check_transition(row["id"], row["status"], new)
        updated = await self.store.update_job(row["id"], status=new.value, **fields)
        if new in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED):
            self._live.pop(row["id"], None)
        else:
            self._live[row["id"]] = updated
        self.bus.publish(JobEvent(self.public(updated)))
        return updated

    def public(self, row: dict[str, Any]) -> dict[str, Any]:
        live = self._live.get(row["id"])
        if live is not None and live["status"] == row["status"]:
            row = {**row, **{k: live[k] for k in ("bytes_done", "bytes_total", "speed_bps")}}
        return public_job(row)

    def active_jobs(self) -> list[dict[str, Any]]:
        return [public_job(r) for r in self._live.values()]

    # Workers ----------------------------------------------------------------------------

    async def _worker(self, n: int) -> None:
        while not self._stopping:
            row = None if self.paused else await self._claim()
            if row is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                continue
            job_id = row["id"]
            task = self._running[job_id]
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this worker is being stopped
                continue  # the job was cancelled, not this worker
            except Exception:
                log.exception("job %s: unexpected error", job_id)
            finally:
                self._running.pop(job_id, None)
                self._finishing.discard(job_id)

    async def _claim(self) -> dict[str, Any] | None:
        """The next queued job, now downloading, with its task registered before the lock is
        released: a cancel sees either a queued job or a running task, never something between."""
        async with self._claim_lock:
            rows = await self.store.jobs_where(
                "status = 'queued'", order_by="priority, id", limit=1
            )
            if not rows:
                return None
            row = await self.transition(rows[0], JobStatus.DOWNLOADING, speed_bps=0)
            job_id = row["id"]
            self._running[job_id] = asyncio.create_task(self._run(row), name=f"job-{job_id}")
            return row

    async def _run(self, row: dict[str, Any]) -> None:
        job_id = row["id"]
        try:
            row = await self._download(row)
        except asyncio.CancelledError:
            if job_id in self._cancelling:
                raise  # cancel() cleans up once this task has stopped
            current = await self.store.get_job(job_id) or row
            if current["status"] in (JobStatus.DOWNLOADING, JobStatus.VERIFYING):
                await self.transition(current, JobStatus.QUEUED, speed_bps=0)
                log.info("job %s: stopping; progress kept for the next start", job_id)
            raise
        except errors.DaemonError as exc:
            await self._fail(job_id, str(exc))
        except OSError as exc:
            await self._fail(job_id, _disk_error(exc, row))
        except Exception as exc:  # a bug must fail one job, not the worker
            log.exception("job %s: unexpected error", job_id)
            await self._fail(job_id, safe_url(f"Internal error: {type(exc).__name__}: {exc}"))

    async def _fail(self, job_id: int, message: str) -> None:
        current = await self.store.get_job(job_id)
        if current is None or current["status"] not in ACTIVE:
            return
        log.error("job %s failed: %s", job_id, message)
        await self.transition(current, JobStatus.FAILED, error=message, speed_bps=0)
        self._links.pop(job_id, None)

    async def _download(self, row: dict[str, Any]) -> dict[str, Any]:
        job_id = row["id"]
        attempts = row["attempts"] or 0
        if not row.get("download_url"):
            row = await self._resolve_late(row)
        path = Path(row["path"])
        part_path = path.with_name(path.name + ".part")
        await asyncio.to_thread(self._make_folder, path.parent)
        expected = (row.get("sha256") or "").lower() or None

        replaces = json.loads(row["replaces"]) if row.get("replaces") else None
        swap = replaces is not None and replaces.get("path") == str(path)
        if await asyncio.to_thread(path.exists):
            if not swap:
                return await self._already_there(row, path, expected)
            actual = await asyncio.to_thread(library.sha256_file, path)
            if actual == expected:
                size = (await asyncio.to_thread(path.stat)).st_size
                return await self._complete(row, path, actual, size, 0.0)
            if actual != (replaces.get("sha256") or "").lower():
                raise errors.FileConflict(str(path))  # not the file the daemon put there
        self._check_space(path, part_path, row.get("bytes_total") or row.get("size"))

        link = self._links.setdefault(job_id, Link(self.civitai, row["download_url"]))
        refetched = False
        started = time.monotonic()
        while True:
            # The .part is opened (and discarded) by name: its folder is checked each time.
            await self._check_folder(path)
            download = self._make_download(row, link, part_path)
            try:
                result = await download.run()
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
                    raise errors.DaemonError(
                        f"Gave up after {attempts} attempts; last error: {exc}"
                    ) from None
                wait = exc.retry_after if exc.retry_after is not None else backoff(attempts)
                log.warning(
                    "job %s: attempt %d failed (%s); retrying in %.1f s",
                    job_id,
                    attempts,
                    exc,
                    wait,
                )
                row = await self.store.update_job(
                    job_id,
                    attempts=attempts,
                    speed_bps=0,
                    error=f"Attempt {attempts} of {self.settings.retries} failed: {exc}. Retrying.",
                )
                self._live[job_id] = row
                self.bus.publish(JobEvent(self.public(row)))
                await asyncio.sleep(wait)
                continue
            self.network_bytes += download.fetched
            await self._check_folder(path)  # before the .part is discarded, kept or placed
            row = await self.transition(
                row, JobStatus.VERIFYING, bytes_done=result.size, bytes_total=result.size
            )
            if expected and result.sha256 != expected:
                if not refetched:
                    log.warning(
                        "job %s: SHA256 mismatch (%s); fetching once more", job_id, result.sha256
                    )
                    await download.discard()
                    refetched = True
                    row = await self.transition(row, JobStatus.DOWNLOADING, bytes_done=0)
                    continue
                kept = path.with_name(path.name + ".unverified")
                await self._check_folder(path)
                await asyncio.to_thread(safefs.refuse_link, part_path)
                await asyncio.to_thread(os.replace, part_path, kept)
                await self.store.set_parts(job_id, [])
                raise errors.HashMismatch(expected, result.sha256, str(kept))
            break

        self._finishing.add(job_id)  # from here on a cancel waits and is told it completed
        await self._check_folder(path)  # the transfer may have taken minutes
        if swap and await asyncio.to_thread(path.exists):
            await asyncio.to_thread(self._swap, part_path, path, replaces, row["model_type"])
        else:
            await asyncio.to_thread(self._place, part_path, path)
            if replaces and self.settings.manifest_mode == "replace":
                archive = self.settings.data_dir / "old_versions" / row["model_type"]
                await asyncio.to_thread(
                    library.retire, Path(replaces["path"]), self.settings.old_versions, archive
                )
        await self.store.set_parts(job_id, [])
        self._links.pop(job_id, None)
        elapsed = max(time.monotonic() - started, 1e-6)
        return await self._complete(row, path, result.sha256, result.size, elapsed)

    def _make_download(self, row: dict[str, Any], link: Link, part_path: Path) -> Download:
        job_id = row["id"]
        meter = _SpeedMeter()

        def on_progress(done: int, total: int | None) -> None:
            live = self._live.get(job_id)
            if live is None:
                return
            live["bytes_done"] = done
            live["bytes_total"] = total or live.get("bytes_total")
            speed = meter.update(done)
            if speed is not None:
                live["speed_bps"] = speed
                self.bus.publish(JobEvent(self.public(live), progress=True))

        def on_start(updated: dict[str, Any]) -> None:
            self._live[job_id] = updated

        return Download(
            job_id=job_id,
            store=self.store,
            http=self.http,
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
        )

    async def _resolve_late(self, row: dict[str, Any]) -> dict[str, Any]:
        """A job queued while Civitai was unreachable: ask now, with the job's retries."""
        req = JobRequest.model_validate_json(row["request"])
        attempts = row["attempts"] or 0
        while True:
            try:
                resolved = await self.civitai.resolve(req)
                break
            except errors.DaemonError as exc:
                attempts += 1
                if not exc.retryable or attempts >= self.settings.retries:
                    raise
                await self.store.update_job(row["id"], attempts=attempts, error=f"{exc}. Retrying.")
                await asyncio.sleep(
                    exc.retry_after if exc.retry_after is not None else backoff(attempts)
                )
        fields = self._resolved_fields(resolved, row["model_type"])
        return await self.store.update_job(row["id"], attempts=attempts, error=None, **fields)

    async def _already_there(
        self, row: dict[str, Any], path: Path, expected: str | None
    ) -> dict[str, Any]:
        """A file at the final path: the right one completes the job; any other is kept."""
        if not expected:
            raise errors.FileConflict(str(path))
        actual = await asyncio.to_thread(library.sha256_file, path)
        if actual != expected:
            raise errors.FileConflict(str(path))
        log.info("job %s: %s is already in place and verified", row["id"], path)
        size = (await asyncio.to_thread(path.stat)).st_size
        return await self._complete(row, path, actual, size, 0.0)

    def _make_folder(self, folder: Path) -> None:
        """The folder was chosen (as a real path) when the job was queued; if it has become a
        link out of download_dir since, the job fails rather than write through it."""
        safefs.check_unmoved(folder, self.models_root)
        folder.mkdir(parents=True, exist_ok=True)
        safefs.check_unmoved(folder, self.models_root)

    async def _check_folder(self, path: Path) -> None:
        """`path`'s folder, chosen as a real path when the job was queued, must not have become
        a link out of download_dir since: checked right before each step that names a file in
        it (a narrow window remains between the check and the step)."""
        await asyncio.to_thread(safefs.check_unmoved, path.parent, self.models_root)

    def _remove_part(self, part_path: Path) -> None:
        """Remove a cancelled job's .part, never through a folder that became a link out."""
        try:
            safefs.check_unmoved(part_path.parent, self.models_root)
        except errors.FolderOutside as exc:
            log.warning("%s not removed: %s", part_path, exc)
            return
        part_path.unlink(missing_ok=True)

    def _check_space(self, path: Path, part_path: Path, total: int | None) -> None:
        if not total:
            return
        have = os.lstat(part_path).st_size if safefs.is_file(part_path) else 0
        need = max(0, total - have)
        free = shutil.disk_usage(path.parent).free
        if need + SPACE_MARGIN > free:
            raise errors.NotEnoughSpace(need, free, str(path.parent), SPACE_MARGIN)

    def _swap(self, part_path: Path, path: Path, replaces: dict[str, Any], model_type: str) -> None:
        """Put a new version over the old one at the same path, in one atomic rename, after
        keeping or archiving the old bytes as `old_versions` says."""
        archive = self.settings.data_dir / "old_versions" / model_type
        library.preserve_before_swap(
            path, self.settings.old_versions, replaces.get("version_id"), archive
        )
        safefs.refuse_link(part_path)
        os.replace(part_path, path)
        fsync_dir(path.parent)

    @staticmethod
    def _place(part_path: Path, path: Path) -> None:
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

    async def _complete(
        self, row: dict[str, Any], path: Path, sha256: str, size: int, elapsed: float
    ) -> dict[str, Any]:
        self._finishing.add(row["id"])
        if self.settings.save_metadata and row.get("info"):
            info = json.loads(row["info"])
            await self._check_folder(path)
            await write_sidecars(path, info, self.http, self.civitai)
        now = utcnow()
        state = await asyncio.to_thread(_file_state, path)
        mtime_ns = state[1] if state else None
        await self.store.add_completed(
            {
                "job_id": row["id"],
                "model_type": row["model_type"],
                "modelId": row.get("modelId"),
                "modelVersionId": row.get("modelVersionId"),
                "filename": path.name,
                "path": str(path),
                "sha256": sha256,
                "size": size,
                "model_name": row.get("model_name"),
                "version_name": row.get("version_name"),
                "completed_at": now,
                "elapsed_s": elapsed,
                "mtime_ns": mtime_ns,
            }
        )
        log.info("job %s completed: %s (%d bytes, sha256 %s)", row["id"], path, size, sha256)
        return await self.transition(
            row,
            JobStatus.COMPLETED,
            path=str(path),
            sha256=sha256,
            bytes_done=size,
            bytes_total=size,
            speed_bps=size / elapsed if elapsed > 0 else 0,
            elapsed_s=elapsed,
            error=None,
            completed_at=now,
            mtime_ns=mtime_ns,
        )


class _SpeedMeter:
    """Bytes/s over the last second or so; a value at most every PROGRESS_INTERVAL."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self.last_emit = 0.0

    def update(self, done: int) -> float | None:
        now = time.monotonic()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > 2.0:
            self.samples.pop(0)
        if now - self.last_emit < PROGRESS_INTERVAL:
            return None
        self.last_emit = now
        t0, d0 = self.samples[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0


def _not_cancellable(job_id: int, status: str) -> errors.DaemonError:
    if status == JobStatus.COMPLETED:
        return errors.JobFinished(f"Job {job_id} already completed; there is nothing to cancel")
    return errors.InvalidRequest(f"Job {job_id} is {status}; only active jobs can be cancelled")


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """(size, mtime_ns, inode) of a regular file at `path` itself; None for a link or nothing."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _disk_error(exc: OSError, row: dict[str, Any]) -> str:
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
