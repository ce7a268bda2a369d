"""A job's saved progress: its parts as SQLite holds them, read back at a resume.

Progress is made durable in this order: write, fsync, then commit each part's offset to SQLite;
after a crash every committed byte is on disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import safefs
from database import Store
from engine.transfer import Part
from engine.writer import FileWriter

log = logging.getLogger("civitai.downloader")

# Progress is made durable 4 times a second (fsync on its own thread, so writes never wait):
# a crash re-fetches at most about a quarter second of data per connection.
CHECKPOINT_SECONDS = 0.25


class SavedProgress:
    """The parts of one job's file as SQLite holds them."""

    def __init__(self, job_id: int, store: Store, active_s: float = 0.0) -> None:
        self.job_id = job_id
        self.store = store
        self.active_s = active_s  # seconds spent transferring in earlier attempts and runs
        self._since: float | None = None
        self._layout = 0  # the parts' layout (pieces.py) the database holds

    def start_clock(self) -> None:
        """Bytes flow from now on: the job's active time (its `elapsed_s`) grows until the end."""
        self._since = time.monotonic()

    def active(self) -> float:
        """Seconds this job has spent transferring, saved with each commit: waits between
        attempts and time in the queue are not in it; a resume after a restart adds to it."""
        return self.active_s + (time.monotonic() - self._since if self._since else 0.0)

    async def restore(self, part_path: Path) -> list[Part] | None:
        """The parts of an earlier run, never past what the .part holds; None when there is
        nothing to resume from (parts recorded for a .part that is gone are forgotten)."""
        rows = await self.store.get_parts(self.job_id)
        await asyncio.to_thread(safefs.refuse_link, part_path)
        if rows and await asyncio.to_thread(safefs.is_file, part_path):
            on_disk = (await asyncio.to_thread(os.lstat, part_path)).st_size
            parts = []
            for r in rows:
                # Never trust an offset past what the file holds (it was changed behind us).
                done = max(0, min(r["done"], on_disk - r["start"]))
                parts.append(Part(r["idx"], r["start"], r["end"], done, done))
            return sorted(parts, key=lambda p: p.start)  # a steal appends a part out of order
        if rows:
            await self.store.set_parts(self.job_id, [])
        return None

    async def plan(
        self, parts: list[Part], total: int | None, validator: str | None
    ) -> dict[str, Any]:
        """Persist the parts before any byte lands; the job's row as updated."""
        return await self.store.set_parts(
            self.job_id, [p.row() for p in parts], bytes_total=total, validator=validator
        )

    async def commit(self, writer: FileWriter, parts: list[Part]) -> None:
        """fsync what was written, then record each part's offset; after a steal split a part
        (pieces.py), all the rows anew."""
        if writer.fd < 0:
            return
        layout = writer.pieces.layout
        synced = {s["idx"]: s["done"] for s in await writer.call(writer.sync)}
        changed = []
        for p in list(parts):
            if p.idx in synced and synced[p.idx] != p.done:
                p.done = synced[p.idx]
                changed.append({"idx": p.idx, "done": p.done})
        done = sum(p.done for p in parts)
        fields = {"bytes_done": done, "elapsed_s": self.active()}
        if layout != self._layout:
            rows = [p.row() for p in list(parts)]  # each `done` fsynced before it is recorded
            await self.store.set_parts(self.job_id, rows, **fields)
            self._layout = layout
        else:
            await self.store.save_progress(self.job_id, changed, **fields)

    async def checkpoints(self, writer: FileWriter, parts: list[Part]) -> None:
        """Commit every CHECKPOINT_SECONDS until cancelled."""
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                await self.commit(writer, parts)
            except Exception as exc:  # OSError, or SQLite's "disk is full": try again next time
                log.warning("job %s: cannot save progress: %s", self.job_id, exc)

    async def forget(self) -> None:
        """No parts: the next run starts from byte 0."""
        await self.store.set_parts(self.job_id, [])
