"""Every file of the library (issue 26): found by hash, its twins merged, and the whole library
exported and imported on another machine."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastPath
from pydantic import BaseModel

from errors import InvalidRequest
from library import portable, search, twins
from web.auth import require_key

router = APIRouter(prefix="/api/library", tags=["library"], dependencies=[Depends(require_key)])


class LibraryFile(BaseModel):
    path: str
    sha256: str | None = None
    autov2: str | None = None  # the first 10 hex digits of the SHA256, as Civitai shows it
    size: int | None = None
    model_type: str | None = None
    status: str  # known (a completed download or adopted), unknown, pending (not asked yet)
    id: int | None = None  # the completed row of a known file
    modelId: int | None = None  # noqa: N815
    modelVersionId: int | None = None  # noqa: N815
    model_name: str | None = None
    version_name: str | None = None
    checked_at: str | None = None  # when Civitai was last asked about an unknown file


class LibraryFiles(BaseModel):
    files: list[LibraryFile]


@router.get("/files", response_model=LibraryFiles)
async def library_files(
    request: Request,
    q: str | None = Query(None, description="A SHA256 or an AutoV2 (its first 10 hex digits)"),
    limit: int = Query(search.DEFAULT_LIMIT, ge=1, le=10_000),
) -> dict[str, Any]:
    """The library's files, known and unknown; with `q`, those of that hash (any case)."""
    if q is not None and not search.is_hash(q):
        raise InvalidRequest(
            "q must be a SHA256 (64 hexadecimal digits) or an AutoV2 (its first 10 digits)"
        )
    files = await request.app.state.store.read(search.library_files, q, limit)
    return {"files": files}


class TwinGroup(BaseModel):
    sha256: str
    size: int
    paths: list[str]
    copies: int  # distinct files on disk (hard links of one file count once)
    freeable: int  # bytes a merge would free


class Twins(BaseModel):
    groups: list[TwinGroup]
    freeable: int


@router.get("/duplicates", response_model=Twins)
async def duplicates(request: Request) -> dict[str, Any]:
    """Files held at two or more paths (same SHA256), known or not, and the bytes a merge frees."""
    groups = await twins.duplicates(request.app.state.store)
    return {"groups": groups, "freeable": sum(g["freeable"] for g in groups)}


class MergeAsk(BaseModel):
    action: Literal["hardlink", "delete"]
    keep: str


class MergeDone(BaseModel):
    sha256: str
    action: str
    keep: str
    linked: list[str]
    deleted: list[str]
    kept: list[dict[str, str]]
    freed: int


@router.post(
    "/duplicates/{sha256}",
    response_model=MergeDone,
    responses={
        404: {"description": "No two copies of this SHA256"},
        409: {"description": "Another file system, a link on the way, or a copy changed"},
    },
)
async def merge(
    sha256: Annotated[str, FastPath(pattern="^[0-9a-fA-F]{64}$")], ask: MergeAsk, request: Request
) -> dict[str, Any]:
    """Keep one copy; replace each other by a hard link to it, or delete it with its sidecars."""
    state = request.app.state
    done = await twins.merge(
        state.store,
        sha256,
        ask.action,
        ask.keep,
        state.queue.settings.models_dir,
        state.queue.models_root,
    )
    return asdict(done)


@router.get("/export", response_model=portable.PortableLibrary)
async def export(request: Request) -> dict[str, Any]:
    """Every file as portable JSON: the body `POST /api/library/import` takes on another machine."""
    state = request.app.state
    return await portable.export(state.store, state.queue.models_root, state.settings.manifest_path)


class ImportItem(BaseModel):
    path: str
    sha256: str
    size: int | None = None
    status: str  # present, to_download, queued, unavailable
    detail: str | None = None
    job: int | None = None


class ImportAnswer(BaseModel):
    dry_run: bool
    files: list[ImportItem]
    present: int
    to_download: int
    unavailable: int
    bytes_to_download: int


@router.post("/import", response_model=ImportAnswer)
async def import_library(
    library: portable.PortableLibrary, request: Request, dry_run: bool = False
) -> dict[str, Any]:
    """What of an exported library is here, what would be downloaded and what cannot be; without
    dry_run the missing files are queued to their same paths, each verified by its SHA256."""
    if library.format != portable.FORMAT or library.version != portable.VERSION:
        raise InvalidRequest(
            f"Not a library export this daemon reads: format {portable.FORMAT!r} version "
            f"{portable.VERSION} expected"
        )
    state = request.app.state
    items = await portable.plan(state.store, library, state.queue.models_root)
    wanted = []
    for i, item in enumerate(items):
        if item["status"] == "to_download":
            try:
                wanted.append((i, portable.request_of(library.files[i])))
            except ValueError as exc:  # pydantic: an AIR, a URL or a type it cannot use
                detail = str(exc).splitlines()[-1].strip()
                item.update(status="unavailable", detail=detail)
    if not dry_run and wanted:
        jobs, failed = await state.queue.submit_many(wanted, source="import")
        refused = {f["index"]: f["detail"] for f in failed}
        queued = iter(jobs)
        for index, _ in wanted:
            if index in refused:
                items[index].update(status="unavailable", detail=refused[index])
            else:
                job = next(queued)
                items[index].update(status="queued", job=job["id"])
    count = {s: sum(it["status"] == s for it in items) for s in ("present", "unavailable")}
    later = [it for it in items if it["status"] in ("to_download", "queued")]
    return {
        "dry_run": dry_run,
        "files": items,
        "present": count["present"],
        "to_download": len(later),
        "unavailable": count["unavailable"],
        "bytes_to_download": sum(it["size"] or 0 for it in later),
    }
