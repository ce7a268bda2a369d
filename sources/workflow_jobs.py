"""A workflow's models against this machine: present, queued, or with no source to fetch from.

Each model's folder is ComfyUI's `directory` mapped to a model type (`layout.model_type_of`) and
that type's folder under the configured layout. A model with a URL is queued as any job of that
URL (a civitai.com URL as a Civitai job, any other host by allowed_hosts), so the queue's
duplicate rules hold: the same URL returns the job already active, and a completed file in place
is answered as present.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import errors
import safefs
from engine import job_query
from engine.jobs import JobRequest, describe_errors
from library.layout import model_type_of
from library.scanner import file_sha256
from sources.workflow import Model

if TYPE_CHECKING:
    from database import Store
    from engine.job_rows import JobRows

STATUSES = ("present", "queued", "to_queue", "no_source", "refused")
SIZE_LOOKUPS = 4  # a preview asks the sources for this many sizes at once
log = logging.getLogger("civitai.workflow")


class SubmittingQueue(Protocol):
    """What a workflow needs of the queue (daemon.DownloadQueue is one): its store, how it
    makes rows, and submit_many; the sources know the queue only by this."""

    store: Store
    job_rows: JobRows

    async def submit_many(
        self, entries: list[tuple[int, JobRequest]], source: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]: ...


def _regular_stat(path: Path) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


class WorkflowJobs:
    """Answers a workflow's models for one queue (and queues the missing ones)."""

    def __init__(self, queue: SubmittingQueue) -> None:
        self.queue = queue
        self.layout = queue.job_rows.layout
        self.root = queue.job_rows.models_root

    def row_of(self, model: Model) -> dict[str, Any]:
        model_type = model_type_of(model.directory) or ""
        folder = self.layout.folder(model_type) if model_type else None
        return {
            **model.public(),
            "model_type": model_type or None,
            "folder": folder,
            "status": "refused" if model.problem else None,
            "detail": model.problem,
            "path": None,
            "job": None,
            "size": None,  # bytes, where its source says (a preview asks it)
        }

    def where(self, row: dict[str, Any]) -> Path:
        return self.root.joinpath(*row["folder"].split("/"), *row["name"].split("/"))

    async def present(self, rows: list[dict[str, Any]]) -> None:
        """Marks the rows whose file is in their folder, or is a completed job still in place.
        Where the workflow gives a SHA256, only a file of that SHA256 is it (hashed once, then
        cached by size and mtime): a file of the same name with another hash is refused."""
        for row in rows:
            if row["status"] is not None:
                continue
            path = self.where(row)
            if st := await asyncio.to_thread(_regular_stat, path):
                row["path"], row["size"] = str(path), st.st_size
                digest = row["sha256"] and (await file_sha256(self.queue.store, path, st))[0]
                if digest and digest != row["sha256"]:
                    row["status"], row["detail"] = (
                        "refused",
                        (
                            f"{path} is here, but its SHA256 is {digest}, not the workflow's "
                            f"{row['sha256']}: another file of that name. Move or rename it, then "
                            "post the workflow again to fetch its file"
                        ),
                    )
                else:
                    row["status"] = "present"
                continue
            where = "status = 'completed' and model_type = ? and "
            if row["sha256"]:  # the same bytes, whatever their name
                where, args = where + "lower(sha256) = ?", [row["model_type"], row["sha256"]]
            else:
                where, args = where + "filename = ?", [row["model_type"], path.name]
            jobs = await self.queue.store.jobs_where(where, args, order_by="id desc")
            for job in jobs:
                if job.get("path") and await asyncio.to_thread(safefs.is_file, Path(job["path"])):
                    row["status"], row["path"], row["job"] = "present", job["path"], job["id"]
                    row["size"] = job.get("bytes_total")
                    break

    def request_of(self, row: dict[str, Any]) -> JobRequest:
        req = JobRequest(
            url=row["url"],
            model_type=row["model_type"],
            filename=row["name"].rsplit("/", 1)[-1],
            sha256=row["sha256"],
        )
        if "/" in row["name"]:
            req._subfolder = row["name"].rsplit("/", 1)[0]
        return req

    async def answer(self, models: list[Model], dry_run: bool) -> list[dict[str, Any]]:
        rows = [self.row_of(m) for m in models]
        await self.present(rows)
        for row in rows:
            if row["status"] is None and not row["url"]:
                row["status"] = "no_source"
                row["detail"] = "The workflow names no URL for it: paste one to queue it"
        wanted = [(i, row) for i, row in enumerate(rows) if row["status"] is None]
        entries = []
        for index, row in wanted:
            try:
                entries.append((index, self.request_of(row)))
            except ValueError as exc:  # pydantic: an unusable URL or name
                row["status"], row["detail"] = "refused", _first_error(exc)
        active = await job_query.active_by_key(
            self.queue.store, [f"url:{req.url}" for _, req in entries]
        )
        entries = await self.after_failures(rows, entries, active)
        if dry_run:
            checked = await asyncio.to_thread(
                self.queue.job_rows.rows_without_civitai, entries, "workflow"
            )
            for index, outcome in checked:
                row = rows[index]
                if isinstance(outcome, Exception):
                    row["status"], row["detail"] = "refused", str(outcome)
                elif found := active.get(f"url:{row['url']}"):
                    row["status"], row["job"] = "queued", found[0]["id"]
                    row["path"] = found[0].get("path") or str(self.where(row))
                else:
                    row["status"] = "to_queue"
                    row["path"] = outcome.get("path") or str(self.where(row))
                    if row["detail"]:
                        row["detail"] += "; it would be queued again"
            await self.sizes(rows, entries)
            return rows
        jobs, failed = await self.queue.submit_many(entries, source="workflow")
        refused = {f["index"]: f["detail"] for f in failed}
        queued = iter(jobs)
        for index, req in entries:
            row = rows[index]
            if index in refused:
                row["status"], row["detail"] = "refused", refused[index]
                continue
            job = next(queued)
            # A URL job learns its file from its source later (a Hub answer); the name is the
            # workflow's and the folder the layout's, so this is where it lands.
            row["job"], row["path"] = job["id"], job.get("path") or str(self.where(row))
            row["status"] = "present" if job.get("duplicate") else "queued"
            if row["detail"] and row["status"] == "queued":
                row["detail"] += f"; queued again as job {job['id']}"
            row["new"] = not job.get("duplicate") and f"url:{req.url}" not in active
        return rows

    async def sizes(
        self, rows: list[dict[str, Any]], entries: list[tuple[int, JobRequest]]
    ) -> None:
        """The size of each model a preview would queue, as its source says (Civitai's file
        list, the Hub's HEAD), a few at a time; a source that cannot say leaves it unknown."""
        gate = asyncio.Semaphore(SIZE_LOOKUPS)

        async def one(index: int, req: JobRequest) -> None:
            async with gate:
                try:
                    rows[index]["size"] = (await self.queue.civitai.resolve(req)).size
                except errors.DaemonError as exc:
                    log.info("workflow preview: no size for %s: %s", rows[index]["name"], exc)

        await asyncio.gather(
            *(one(i, req) for i, req in entries if rows[i]["status"] == "to_queue")
        )

    async def after_failures(
        self,
        rows: list[dict[str, Any]],
        entries: list[tuple[int, JobRequest]],
        active: dict[str, list[dict[str, Any]]],
    ) -> list[tuple[int, JobRequest]]:
        """A model whose last job failed (and none runs now) is queued again, its row saying
        how the last one failed; unless that failure is one a retry cannot help (the job's
        `why_not_retryable`) and the workflow asks the same (a SHA256 it has since corrected
        is a new ask): then it is refused with why, and nothing is fetched again."""
        keys = [f"url:{req.url}" for _, req in entries if f"url:{req.url}" not in active]
        last: dict[str, dict[str, Any]] = {}
        for job in await self.queue.store.jobs_with_keys(keys, ["failed"]):  # newest first
            for key in {job["dedupe_key"], job.get("request_key")} & set(keys):
                last.setdefault(key, job)
        kept = []
        for index, req in entries:
            row, job = rows[index], last.get(f"url:{req.url}")
            if job is None:
                kept.append((index, req))
            elif (blocked := job.get("retry_blocked")) and _same_ask(job, req):
                row["status"], row["job"] = "refused", job["id"]
                row["detail"] = (
                    f"job {job['id']} failed and a retry cannot help: {blocked}. Fix the "
                    "workflow, or retry that job with force from the queue"
                )
            else:
                row["detail"] = f"job {job['id']} failed: {job.get('error') or 'no reason kept'}"
                kept.append((index, req))
        return kept


def summary(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    counts["new_jobs"] = sum(1 for row in rows if row.get("new"))
    counts["models"] = len(rows)
    return counts


def _same_ask(job: dict[str, Any], req: JobRequest) -> bool:
    return (job.get("sha256") or "").lower() == (req.sha256 or "")


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    return describe_errors(errors()) if callable(errors) else str(exc)
