"""Asking Civitai in the background about the jobs a list queued before it was asked (SPEC §5).

A batch, a webhook or the manifest is answered before Civitai is asked; the resolver then asks
about those jobs in the order the workers will claim them, RESOLVE_AHEAD at a time, so the queue
shows names and sizes early and Civitai's "no" fails its job (on the feed and the webhooks) long
before a worker reaches it. A job a worker claims first is resolved by that worker, as is every
job while Civitai cannot be asked.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

import errors
import job_secrets
from engine import job_query
from engine.jobs import RUNNING, JobRequest, JobStatus
from events import JobEvent

if TYPE_CHECKING:
    from database import Store
    from engine.job_rows import JobRows
    from engine.states import JobStates
    from events import EventBus
    from sources.civitai import CivitaiClient

log = logging.getLogger("civitai.resolver")

RESOLVE_AHEAD = 8  # Civitai questions at once


class Spawner(Protocol):
    def spawn(self, coro: Any) -> asyncio.Task: ...


class ResolvingQueue(Protocol):
    """What the resolver needs of the queue it serves (daemon.DownloadQueue is one): the engine
    knows the queue only by this."""

    store: Store
    civitai: CivitaiClient
    job_rows: JobRows
    states: JobStates
    bus: EventBus
    workers: Spawner

    @property
    def claim_lock(self) -> asyncio.Lock: ...

    def public(self, row: dict[str, Any]) -> dict[str, Any]: ...


class Resolver:
    """The queue's background resolver: started on first wake, cancelled with the queue."""

    def __init__(self, queue: ResolvingQueue) -> None:
        self.queue = queue
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Wake the background resolver (started on first use; the queue cancels it at stop)."""
        if self._task is None or self._task.done():
            self._task = self.queue.workers.spawn(self._run())
        self._wake.set()

    async def _run(self) -> None:
        """Resolve a few dozen at a time until none is left, then wait for the next wake; while
        Civitai cannot be asked, too (the workers ask again meanwhile, with their retries)."""
        while True:
            self._wake.clear()
            rows = await self.queue.store.jobs_where(
                "status = 'queued' and download_url is null and request is not null",
                order_by="priority, id",
                limit=RESOLVE_AHEAD * 4,
            )
            if rows and await self._resolve(rows):
                continue
            await self._wake.wait()

    async def _resolve(self, rows: list[dict[str, Any]]) -> bool:
        """Resolve these queued jobs and store what Civitai said; False when it could not be
        asked (or a bug stopped it), so the resolver waits for the next wake."""
        limit = asyncio.Semaphore(RESOLVE_AHEAD)

        async def ask(row: dict[str, Any]) -> dict[str, Any] | errors.DaemonError:
            async with limit:
                try:
                    answer = await self.queue.civitai.resolve(
                        JobRequest.model_validate_json(job_secrets.revealed(row, "request"))
                    )
                    return await asyncio.to_thread(
                        self.queue.job_rows.resolved_fields,
                        answer,
                        row["model_type"],
                        row.get("folder"),
                    )
                except errors.DaemonError as exc:
                    return exc

        try:
            answers = await asyncio.gather(*(ask(row) for row in rows))
            return await self._store(rows, answers)
        except Exception:  # a bug must not spin the resolver: the workers resolve late
            log.exception("resolving queued jobs failed; the workers will ask Civitai")
            return False

    async def _store(
        self, rows: list[dict[str, Any]], answers: list[dict[str, Any] | errors.DaemonError]
    ) -> bool:
        """Under the claim lock, for the jobs still queued and unresolved: the resolved fields,
        or `failed` with Civitai's sentence, or `failed` as the same file as another active
        job (asked for in other words: a model id and its newest version id)."""
        reachable = not any(isinstance(a, errors.DaemonError) and a.retryable for a in answers)
        fields_of = [a for a in answers if isinstance(a, dict)]
        async with self.queue.claim_lock:
            ids = [row["id"] for row in rows]
            marks = ", ".join("?" for _ in ids)
            current = {
                r["id"]: r for r in await self.queue.store.jobs_where(f"id in ({marks})", ids)
            }
            store = self.queue.store
            by_key = await job_query.active_by_key(store, [f["dedupe_key"] for f in fields_of])
            by_path = await job_query.active_by_path(store, [f.get("path") for f in fields_of])
            for row, answer in zip(rows, answers, strict=True):
                job = current.get(row["id"])
                if isinstance(answer, dict) and job and job["status"] in RUNNING:
                    # Claimed meanwhile: its worker resolves it to this same file.
                    by_key.setdefault(answer["dedupe_key"], []).append(job)
            changes: list[tuple[int, dict[str, Any]]] = []
            failures: list[tuple[dict[str, Any], errors.DaemonError]] = []
            for row, answer in zip(rows, answers, strict=True):
                job = current.get(row["id"])
                if job is None or job["status"] != JobStatus.QUEUED or job.get("download_url"):
                    continue  # claimed, cancelled or resolved meanwhile: the worker asks itself
                if isinstance(answer, errors.DaemonError):
                    if not answer.retryable:
                        failures.append((job, answer))
                    continue
                same = [o for o in by_key.get(answer["dedupe_key"], []) if o["id"] != job["id"]]
                if same:
                    other = same[0]
                    error = errors.SameFileElsewhere(
                        other["id"], other["status"], other["model_type"]
                    )
                    failures.append((job, error))
                    continue
                holder = by_path.get(answer.get("path") or "")
                if holder is not None and holder["id"] != job["id"]:
                    failures.append((job, errors.PathTaken(holder, answer["path"])))
                    continue
                by_key.setdefault(answer["dedupe_key"], []).append({**job, **answer})
                if answer.get("path"):
                    by_path[answer["path"]] = {**job, **answer}
                changes.append((job["id"], answer))
            updated = await self.queue.store.update_jobs(changes)
            for job, error in failures:
                log.warning("job %s failed: %s", job["id"], error)
                await self.queue.states.transition(
                    job,
                    JobStatus.FAILED,
                    error=str(error),
                    retry_blocked=error.retry_blocked,
                    error_class=error.error_class,
                )
        self.queue.bus.publish_many([JobEvent(self.queue.public(job)) for job in updated])
        return reachable
