"""Completed files: whether one is still in place, so the same file is not fetched twice.

A completed file is still "done" while it is a regular file (not a link) at its path with the
size and mtime recorded at completion; a record from before mtimes were kept is hashed instead.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from database import Store
from engine import job_query
from engine.jobs import JobRequest
from library.scanner import file_sha256

FileState = tuple[int, int, int]  # (size, mtime_ns, inode)


def file_state(path: Path) -> FileState | None:
    """(size, mtime_ns, inode) of a regular file at `path` itself; None for a link or nothing."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino) if stat.S_ISREG(st.st_mode) else None


async def completed_by_sha256(store: Store, hashes: list[str]) -> dict[str, list[dict[str, Any]]]:
    """`completed` records by lower-case SHA256, newest first; one query (400 hashes at a time)."""
    wanted = sorted({h.lower() for h in hashes})

    def op(db: Database) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(wanted), 400):
            chunk = wanted[start : start + 400]
            where = f"lower(sha256) in ({', '.join('?' for _ in chunk)})"
            for row in db["completed"].rows_where(where, chunk, order_by="id desc"):
                found.setdefault(row["sha256"].lower(), []).append(row)
        return found

    return await store.read(op) if wanted else {}


class CompletedFiles:
    """The completed jobs and `completed` records whose files are still in place."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def same_files_in_place(
        self, rows: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any], FileState] | None]:
        """Per row, the completed job of the same file whose file is still in place, and the
        file's state as seen. The same file: the same Civitai file or direct URL, the same
        version asked for in the same words (known before Civitai is asked), or the same SHA256
        at the same path."""
        keys = {row["dedupe_key"] for row in rows} | {
            row["request_key"] for row in rows if row["request_key"].startswith("civitai:")
        }
        by_key = await job_query.jobs_by_key(self.store, keys, ["completed"])  # newest first
        found: list[tuple[dict[str, Any], FileState] | None] = []
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
                if seen := await self.still_in_place(job):
                    match = (job, seen)
                    break
            found.append(match)
        return found

    async def still_in_place(self, done: dict[str, Any]) -> FileState | None:
        """Whether a completed file (a job or `completed` row) is still what was completed: a
        regular file, not a link, at its path with the size and mtime recorded at completion.
        A record from before mtimes were kept is hashed instead (through the scanner's cache).
        The file's (size, mtime_ns, inode) when it is; None when it is not."""
        size = done.get("bytes_total") or done.get("size")
        if not done.get("path") or not size:
            return None
        path = Path(done["path"])
        state = await asyncio.to_thread(file_state, path)
        if state is None or state[0] != size:
            return None
        if done.get("mtime_ns") is not None:
            return state if state[1] == done["mtime_ns"] else None
        if not done.get("sha256"):
            return None
        st = await asyncio.to_thread(os.lstat, path)
        sha, _ = await file_sha256(self.store, path, st)
        return state if sha == done["sha256"].lower() else None

    async def already_done(self, req: JobRequest) -> bool:
        """Whether a request's file was completed and is still in place."""
        for record in await self.store.find_completed(req.modelVersionId, req.modelId, req.sha256):
            if await self.still_in_place(record):
                return True
        return False
