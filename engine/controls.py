"""A person's controls of a job that no worker holds: resume a paused job, change a job's
priority or move it to the top of the queue (SPEC §14). Pause and cancel, which may have to stop
a worker, are the workers' (workers.py).

Each is read and decided under the queue's claim lock, so a worker never claims a job halfway
through a change.
"""

from __future__ import annotations

import asyncio
from typing import Any

import errors
from database import Store
from engine.jobs import REORDERABLE, JobStatus
from engine.states import JobStates

REORDERABLE_SQL = "status in ({})".format(", ".join(f"'{s.value}'" for s in REORDERABLE))


class JobControls:
    """Resume and reorder jobs, through the one transition function (states.py)."""

    def __init__(
        self, store: Store, states: JobStates, claim_lock: asyncio.Lock, wake: asyncio.Event
    ) -> None:
        self.store = store
        self.states = states
        self.claim_lock = claim_lock
        self.wake = wake

    async def resume(self, job_id: int) -> dict[str, Any]:
        """A paused job goes back to the queue; its worker goes on from the saved bytes."""
        async with self.claim_lock:
            row = await self._job(job_id)
            if row["status"] != JobStatus.PAUSED:
                raise errors.WrongState(
                    f"Job {job_id} is {row['status']}; only a paused job can be resumed"
                )
            row = await self.states.transition(row, JobStatus.QUEUED, error=None)
        self.wake.set()
        return self.states.public(row)

    async def reorder(
        self, job_id: int, priority: int | None = None, top: bool = False
    ) -> dict[str, Any]:
        """Give a queued, paused or waiting job a new priority, or (top) one below every other
        such job's, so it is the next claimed; a job already ahead of all of them keeps its own."""
        async with self.claim_lock:
            row = await self._job(job_id)
            if row["status"] not in REORDERABLE:
                raise errors.WrongState(
                    f"Job {job_id} is {row['status']}; only the priority of a queued, paused or "
                    f"waiting job can be changed"
                )
            if top:
                lowest = await self._lowest_priority(job_id)
                priority = row["priority"] if lowest is None else min(row["priority"], lowest - 1)
            assert priority is not None
            if priority != row["priority"]:
                row = await self.states.changed(row, priority=priority)
        return self.states.public(row)

    async def _job(self, job_id: int) -> dict[str, Any]:
        row = await self.store.get_job(job_id)
        if row is None:
            raise errors.JobNotFound(job_id)
        return row

    async def _lowest_priority(self, job_id: int) -> int | None:
        rows = await self.store.jobs_where(
            f"{REORDERABLE_SQL} and id != ?", [job_id], order_by="priority", limit=1
        )
        return rows[0]["priority"] if rows else None
