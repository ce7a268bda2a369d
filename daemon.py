"""The download queue: persisted jobs, workers, retries, resume, SHA256, events (SPEC §4–§5).

request → JobRequest → Civitai resolution → row in SQLite (before the caller hears back) →
a worker claims it (lowest priority first, then oldest) → the runner (runner.py) downloads it
into `.part` → verify → atomic rename → sidecars → `completed` → events (WebSocket, webhooks).

The queue itself is here: submit, deduplicate, cancel, retry, pause. Beside it: a request's job
row (job_rows.py), the one transition function (states.py), the workers (workers.py), the
background resolver (resolver.py) and the runner of one job (runner.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import httpx

import errors
from config.settings import Settings
from database import Store
from engine import job_query
from engine.completed import CompletedFiles
from engine.completed import file_state as _file_state
from engine.controls import JobControls
from engine.job_rows import JobRows
from engine.jobs import ACTIVE_SQL, RUNNING_SQL, JobRequest, JobStatus
from engine.resolver import Resolver
from engine.runner import JobRunner
from engine.shared_copy import Shared
from engine.states import JobStates
from engine.workers import Workers
from events import ClearedEvent, EventBus, JobEvent
from library import manifest
from library.tracking import Tracker
from logger import safe_url
from sources.civitai import CivitaiClient

log = logging.getLogger("civitai.daemon")


class DownloadQueue:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        bus: EventBus,
        civitai: CivitaiClient,
        http: httpx.AsyncClient,
        manifest_lock: asyncio.Lock | None = None,
        shared: Shared | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.civitai = civitai
        self.http = http
        # Resolved once: download_dir may be a link (to a big disk); nothing below may lead out.
        self.models_root = Path(os.path.realpath(settings.models_dir))
        self.job_rows = JobRows(civitai, self.models_root, settings.folder_layout)  # row, path
        self.folder = self.job_rows.folder
        self.final_path = self.job_rows.final_path
        self._wake = asyncio.Event()
        self.claim_lock = asyncio.Lock()
        self.resolver = Resolver(self)  # asks Civitai about batch jobs ahead of the workers
        self._cancelling: dict[int, asyncio.Task] = {}  # job id → the task cancelling it
        self.states = JobStates(store, bus, self.models_root)
        self.completed = CompletedFiles(store)
        # The manifest lock is the daemon's one (shared with the updater and the scanner).
        self.tracker = Tracker(
            lambda: self.settings, manifest_lock or asyncio.Lock(), store, self.models_root
        )
        self.runner = JobRunner(
            settings=settings,
            store=store,
            civitai=civitai,
            http=http,
            publish=bus.publish,
            states=self.states,
            resolved_fields=self.job_rows.resolved_fields,
            models_root=self.models_root,
            cancelling=self._cancelling,
            claim_lock=self.claim_lock,
            tracker=self.tracker,
            shared=shared,
        )
        self.workers = Workers(
            store, self.states, self.runner, self.claim_lock, self._wake, self._cancelling
        )
        self.controls = JobControls(store, self.states, self.claim_lock, self._wake)

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

    def current_speed(self) -> float:
        """Bytes/s received by all jobs over the last few seconds; 0 when idle."""
        return round(self.runner.rate.rate(), 1)

    # Lifecycle --------------------------------------------------------------------------

    async def start(self, enqueue_manifest: bool = True) -> None:
        """Requeue what a stop or crash interrupted, then start the workers."""
        for row in await self.store.jobs_where(RUNNING_SQL):
            await self.store.update_job(
                row["id"], status=JobStatus.QUEUED, speed_bps=0, next_attempt_at=None
            )
            log.info("job %s: interrupted earlier; queued again to resume", row["id"])
        self.workers.start(self.settings.workers)
        if enqueue_manifest:
            self.workers.spawn(self.enqueue_manifest())

    async def stop(self) -> None:
        """Stop taking work; running jobs save their progress and go back to the queue."""
        await self.workers.stop()

    def apply(self, settings: Settings) -> None:
        """Settings changed while running: more or fewer workers (a running job is never
        stopped for it), and the runner's throttle, retries, connections and timeout."""
        self.settings = self.runner.settings = settings  # read at each use: retries, timeout…
        self.job_rows.layout = settings.folder_layout  # new jobs; queued ones keep their path
        self.runner.throttle.set_rate(settings.throttle)  # the running transfers' too
        self.workers.resize(settings.workers)

    # Submitting -------------------------------------------------------------------------

    async def submit(
        self, req: JobRequest, source: str = "api", replaces: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Queue a request; (job, created). The same file already active returns that job; the
        same file already completed and still in place returns that job with `duplicate: true`.

        Civitai's "no" (unknown model, bad URL, host not allowed) is raised to the caller; a
        Civitai that cannot be reached right now only delays resolution to the worker.
        """
        row = await self.job_rows.prepare(req, source, replaces)
        [outcome] = await self._enqueue([row])
        if isinstance(outcome, errors.DaemonError):
            raise outcome
        await self._track_existing([(row, outcome)])
        return outcome

    async def submit_many(
        self, entries: list[tuple[int, JobRequest]], source: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Queue many requests without waiting for Civitai; (jobs in the order given, errors by
        index). Each entry is checked as far as no network is needed (its folder; a direct URL's
        host; a civitai.com URL's form) and deduplicated by what it asks for; the new jobs are
        inserted in one transaction. Civitai is asked afterwards, a few at a time ahead of the
        workers (resolver.py): its "no" fails that job, with the sentence, on the feed and
        the webhooks. An entry without model_type is the exception: Civitai is asked first, as
        its model's type names its folder, and its "no" is that entry's error."""
        typed = [(i, req) for i, req in entries if req.model_type is not None]
        typeless = [(i, req) for i, req in entries if req.model_type is None]
        prepared = await asyncio.to_thread(self.job_rows.rows_without_civitai, typed, source)
        if typeless:  # the folder comes from the model's type on Civitai: asked now
            prepared += await self.job_rows.rows_asking_civitai(typeless, source)
            prepared.sort(key=lambda p: p[0])
        rows = [(index, row) for index, row in prepared if isinstance(row, dict)]
        failed = [
            {"index": index, "detail": str(problem)}
            for index, problem in prepared
            if not isinstance(problem, dict)
        ]
        jobs = []
        outcomes = await self._enqueue([row for _, row in rows])
        kept = []
        for (index, row), outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, errors.DaemonError):
                failed.append({"index": index, "detail": str(outcome)})
            else:
                jobs.append(outcome[0])
                kept.append((row, outcome))
        await self._track_existing(kept)
        failed.sort(key=lambda f: f["index"])
        self.resolver.wake()
        return jobs, failed

    async def _enqueue(
        self, rows: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any], bool] | errors.DaemonError]:
        """Insert the rows (one transaction) unless the same file is already active, earlier in
        `rows`, or completed and in place; per row, (job, created) or why it was refused."""
        # Before the lock: this may hash a file, and a slow disk must not stall claims and cancels.
        done = await self.completed.same_files_in_place(rows)
        keys = [key for row in rows for key in (row["dedupe_key"], row["request_key"])]
        outcomes: list[Any] = [None] * len(rows)
        async with self.claim_lock:
            found = await job_query.active_by_key(self.store, keys)
            by_key = {key: jobs[0] for key, jobs in found.items()}
            by_path = await job_query.active_by_path(self.store, [row.get("path") for row in rows])
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
                elif row.get("path") in by_path:  # another file will be written there
                    outcomes[i] = {"_holder": by_path[row["path"]], "path": row["path"]}
                else:
                    pending = {"_new": len(new), "model_type": row["model_type"]}
                    by_key[row["dedupe_key"]] = by_key[row["request_key"]] = pending
                    by_path.update({row["path"]: pending} if row.get("path") else {})
                    new.append(row)
                    outcomes[i] = pending
            inserted = await self.store.insert_jobs(new)
        created: set[int] = set()
        for i, row in enumerate(rows):
            other = outcomes[i]
            if isinstance(other, tuple):
                continue
            if "_holder" in other:
                outcomes[i] = errors.PathTaken(_job_of(other["_holder"], inserted), other["path"])
                continue
            job = _job_of(other, inserted)
            if job["model_type"] != row["model_type"] and job.get("folder") != row["folder"]:
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

    async def _track_existing(self, outcomes: list[tuple[dict[str, Any], Any]]) -> None:
        """A request to track whose file is already completed and in place is tracked now; one
        whose file is already queued or running marks that job, which tracks it when done."""
        for row, (job, created) in outcomes:
            if not row.get("track") or created:
                continue
            if not job["duplicate"]:
                await self.store.update_job(job["id"], track=1)
                current = await self.store.get_job(job["id"])
                if current is None or current["status"] != JobStatus.COMPLETED:
                    continue  # its runner tracks it once verified
            if job.get("modelId") and job.get("path"):
                await self.tracker.add(job)

    async def enqueue_manifest(self) -> list[manifest.Problem]:
        """Queue each manifest entry unless its file is already completed and in place."""
        _, entries, problems = manifest.load(self.settings.manifest_path)
        todo = [(i, req) for i, req in entries if not await self.completed.already_done(req)]
        queued, failed = await self.submit_many(todo, source="manifest")
        problems += not_queued(entries, failed)
        log_manifest_read(len(entries), len(entries) - len(todo), len(queued))
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

    async def pause(self, job_id: int) -> dict[str, Any]:
        """Pause a queued or running job; its .part and saved parts are kept."""
        return await self.workers.pause(job_id)

    async def resume(self, job_id: int) -> dict[str, Any]:
        """Queue a paused job again; it goes on from the saved bytes."""
        return await self.controls.resume(job_id)

    async def reorder(self, job_id: int, **change: Any) -> dict[str, Any]:
        """A new priority (`priority`) for a queued, paused or waiting job, or a new place in the
        queue (`position`, `before`)."""
        return await self.controls.reorder(job_id, **change)

    async def retry(self, job_id: int, force: bool = False) -> dict[str, Any]:
        """Queue a failed or cancelled job again; a failure no retry can fix (a 404, an archived
        model) only with `force`. Read and decided under the claim lock: of two retries at once,
        the second sees the job already queued (or running) and is refused."""
        async with self.claim_lock:
            row = await self.store.get_job(job_id)
            if row is None:
                raise errors.JobNotFound(job_id)
            if row["status"] not in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise errors.InvalidRequest(
                    f"Job {job_id} is {row['status']}; only failed or cancelled jobs can be retried"
                )
            blocked = row.get("retry_blocked") if row["status"] == JobStatus.FAILED else None
            if blocked and not force:
                raise errors.NotRetryable(job_id, blocked)
            duplicate = await self.store.jobs_where(
                f"dedupe_key = ? and id != ? and {ACTIVE_SQL}",
                [row["dedupe_key"], job_id],
            )
            if duplicate:
                return self.public(duplicate[0])
            row = await self.states.transition(
                row, JobStatus.QUEUED, attempts=0, error=None, completed_at=None
            )
        self._wake.set()
        return self.public(row)

    async def clear(self, where: str, args: list[Any]) -> list[int]:
        """Forget the finished jobs matching `where` (their rows and parts); never a file.
        Under the claim lock, so a job being retried at the same moment is either retried or
        cleared, never both."""
        async with self.claim_lock:
            ids = await job_query.delete(self.store, where, args)
        for job_id in ids:
            self.states.links.pop(job_id, None)
        if ids:
            log.info("cleared %d finished job(s) from the history", len(ids))
            self.bus.publish(ClearedEvent(tuple(ids)))  # every open browser drops the rows
        return ids

    def public(self, row: dict[str, Any]) -> dict[str, Any]:
        return self.states.public(row)

    def active_jobs(self) -> list[dict[str, Any]]:
        return self.states.active_jobs()


def _job_of(ref: dict[str, Any], inserted: list[dict[str, Any]]) -> dict[str, Any]:
    """A job `_enqueue` refers to: an active one, or the one inserted for a `_new` index."""
    return inserted[ref["_new"]] if "_new" in ref else ref


def not_queued(
    entries: list[tuple[int, JobRequest]], failed: list[dict[str, Any]]
) -> list[manifest.Problem]:
    """The manifest entries the queue refused, each logged."""
    model_ids = {i: req.modelId for i, req in entries}
    problems = []
    for f in failed:
        problem = manifest.Problem(f["index"], f["detail"], model_ids.get(f["index"]))
        log.warning("manifest.json %s not queued: %s", problem.where(), problem.detail)
        problems.append(problem)
    return problems


def log_manifest_read(entries: int, in_place: int, queued: int) -> None:
    """What a start made of manifest.json: the line to wait for before counting its jobs."""
    log.info(
        "manifest.json read: %d entries, %d already in place, %d in the queue",
        entries,
        in_place,
        queued,
    )
