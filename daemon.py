"""The download queue: persisted jobs, workers, retries, resume, SHA256, events (SPEC §4–§5).

request → JobRequest → Civitai resolution → row in SQLite (before the caller hears back) →
a worker claims it (lowest priority first, then oldest) → the runner (runner.py) downloads it
into `.part` → verify → atomic rename → sidecars → `completed` → events (WebSocket, webhooks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx

import errors
import manifest
import safefs
from civitai import CivitaiClient, Resolved
from completed import CompletedFiles, FileState
from completed import file_state as _file_state
from database import Store
from downloader import Link
from events import EventBus, JobEvent
from jobs import ACTIVE, JobRequest, JobStatus, check_transition, public_job
from logger import safe_url
from resolver import Resolver
from runner import JobRunner
from settings import Settings

log = logging.getLogger("civitai.daemon")


def request_key(req: JobRequest) -> str:
    """What makes two unresolved requests the same file."""
    if req.modelVersionId:
        return f"civitai:{req.modelVersionId}:{req.fileId or 'primary'}"
    if req.modelId:
        return f"model:{req.modelId}:{req.fileId or 'primary'}"
    return f"url:{req.url}"


class JobStates:
    """The one place a job changes state, and the live rows of the jobs being run."""

    def __init__(self, store: Store, bus: EventBus, models_root: Path) -> None:
        self.store = store
        self.bus = bus
        self.models_root = models_root
        self.live: dict[int, dict[str, Any]] = {}  # running jobs' rows, with their progress
        self.links: dict[int, Link] = {}  # a job's download link, kept across its retries

    async def transition(
        self, row: dict[str, Any], new: JobStatus, **fields: Any
    ) -> dict[str, Any]:
        """The one place a job changes state: checked, stored, then announced."""
        check_transition(row["id"], row["status"], new)
        updated = await self.store.update_job(row["id"], status=new.value, **fields)
        if new in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED):
            self.live.pop(row["id"], None)
        else:
            self.live[row["id"]] = updated
        self.bus.publish(JobEvent(self.public(updated)))
        return updated

    def public(self, row: dict[str, Any]) -> dict[str, Any]:
        live = self.live.get(row["id"])
        if live is not None and live["status"] == row["status"]:
            row = {**row, **{k: live[k] for k in ("bytes_done", "bytes_total", "speed_bps")}}
        return public_job(row)

    def active_jobs(self) -> list[dict[str, Any]]:
        return [public_job(r) for r in self.live.values()]

    async def fail(self, job_id: int, message: str) -> None:
        current = await self.store.get_job(job_id)
        if current is None or current["status"] not in ACTIVE:
            return
        log.error("job %s failed: %s", job_id, message)
        await self.transition(current, JobStatus.FAILED, error=message, speed_bps=0)
        self.links.pop(job_id, None)

    async def stop_job(self, job_id: int, task: asyncio.Task) -> dict[str, Any]:
        """Wait until a cancelled job's task has stopped writing, then remove its .part. When
        that fails, the job fails with the reason: it never stays active with no task."""
        await asyncio.wait({task})
        row = await self.store.get_job(job_id)
        assert row is not None
        if row["status"] not in ACTIVE:
            return row
        try:
            row = await self.cancelled(row)
        except Exception as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            await self.fail(
                job_id,
                f"Stopped, but the partial file {row['path']}.part could not be removed ({why}); "
                f"delete it, then retry or leave the job",
            )
            row = await self.store.get_job(job_id)
            assert row is not None
            return row
        log.info("job %s cancelled", job_id)
        return row

    async def cancelled(self, row: dict[str, Any]) -> dict[str, Any]:
        if row.get("path"):
            await asyncio.to_thread(self._remove_part, Path(row["path"] + ".part"))
        await self.store.set_parts(row["id"], [])
        self.links.pop(row["id"], None)
        return await self.transition(row, JobStatus.CANCELLED, speed_bps=0, bytes_done=0)

    def _remove_part(self, part_path: Path) -> None:
        """Remove a cancelled job's .part, never through a folder that became a link out."""
        try:
            safefs.check_unmoved(part_path.parent, self.models_root)
        except errors.FolderOutside as exc:
            log.warning("%s not removed: %s", part_path, exc)
            return
        part_path.unlink(missing_ok=True)


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
        self._wake = asyncio.Event()
        self._claim_lock = asyncio.Lock()
        self.resolver = Resolver(self)  # asks Civitai about batch jobs ahead of the workers
        self._cancelling: dict[int, asyncio.Task] = {}  # job id → the task cancelling it
        self.states = JobStates(store, bus, self.models_root)
        self.completed = CompletedFiles(store)
        self.runner = JobRunner(
            settings=settings,
            store=store,
            civitai=civitai,
            http=http,
            publish=bus.publish,
            states=self.states,
            resolved_fields=self._resolved_fields,
            models_root=self.models_root,
            cancelling=self._cancelling,
        )
        self.workers = Workers(
            store, self.states, self.runner, self._claim_lock, self._wake, self._cancelling
        )

    @property
    def paused(self) -> bool:
        """Workers claim no new job while paused."""
        return self.workers.paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self.workers.paused = value

    @property
    def network_bytes(self) -> int:
        """Bytes received since start (resumes make it less than sizes)."""
        return self.runner.network_bytes

    # Lifecycle --------------------------------------------------------------------------

    async def start(self, enqueue_manifest: bool = True) -> None:
        """Requeue what a stop or crash interrupted, then start the workers."""
        for row in await self.store.jobs_where("status in ('downloading', 'verifying')"):
            await self.store.update_job(row["id"], status=JobStatus.QUEUED, speed_bps=0)
            log.info("job %s: interrupted earlier; queued again to resume", row["id"])
        self.workers.start(self.settings.workers)
        if enqueue_manifest:
            self.workers.spawn(self.enqueue_manifest())

    async def stop(self) -> None:
        """Stop taking work; running jobs save their progress and go back to the queue."""
        await self.workers.stop()

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
    ) -> list[tuple[dict[str, Any], FileState] | None]:
        """Per row, the completed job of the same file still in place, and the file's state."""
        return await self.completed.same_files_in_place(rows)

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
        todo = [(i, req) for i, req in entries if not await self.completed.already_done(req)]
        _, failed = await self.submit_many(todo, source="manifest")
        for f in failed:
            log.warning("manifest.json entry %d not queued: %s", f["index"], f["detail"])
            problems.append(manifest.Problem(f["index"], f["detail"]))
        return problems

    # Control ----------------------------------------------------------------------------

    async def get(self, job_id: int) -> dict[str, Any]:
        row = await self.store.get_job(job_id)
        if row is None:
            raise errors.JobNotFound(job_id)
        return self.public(row)

    async def cancel(self, job_id: int) -> dict[str, Any]:
        """Cancel an active job; a job whose file is already being placed completes."""
        return await self.workers.cancel(job_id)

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
            row = await self.states.transition(
                row, JobStatus.QUEUED, attempts=0, error=None, completed_at=None
            )
        self._wake.set()
        return self.public(row)

    def public(self, row: dict[str, Any]) -> dict[str, Any]:
        return self.states.public(row)

    def active_jobs(self) -> list[dict[str, Any]]:
        return self.states.active_jobs()


class Workers:
    """The workers: each claims the next queued job (lowest priority first, then oldest) and
    awaits its run; a cancel stops a job's run. Claim, cancel and a job's task are kept
    consistent under the queue's claim lock: a job that is downloading or verifying always has
    its task in `running`."""

    def __init__(
        self,
        store: Store,
        states: JobStates,
        runner: JobRunner,
        claim_lock: asyncio.Lock,
        wake: asyncio.Event,
        cancelling: dict[int, asyncio.Task],
    ) -> None:
        self.store = store
        self.states = states
        self.runner = runner
        self.claim_lock = claim_lock
        self.wake = wake
        self.cancelling = cancelling  # job id → the task cancelling it
        self.finishing = runner.finishing  # the file is being placed: too late to cancel
        self.running: dict[int, asyncio.Task] = {}
        self.paused = False
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._stopping = False

    def start(self, count: int) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(n), name=f"worker-{n}") for n in range(count)
        ]

    async def stop(self) -> None:
        """Stop taking work; running jobs save their progress and go back to the queue."""
        self._stopping = True
        self.wake.set()
        # A cancel already decided finishes first: its job must end cancelled, not resume at the
        # next start as if nobody had asked.
        while self.cancelling:
            await asyncio.wait(set(self.cancelling.values()))
        tasks = self._tasks + list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, coro: Any) -> asyncio.Task:
        """A background task the queue owns and cancels at stop."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def cancel(self, job_id: int) -> dict[str, Any]:
        """Cancel an active job. Decided under the claim lock, so a worker never starts a job
        after its cancel was answered; a job whose file is already being placed completes."""
        async with self.claim_lock:
            stopping = self.cancelling.get(job_id)
            task = self.running.get(job_id)
            if stopping is None:
                row = await self.store.get_job(job_id)
                if row is None:
                    raise errors.JobNotFound(job_id)
                if row["status"] not in ACTIVE:
                    raise _not_cancellable(job_id, row["status"])
                if task is None:  # queued: no worker has it, and none can claim it meanwhile
                    return self.states.public(await self.states.cancelled(row))
                if job_id not in self.finishing:
                    task.cancel()  # now, under the lock: the job cannot reach its finish
                    stopping = self.spawn(self.states.stop_job(job_id, task))
                    self.cancelling[job_id] = stopping
                    stopping.add_done_callback(lambda _: self.cancelling.pop(job_id, None))
        if stopping is None:  # finishing: wait for it, then say it completed
            assert task is not None
            await asyncio.wait({task})
            row = await self.store.get_job(job_id)
            assert row is not None
            raise _not_cancellable(job_id, row["status"])
        return self.states.public(await asyncio.shield(stopping))

    async def _worker(self, n: int) -> None:
        while not self._stopping:
            row = None if self.paused else await self._claim()
            if row is None:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=1.0)
                continue
            job_id = row["id"]
            task = self.running[job_id]
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
                self.running.pop(job_id, None)
                self.finishing.discard(job_id)

    async def _claim(self) -> dict[str, Any] | None:
        """The next queued job, now downloading, with its task registered before the lock is
        released: a cancel sees either a queued job or a running task, never something between."""
        async with self.claim_lock:
            rows = await self.store.jobs_where(
                "status = 'queued'", order_by="priority, id", limit=1
            )
            if not rows:
                return None
            row = await self.states.transition(rows[0], JobStatus.DOWNLOADING, speed_bps=0)
            job_id = row["id"]
            self.running[job_id] = asyncio.create_task(self.runner.run(row), name=f"job-{job_id}")
            return row


def _not_cancellable(job_id: int, status: str) -> errors.DaemonError:
    if status == JobStatus.COMPLETED:
        return errors.JobFinished(f"Job {job_id} already completed; there is nothing to cancel")
    return errors.InvalidRequest(f"Job {job_id} is {status}; only active jobs can be cancelled")
