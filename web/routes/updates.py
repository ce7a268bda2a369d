"""Tracked models: the update checker and adopting existing files (SPEC §6, §10, §12)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from web.auth import require_key

router = APIRouter(prefix="/api", tags=["updates"], dependencies=[Depends(require_key)])


class Update(BaseModel):
    id: int
    modelId: int | None = None  # noqa: N815  (None: a Hugging Face file, named by `url`)
    url: str | None = None
    model_name: str | None = None
    old_version_id: int | str | None = None  # a Hugging Face file's: a commit
    old_version_name: str | None = None  # the replaced version's name, as it was downloaded
    new_version_id: int | str
    version_name: str | None = None
    model_type: str | None = None
    job_id: int | None = None  # None while early access keeps it from being downloaded
    early_access_until: str | None = None  # when it can be downloaded; queued by the next check
    untracked: bool | None = None  # found for a file not tracked: queued from the Library only
    policy: str | None = None  # the model's update policy: "notify" lists it, never queued
    found_at: str


class CheckResult(BaseModel):
    started_at: str
    finished_at: str | None = None
    checked: int
    requests: int
    updates: list[Update]
    errors: list[dict[str, Any]]
    follows: list[dict[str, Any]] = []  # each follow's check (web/routes/follows.py)


class Updates(BaseModel):
    updates: list[Update]
    last_check: CheckResult | None = None
    next_check: str | None = None
    scheduled_jobs: int


class ScanReport(BaseModel):
    running: bool
    started_at: str | None = None
    finished_at: str | None = None
    phase: str | None = None  # finding, hashing, asking, done
    files: int
    hashed: int
    cached: int
    bytes_total: int
    bytes_done: int
    asked: int = 0  # hashes looked up on Civitai
    lookups: int = 0  # by-hash requests (up to 100 hashes each)
    current: str | None = None
    matched: list[dict[str, Any]]
    unknown: list[str]
    errors: list[dict[str, str]]


@router.post("/updates/check", response_model=CheckResult)
async def check_now(request: Request) -> dict[str, Any]:
    """Run the update checker now and return what it found."""
    result = await request.app.state.updater.run()
    return result.summary()


@router.get("/updates", response_model=Updates)
async def updates(request: Request, limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    """Updates found so far (newest first), the last check and the next scheduled one."""
    updater = request.app.state.updater
    store = request.app.state.store
    found = await store.list_updates(limit)
    olds = {u["old_version_id"] for u in found if isinstance(u.get("old_version_id"), int)}
    names = await store.read(lambda db: _version_names(db, sorted(olds))) if olds else {}
    return {
        "updates": [{**u, "old_version_name": names.get(u.get("old_version_id"))} for u in found],
        "last_check": updater.last.summary() if updater.last else None,
        "next_check": updater.next_run(),
        "scheduled_jobs": updater.scheduled_jobs(),
    }


def _version_names(db: Any, ids: list[int]) -> dict[int, str]:
    """The names the versions had when they were downloaded (their jobs' and files')."""
    marks = ", ".join("?" for _ in ids)
    names: dict[int, str] = {}
    for table in ("jobs", "completed"):  # a file replaced by its update may be in jobs only
        rows = db.execute(
            f"select modelVersionId, version_name from {table} "
            f"where modelVersionId in ({marks}) and version_name is not null",
            ids,
        ).fetchall()
        names.update({int(v): str(name) for v, name in rows})
    return names


@router.post("/scan", status_code=202, response_model=ScanReport)
async def scan(request: Request) -> dict[str, Any]:
    """Hash the files under download_dir the daemon does not know, look them up on Civitai by
    hash, and track the known ones. Runs in the background; `GET /api/scan` shows progress."""
    return request.app.state.scanner.start()


@router.get("/scan", response_model=ScanReport)
async def scan_report(request: Request) -> dict[str, Any]:
    """Progress and results of the current or last scan."""
    return request.app.state.scanner.report()
