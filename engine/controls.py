"""A person's controls of a job that no worker holds: resume a paused job, change a job's
priority or move it in the queue: top, bottom, one place up or down, or before another job
(SPEC §14). Pause and cancel, which may have to stop
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
        self,
        job_id: int,
        priority: int | None = None,
        position: str | None = None,
        before: int | None = None,
    ) -> dict[str, Any]:
        """Give a queued, paused or waiting job a new priority, or a place in the queue's order
        (priority, then id): top, bottom, up, down, or just before job `before`."""
        async with self.claim_lock:
            row = await self._job(job_id)
            if row["status"] not in REORDERABLE:
                raise errors.WrongState(
                    f"Job {job_id} is {row['status']}; only the priority of a queued, paused or "
                    f"waiting job can be changed"
                )
            if priority is not None:
                if priority != row["priority"]:
                    row = await self.states.changed(row, priority=priority)
                return self.states.public(row)
            others = await self.store.jobs_where(
                f"{REORDERABLE_SQL} and id != ?", [job_id], order_by="priority, id"
            )
            index = self._index(row, others, position, before)
            for job, new in placed(row, others, index):
                changed = await self.states.changed(job, priority=new)
                if job["id"] == job_id:
                    row = changed
        return self.states.public(row)

    def _index(
        self,
        row: dict[str, Any],
        others: list[dict[str, Any]],
        position: str | None,
        before: int | None,
    ) -> int:
        """Where among the other jobs (in queue order) this one goes; up and down pass one job
        of its own state (the one the GUI shows next to it in its group)."""
        ids = [o["id"] for o in others]
        if before is not None:
            if before not in ids:
                raise errors.WrongState(
                    f"Job {before} is not another queued, paused or waiting job; a job can only "
                    f"be moved before one that is"
                )
            return ids.index(before)
        if position == "bottom":
            return len(others)
        key = (row["priority"], row["id"])
        kin = [i for i, o in enumerate(others) if o["status"] == row["status"]]
        if position == "up":
            ahead = [i for i in kin if (others[i]["priority"], others[i]["id"]) < key]
            return ahead[-1] if ahead else 0
        if position == "down":
            behind = [i for i in kin if (others[i]["priority"], others[i]["id"]) > key]
            return behind[0] + 1 if behind else len(others)
        return 0  # top

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


def placed(
    row: dict[str, Any], others: list[dict[str, Any]], index: int
) -> list[tuple[dict[str, Any], int]]:
    """The priority changes that put `row` at `index` among `others` (sorted by priority, id)
    and keep every other job's order: it takes its new neighbour's priority, and the jobs after it
    are raised just enough (by one where an older id would pass). Nothing else moves."""
    if index == 0:
        # Top: strictly first, or where it already is if it is ahead of all of them.
        first = others[0]["priority"] - 1 if others else row["priority"]
        mine = min(row["priority"], first)
        return [(row, mine)] if mine != row["priority"] else []
    previous = others[index - 1]
    mine = previous["priority"] + (1 if row["id"] < previous["id"] else 0)
    changes = [(row, mine)] if mine != row["priority"] else []
    last = (mine, row["id"])
    for job in others[index:]:
        if last < (job["priority"], job["id"]):
            break  # in order already, and so are the rest (they were sorted)
        new = last[0] + (1 if job["id"] < last[1] else 0)
        changes.append((job, new))
        last = (new, job["id"])
    return changes
