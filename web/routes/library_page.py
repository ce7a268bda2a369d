"""The Library page as a model manager (issue 26 items 3 and 4): the files listed, filtered,
searched and paged; the updates found for them, planned and queued."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

import errors
from engine.jobs import MAX_ID
from library import holdings, listing, update_plan
from library.layout import model_type_of
from web.auth import require_key

# A page past every file is empty; past this its offset (page × per_page) would overflow SQLite.
MAX_PAGE = 1_000_000

router = APIRouter(prefix="/api", tags=["library"], dependencies=[Depends(require_key)])

Sort = Literal["newest", "oldest", "name", "size", "type"]


class Update(BaseModel):
    id: int
    version_id: int | None = None
    version_name: str | None = None
    size: int | None = None
    job_id: int | None = None
    job_status: str | None = None
    early_access_until: str | None = None
    untracked: bool = False  # found for a file not tracked: only queued from here


class LibraryFile(BaseModel):
    id: (
        int | None
    )  # the completed row (its preview, its delete); None: a file Civitai does not know
    kind: str  # "model", or "unknown" (a scan found it; Civitai does not know its hash)
    path: str
    folder: str  # relative to download_dir
    filename: str
    model_type: str | None = None
    modelId: int | None = None  # noqa: N815
    modelVersionId: int | None = None  # noqa: N815
    model_name: str | None = None
    version_name: str | None = None
    base_model: str | None = None
    size: int | None = None
    sha256: str | None = None
    autov2: str | None = None  # the first 10 hex digits of the SHA256, as Civitai shows it
    trained_words: list[str]
    nsfw: bool  # the preview image is above PG-13
    blur: bool  # nsfw, and show_nsfw is off: the page blurs it until clicked
    has_preview: bool
    tracked: bool
    page_url: str | None = None
    update: Update | None = None
    completed_at: str | None = None


class LibraryPage(BaseModel):
    files: list[LibraryFile]
    total: int
    page: int
    per_page: int
    folders: list[str]


def _tracked(path: Path) -> list[int]:
    """The modelIds manifest.json tracks, as written (the list needs no more of it)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    entries = raw if isinstance(raw, list) else []
    return sorted(
        {e["modelId"] for e in entries if isinstance(e, dict) and type(e.get("modelId")) is int}
    )


def shelf_of(request: Request) -> listing.Shelf:
    """The app's one Shelf (and what it keeps between requests), made at the first listing."""
    state = request.app.state
    if getattr(state, "library_shelf", None) is None:
        state.library_shelf = listing.Shelf(state.store)
    return state.library_shelf


async def _search(
    request: Request, query: listing.Query
) -> tuple[list[dict[str, Any]], int, list[str], str, list[int]]:
    tracked = await asyncio.to_thread(_tracked, request.app.state.settings.manifest_path)
    queue = request.app.state.queue
    roots = (str(queue.models_root), str(queue.settings.models_dir))
    return (*await shelf_of(request).listing(query, roots, tracked), tracked)


def _has_preview(rows: list[dict[str, Any]]) -> list[bool]:
    return [r["kind"] == "model" and holdings.preview_of(Path(r["path"])) is not None for r in rows]


@router.get("/library/models", response_model=LibraryPage)
async def library_models(
    request: Request,
    q: Annotated[
        str,
        Query(
            max_length=200,
            description="Words each in the name, version, file or trigger words; or a SHA256 "
            "or AutoV2 (its first 10 hex digits)",
        ),
    ] = "",
    type: Annotated[
        str | None,
        Query(max_length=64, description="A model_type (lora) or a name for it (LORA, loras)"),
    ] = None,  # noqa: A002
    base_model: Annotated[str | None, Query(max_length=200, description="e.g. SDXL 1.0")] = None,
    folder: Annotated[
        str | None, Query(max_length=500, description="A folder relative to download_dir")
    ] = None,
    tracked: Annotated[
        bool | None, Query(description="Only tracked (true) or untracked (false) models")
    ] = None,
    update: Annotated[
        bool | None, Query(description="Only files with an update available (true) or without")
    ] = None,
    unknown: Annotated[
        bool | None,
        Query(description="Only files Civitai does not know (true), or only known ones"),
    ] = None,
    sort: Sort = "newest",
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 60,
) -> dict[str, Any]:
    """The library's files, one per path, with their trigger words, hashes, tracking and update
    marks, one page at a time; `total` counts every match."""
    kind = (model_type_of(type) or type) if type else None
    query = listing.Query(
        q, kind, base_model, folder, tracked, update, unknown, sort, page, per_page
    )
    rows, total, folders, root, tracked = await _search(request, query)
    settings, tracked_ids = request.app.state.settings, set(tracked)
    previews = await asyncio.to_thread(_has_preview, rows)
    files = [
        listing.shaped(r, root, tracked_ids, settings.show_nsfw, settings.civitai_base_url)
        | {"has_preview": p}
        for r, p in zip(rows, previews, strict=True)
    ]
    return {"files": files, "total": total, "page": page, "per_page": per_page, "folders": folders}


class UpdateChoice(BaseModel):
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(
        None, max_length=10_000, description="Completed ids; none: every file with an update"
    )


class PlanItem(BaseModel):
    id: int
    update_id: int
    model_name: str | None = None
    version_name: str | None = None
    new_version_id: int
    new_version_name: str | None = None
    filename: str | None = None
    size: int | None = None
    path: str  # where the new file goes
    replaces: str  # the file on disk now
    state: str  # "ready", "queued" (already under way) or "early access"
    job_id: int | None = None
    error: str | None = None  # why it was not queued


class UpdatePlan(BaseModel):
    dry_run: bool
    items: list[PlanItem]
    files: int  # what is (or would be) queued
    bytes: int
    queued: list[int]  # the jobs queued by this request


@router.post("/library/updates", response_model=UpdatePlan)
async def download_updates(
    request: Request,
    choice: UpdateChoice | None = None,
    dry_run: Annotated[bool, Query(description="Only show the plan; queue nothing")] = False,
) -> dict[str, Any]:
    """The files with an update available (all, or those `ids` names): what each update would
    download, how big, where. Without `dry_run` the ready ones are queued, as the update check
    queues a tracked model's update (the new file replaces the old as `manifest_mode` says)."""
    rows, *_ = await _search(request, listing.Query(update=True, per_page=10_000))
    if choice is not None and choice.ids is not None:
        wanted = set(choice.ids)
        rows = [r for r in rows if r["id"] in wanted]
        if not rows:
            raise errors.InvalidRequest("None of these files has an update available")
    queue, settings, store = (
        request.app.state.queue,
        request.app.state.settings,
        request.app.state.store,
    )
    mode = settings.manifest_mode

    def where(model_type: str, filename: str | None) -> Path:
        if filename is None:
            return queue.job_rows.folder(model_type)
        return queue.job_rows.final_path(model_type, filename)

    items = [update_plan.item(r, mode, where) for r in rows]
    queued: list[int] = []
    for row, line in zip(rows, items, strict=True):
        if dry_run or line["state"] != "ready":
            continue
        req, replaces = update_plan.request_of(row, mode)
        try:
            job, _ = await queue.submit(req, source="update", replaces=replaces)
        except errors.DaemonError as exc:
            line["error"] = str(exc)
            continue
        fields = {"job_id": job["id"], "early_access_until": None}
        await store.run(lambda db, f=fields, u=row["update_id"]: db["updates"].update(u, f))
        line.update(state="queued", job_id=job["id"])
        queued.append(job["id"])
    counted = [i for i in items if (i["state"] == "ready" if dry_run else i["job_id"] in queued)]
    return {
        "dry_run": dry_run,
        "items": items,
        "files": len(counted),
        "bytes": sum(i["size"] or 0 for i in counted),
        "queued": queued,
    }
