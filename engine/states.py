"""The one place a job changes state, and the live rows of the jobs being run (SPEC §5).

Every transition is checked (jobs.check_transition), stored, then announced on the bus; the
queue, its workers, the runner and the resolver all change a job's state through here.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import errors
import safefs
from database import Store
from engine.connection import Link
from engine.jobs import ACTIVE, RUNNING, JobStatus, check_transition, public_job
from events import EventBus, JobEvent

log = logging.getLogger("civitai.daemon")


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
        if new is not JobStatus.WAITING:  # a next attempt is only ever announced while waiting
            fields.setdefault("next_attempt_at", None)
        if new is not JobStatus.FAILED:  # only a failure can be one a retry cannot help
            fields.setdefault("retry_blocked", None)
        updated = await self.store.update_job(row["id"], status=new.value, **fields)
        if new in RUNNING:
            self.live[row["id"]] = updated
        else:
            self.live.pop(row["id"], None)
        self.bus.publish(JobEvent(self.public(updated), previous=row["status"]))
        return updated

    async def changed(self, row: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Store and announce a change of a job that keeps its state (its priority)."""
        updated = await self.store.update_job(row["id"], **fields)
        self.bus.publish(JobEvent(self.public(updated), previous=row["status"]))
        return updated

    def public(self, row: dict[str, Any]) -> dict[str, Any]:
        live = self.live.get(row["id"])
        if live is not None and live["status"] == row["status"]:
            row = {**row, **{k: live[k] for k in ("bytes_done", "bytes_total", "speed_bps")}}
        return public_job(row)

    def active_jobs(self) -> list[dict[str, Any]]:
        return [public_job(r) for r in self.live.values()]

    async def fail(
        self,
        job_id: int,
        message: str,
        retry_blocked: str | None = None,
        error_class: str | None = None,
    ) -> None:
        """Fail an active job with `message`; `retry_blocked` says why a retry cannot help,
        `error_class` names the errors/ class it is counted under (GET /metrics)."""
        current = await self.store.get_job(job_id)
        if current is None or current["status"] not in ACTIVE:
            return
        log.error("job %s failed: %s", job_id, message)
        await self.transition(
            current,
            JobStatus.FAILED,
            error=message,
            speed_bps=0,
            retry_blocked=retry_blocked,
            error_class=error_class,
        )
        self.links.pop(job_id, None)

    async def stop_job(
        self, job_id: int, task: asyncio.Task, then: JobStatus = JobStatus.CANCELLED
    ) -> dict[str, Any]:
        """Wait until a stopped job's task has stopped writing, then end it `then`: cancelled
        (its .part removed) or paused (its .part and parts kept). When removing fails, the job
        fails with the reason: it never stays active with no task."""
        await asyncio.wait({task})
        row = await self.store.get_job(job_id)
        assert row is not None
        if row["status"] not in RUNNING:
            return row
        if then is JobStatus.PAUSED:
            row = await self.paused(row)
            log.info("job %s paused; %s bytes kept", job_id, row["bytes_done"])
            return row
        try:
            row = await self.cancelled(row)
        except Exception as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            await self.fail(
                job_id,
                f"Stopped, but the partial file {row['path']}.part could not be removed ({why}); "
                f"delete it, then retry or leave the job",
                error_class=type(exc).__name__,
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
        return await self.transition(
            row, JobStatus.CANCELLED, speed_bps=0, bytes_done=0, elapsed_s=0
        )

    async def paused(self, row: dict[str, Any]) -> dict[str, Any]:
        """Pause a job no worker runs (any more): the bytes saved in its parts are kept, and its
        link, so a resume goes on where it stopped."""
        parts = await self.store.get_parts(row["id"])
        kept = sum(p["done"] for p in parts) if parts else row.get("bytes_done") or 0
        return await self.transition(row, JobStatus.PAUSED, speed_bps=0, bytes_done=kept)

    def _remove_part(self, part_path: Path) -> None:
        """Remove a cancelled job's .part, never through a folder that became a link out."""
        try:
            safefs.check_unmoved(part_path.parent, self.models_root)
        except errors.FolderOutside as exc:
            log.warning("%s not removed: %s", part_path, exc)
            return
        part_path.unlink(missing_ok=True)
