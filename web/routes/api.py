"""The REST API for jobs (SPEC §6): queue, inspect and control downloads."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

import json_body
from daemon import DownloadQueue
from engine import job_query
from engine.jobs import MAX_ID, Job, JobRequest, JobStatus
from errors import InvalidRequest
from library import holdings
from library.layout import model_type_of
from library.manifest import parse_entries
from web.auth import require_key
from web.uploads import file_or_json

router = APIRouter(prefix="/api", tags=["jobs"], dependencies=[Depends(require_key)])

JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="A job id")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]

MAX_BATCH = 5000


class BatchError(BaseModel):
    index: int
    detail: str


class BatchResult(BaseModel):
    jobs: list[Job]
    errors: list[BatchError]


class Status(BaseModel):
    active: list[Job]
    queued: int
    workers: int
    paused: bool
    uptime_s: float
    version: str
    current_speed_bps: float = Field(
        description="Bytes/s received by all jobs over the last 3 seconds; 0 when idle."
    )
    disk: Disk = Field(description="The disk download_dir is on, in bytes (shutil.disk_usage).")
    library_bytes: int = Field(
        description="Bytes of the completed models the library lists (each path once)."
    )
    average_speed_bps: float = Field(
        description="Bytes of the completed downloads over the seconds they spent transferring "
        "(not queued or waiting between attempts); files found in place or adopted are left out."
    )


class Disk(BaseModel):
    path: str
    total: int
    used: int
    free: int


class JobList(BaseModel):
    jobs: list[Job]
    total: int
    limit: int
    offset: int
    counts: dict[str, int] = Field(
        description="Jobs of each status among those that match the search `q`"
    )


class Completed(BaseModel):
    id: int
    job_id: int | None = None
    model_type: str
    modelId: int | None = None  # noqa: N815
    modelVersionId: int | None = None  # noqa: N815
    filename: str
    path: str
    sha256: str
    size: int
    model_name: str | None = None
    version_name: str | None = None
    base_model: str | None = None
    completed_at: str
    has_preview: bool = False  # a `.preview.png` (or older `.preview.<ext>`) lies beside it


class CompletedList(BaseModel):
    completed: list[Completed]
    total: int
    limit: int
    offset: int


class Metrics(BaseModel):
    jobs_by_status: dict[str, int]
    bytes_downloaded: int
    bytes_fetched_since_start: int
    average_speed_bps: float
    current_speed_bps: float
    failures: int
    queue_length: int
    active: int
    webhooks_delivered: int
    webhooks_failed: int
    last_update_check: dict[str, Any] | None = None


def queue_of(request: Request) -> DownloadQueue:
    return request.app.state.queue


@router.post(
    "/download",
    status_code=202,
    response_model=Job,
    responses={
        200: {"model": Job, "description": "Already completed and in place: `duplicate` true"},
        409: {"description": "The same file is queued or running under another model_type"},
    },
)
async def download(req: JobRequest, request: Request, response: Response) -> dict[str, Any]:
    """Queue one download. The same file already queued or running returns that job; the same
    file already completed and still in place returns that job at once, with `duplicate` true."""
    job, _ = await queue_of(request).submit(req, source="api")
    if job["duplicate"]:
        response.status_code = 200
    return job


@router.post(
    "/batch",
    status_code=202,
    response_model=BatchResult,
    responses={422: {"description": "No entry could be queued"}},
)
async def batch(request: Request) -> Any:
    """A JSON array of job requests, or a multipart upload of a manifest file (field `file`).
    Each bad entry is reported by its index; the good ones are queued."""
    entries = await _read_batch(request)
    if len(entries) > MAX_BATCH:
        raise InvalidRequest(f"A batch holds at most {MAX_BATCH} entries, not {len(entries)}")
    good, bad = parse_entries(entries)
    jobs, failed = await queue_of(request).submit_many(good, source="batch")
    errors = [{"index": p.index, "detail": p.detail} for p in bad] + failed
    errors.sort(key=lambda e: e["index"])
    if not jobs:
        detail = "No entry can be queued" if entries else "The batch is empty"
        return JSONResponse({"detail": detail, "jobs": [], "errors": errors}, status_code=422)
    return {"jobs": jobs, "errors": errors}


async def _read_batch(request: Request) -> list[Any]:
    raw, source = await file_or_json(
        request,
        "manifest file",
        "Send the batch as a JSON array (Content-Type: application/json) or upload a manifest "
        "file as multipart/form-data",
        is_json=lambda content_type: content_type == "application/json",  # said, never guessed
    )
    data = json_body.loads(raw, source)
    if not isinstance(data, list):
        raise InvalidRequest(f"{source} must be a JSON array of job requests")
    return data


class SpeedHistoryView(BaseModel):
    interval_s: int
    samples: list[list[float]]  # [unix time, bytes/s], oldest first


@router.get("/status/history", response_model=SpeedHistoryView)
async def speed_history(request: Request) -> dict[str, Any]:
    """The daemon's current rate once a second over the last hour (the Status chart)."""
    return {"interval_s": 1, "samples": request.app.state.speed_history.recent()}


@router.get("/status", response_model=Status)
async def status(request: Request) -> dict[str, Any]:
    """What is running now, how much is waiting, and the daemon's state."""
    queue = queue_of(request)
    counts = await queue.store.count_jobs_by_status()
    return {
        "active": queue.active_jobs(),
        "queued": counts.get("queued", 0),
        "workers": queue.settings.workers,
        "paused": queue.paused,
        "uptime_s": round(time.monotonic() - request.app.state.started, 1),
        "version": request.app.version,
        "current_speed_bps": queue.current_speed(),
        "average_speed_bps": await average_speed(queue),
        "disk": await holdings.disk(queue.settings.models_dir),
        "library_bytes": sum(t.bytes for t in (await request.app.state.library_totals.get())[0]),
    }


async def average_speed(queue: DownloadQueue) -> float:
    """Bytes of the completed downloads over the seconds they spent transferring."""
    total_bytes, seconds = await queue.store.completed_totals()
    return round(total_bytes / seconds, 1) if seconds > 0 else 0.0


@router.get("/jobs", response_model=JobList)
async def jobs(
    request: Request,
    status: str | None = Query(
        None,
        description="One or more of queued, downloading, waiting, verifying, paused, completed, "
        "failed, cancelled, separated by commas",
    ),
    q: str | None = Query(
        None, max_length=200, description="Search: a job id, or text in the name, file or type"
    ),
    order: Literal["newest", "queue"] = Query(
        "newest", description="newest first, or the order workers take queued jobs in"
    ),
    limit: int = Query(50, ge=1, le=1000),
    offset: Offset = 0,
) -> dict[str, Any]:
    """Jobs of the statuses given that match the search, newest first; `total` counts them all,
    `counts` counts every status among the jobs that match the search."""
    queue = queue_of(request)
    statuses = job_query.parse_statuses(status)
    where, args = job_query.condition(statuses, q)
    rows = await queue.store.jobs_where(
        where, args, order_by=job_query.ORDERS[order], limit=limit, offset=offset
    )
    search, search_args = job_query.search_condition(q)
    found = await queue.store.count_jobs_by_status(search or "1", search_args)
    counts = {s.value: found.get(s.value, 0) for s in JobStatus} | found
    total = sum(n for s, n in counts.items() if not statuses or s in statuses)
    return {
        "jobs": [queue.public(r) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
        "counts": counts,
    }


class ClearRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    statuses: list[str] = Field(
        list(job_query.FINAL), description="Which finished jobs: completed, cancelled, failed"
    )
    q: str | None = Field(None, max_length=200, description="Only those matching this search")


class Cleared(BaseModel):
    cleared: int
    ids: list[int]


@router.post("/jobs/clear", response_model=Cleared)
async def clear(request: Request, body: ClearRequest | None = None) -> dict[str, Any]:
    """Forget finished jobs (default: completed, cancelled and failed): their rows leave the
    history; their files, the library and the download totals stay."""
    body = body or ClearRequest()
    active = [s for s in body.statuses if s not in job_query.FINAL]
    if active or not body.statuses:
        raise InvalidRequest(
            f"Only finished jobs can be cleared ({', '.join(job_query.FINAL)})"
            + (f", not {', '.join(active)}: cancel them first" if active else "")
        )
    where, args = job_query.condition(sorted(set(body.statuses)), body.q)
    assert where is not None
    ids = await queue_of(request).clear(where, args)
    return {"cleared": len(ids), "ids": ids}


@router.get("/jobs/{job_id}", response_model=Job, responses={404: {"description": "No such job"}})
async def job(job_id: JobId, request: Request) -> dict[str, Any]:
    return await queue_of(request).get(job_id)


class JobChange(BaseModel):
    """PATCH /api/jobs/{id}: a new priority, or a new place in the queue."""

    model_config = ConfigDict(extra="forbid")

    priority: int | None = Field(
        None, ge=0, le=100, strict=True, description="Lower runs first (0–100)."
    )
    position: Literal["top", "bottom", "up", "down"] | None = Field(
        None,
        description='"top": first of the queued, paused and waiting jobs (its priority may go '
        'below 0); "bottom": last; "up"/"down": one place. The jobs it passes keep their order '
        "(some of their priorities go up by one).",
    )
    before: int | None = Field(
        None, ge=1, strict=True, description="The id of a queued job to move just before."
    )

    @model_validator(mode="after")
    def _one(self) -> JobChange:
        given = [v for v in (self.priority, self.position, self.before) if v is not None]
        if len(given) != 1:
            raise ValueError('give either "priority" (0–100), "position" or "before"')
        return self


class RetryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(
        False,
        strict=True,
        description="Retry even a failure no retry can fix (404, archived, wrong hash).",
    )


StateConflict = {409: {"description": "The job's state does not allow it; `detail` says why"}}


@router.post("/jobs/{job_id}/cancel", response_model=Job)
async def cancel(job_id: JobId, request: Request) -> dict[str, Any]:
    """Cancel a queued, running or paused job; its .part file is removed."""
    return await queue_of(request).cancel(job_id)


@router.post("/jobs/{job_id}/pause", response_model=Job, responses=StateConflict)
async def pause(job_id: JobId, request: Request) -> dict[str, Any]:
    """Pause a queued, waiting or running job: its transfer stops, its .part and saved parts are
    kept, and no worker takes it (not after a restart either) until it is resumed."""
    return await queue_of(request).pause(job_id)


@router.post("/jobs/{job_id}/resume", response_model=Job, responses=StateConflict)
async def resume(job_id: JobId, request: Request) -> dict[str, Any]:
    """Queue a paused job again; it goes on from the bytes it kept."""
    return await queue_of(request).resume(job_id)


@router.patch("/jobs/{job_id}", response_model=Job, responses=StateConflict)
async def change(job_id: JobId, body: JobChange, request: Request) -> dict[str, Any]:
    """Change a queued, paused or waiting job's priority, or move it in the queue."""
    change = body.model_dump(include={"priority", "position", "before"})
    return await queue_of(request).reorder(job_id, **change)


@router.post("/jobs/{job_id}/retry", response_model=Job, responses=StateConflict)
async def retry(
    job_id: JobId, request: Request, options: RetryOptions | None = None
) -> dict[str, Any]:
    """Queue a failed or cancelled job again; a kept .part resumes. A failure a retry cannot fix
    (the job's `retryable` is false: `why_not_retryable` says why) is refused with 409 unless
    `{"force": true}`."""
    return await queue_of(request).retry(job_id, force=bool(options and options.force))


@router.get("/completed", response_model=CompletedList)
async def completed(
    request: Request,
    limit: int = Query(50, ge=1, le=1000),
    offset: Offset = 0,
    model_type: str | None = Query(
        None,
        max_length=64,
        description="Only this model_type; an app's folder name (Stable-diffusion, loras) or "
        "Civitai's type (LORA) means its type",
    ),
    base_model: str | None = Query(None, max_length=200, description="e.g. SDXL 1.0"),
    q: str | None = Query(
        None, max_length=200, description="Words each found in the name, version or filename"
    ),
) -> dict[str, Any]:
    """Completed downloads, newest first; `total` counts all that match the filters."""
    store = queue_of(request).store
    model_type = (model_type_of(model_type) or model_type) if model_type else None
    rows, total = await holdings.completed_rows(store, model_type, base_model, q, limit, offset)
    rows = await asyncio.to_thread(holdings.with_previews, rows)
    return {"completed": rows, "total": total, "limit": limit, "offset": offset}


@router.get("/metrics", response_model=Metrics)
async def metrics(request: Request) -> dict[str, Any]:
    """Counts by status, bytes, average speed, failures, queue length, last update check."""
    queue = queue_of(request)
    counts = await queue.store.count_jobs_by_status()
    total_bytes, seconds = await queue.store.completed_totals()
    sender = request.app.state.webhooks
    return {
        "jobs_by_status": counts,
        "bytes_downloaded": total_bytes,
        "bytes_fetched_since_start": queue.network_bytes,
        "average_speed_bps": round(total_bytes / seconds, 1) if seconds > 0 else 0.0,
        "current_speed_bps": queue.current_speed(),
        "failures": counts.get("failed", 0),
        "queue_length": counts.get("queued", 0),
        "active": len(queue.active_jobs()),
        "webhooks_delivered": sender.delivered,
        "webhooks_failed": sender.failed,
        "last_update_check": _last_check(request),
    }


def _last_check(request: Request) -> dict[str, Any] | None:
    last = request.app.state.updater.last
    if last is None:
        return None
    return {
        "finished_at": last.finished_at,
        "checked": last.checked,
        "updates": len(last.updates),
        "errors": len(last.errors),
        "next_check": request.app.state.updater.next_run(),
    }
