"""The queue's workers: claim the next queued job, run it, and stop it when it is cancelled.

Claim, cancel and a job's task are decided under the queue's claim lock, so a cancel sees
either a queued job or a running task, never something between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import errors
from database import Store
from engine.jobs import ACTIVE, PAUSABLE, JobStatus
from engine.runner import JobRunner
from engine.states import JobStates

log = logging.getLogger("civitai.daemon")


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
        self._tasks: dict[int, asyncio.Task] = {}  # worker number → its task
        self.wanted = 0  # how many workers there should be; those numbered above stop
        self._background: set[asyncio.Task] = set()
        self._stopping = False

    def start(self, count: int) -> None:
        self.resize(count)

    def resize(self, count: int) -> None:
        """Have `count` workers. A worker beyond `count` finishes the job it runs, then stops:
        no running download is stopped by a smaller number."""
        self.wanted = count
        if self._stopping:
            return
        for n in range(count):
            task = self._tasks.get(n)
            if task is None or task.done():
                self._tasks[n] = asyncio.create_task(self._worker(n), name=f"worker-{n}")
        self.wake.set()  # idle workers beyond `count` stop now; new ones look for work

    async def stop(self) -> None:
        """Stop taking work; running jobs save their progress and go back to the queue."""
        self._stopping = True
        self.wake.set()
        # A cancel already decided finishes first: its job must end cancelled, not resume at the
        # next start as if nobody had asked.
        while self.cancelling:
            await asyncio.wait(set(self.cancelling.values()))
        tasks = list(self._tasks.values()) + list(self._background)
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
        return await self._stop(job_id, JobStatus.CANCELLED)

    async def pause(self, job_id: int) -> dict[str, Any]:
        """Pause a queued or running job: its transfer stops as at a cancel, but its .part and
        saved parts are kept. Decided under the claim lock, like a cancel."""
        return await self._stop(job_id, JobStatus.PAUSED)

    async def _stop(self, job_id: int, then: JobStatus) -> dict[str, Any]:
        async with self.claim_lock:
            stopping = self.cancelling.get(job_id)
            task = self.running.get(job_id)
            if stopping is None:
                row = await self.store.get_job(job_id)
                if row is None:
                    raise errors.JobNotFound(job_id)
                refusal = _refusal(job_id, row["status"], then)
                if refusal is not None:
                    raise refusal
                if task is None:  # queued or paused: no worker has it, and none can claim it
                    if then is JobStatus.PAUSED:
                        return self.states.public(await self.states.paused(row))
                    return self.states.public(await self.states.cancelled(row))
                if job_id not in self.finishing:
                    task.cancel()  # now, under the lock: the job cannot reach its finish
                    stopping = self.spawn(self.states.stop_job(job_id, task, then))
                    self.cancelling[job_id] = stopping
                    stopping.add_done_callback(lambda _: self.cancelling.pop(job_id, None))
        if stopping is None:  # finishing: wait for it, then say it completed
            assert task is not None
            await asyncio.wait({task})
            row = await self.store.get_job(job_id)
            assert row is not None
            raise _refusal(job_id, row["status"], then) or errors.WrongState(
                f"Job {job_id} is {row['status']}"
            )
        row = await asyncio.shield(stopping)
        if then is JobStatus.CANCELLED and row["status"] == JobStatus.PAUSED:
            return await self._stop(job_id, then)  # a cancel that came during a pause
        if then is JobStatus.PAUSED and row["status"] != JobStatus.PAUSED:
            # A cancel was under way, or the job ended by itself meanwhile.
            raise _refusal(job_id, row["status"], then) or errors.WrongState(
                f"Job {job_id} is {row['status']}"
            )
        return self.states.public(row)

    async def _worker(self, n: int) -> None:
        while not self._stopping and n < self.wanted:
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


def _refusal(job_id: int, status: str, then: JobStatus) -> errors.DaemonError | None:
    """Why a job in `status` cannot be stopped as `then` (cancelled or paused); None: it can."""
    if then is JobStatus.CANCELLED:
        if status in ACTIVE:
            return None
        if status == JobStatus.COMPLETED:
            return errors.JobFinished(f"Job {job_id} already completed; there is nothing to cancel")
        return errors.InvalidRequest(f"Job {job_id} is {status}; only active jobs can be cancelled")
    if status in PAUSABLE:
        return None
    if status == JobStatus.PAUSED:
        return errors.WrongState(f"Job {job_id} is already paused; resume it to go on")
    if status == JobStatus.COMPLETED:
        return errors.WrongState(f"Job {job_id} already completed; there is nothing to pause")
    return errors.WrongState(
        f"Job {job_id} is {status}; only a queued, waiting or running job can be paused "
        f"(retry it to download it again)"
    )
