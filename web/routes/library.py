"""What the GUI shows beyond jobs: a model looked up before queueing, tracked models, previews."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as FastPath
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from engine.jobs import MAX_ID, JobRequest
from errors import InvalidRequest
from library import holdings, manifest, policy, removal
from library.layout import CIVITAI_TYPES
from sources.air import is_air, parse_air
from sources.versions import newest_version
from web.auth import require_key

router = APIRouter(prefix="/api", tags=["library"], dependencies=[Depends(require_key)])


class LookupFile(BaseModel):
    id: int | None = None  # None: a Hugging Face file (it is queued by its URL)
    name: str
    size: int | None = None
    type: str | None = None
    primary: bool = False
    format: str | None = None
    sha256: str | None = None


class LookupVersion(BaseModel):
    id: int | None = None
    name: str | None = None
    baseModel: str | None = None  # noqa: N815
    publishedAt: str | None = None  # noqa: N815
    image: str | None = None
    files: list[LookupFile]


class Lookup(BaseModel):
    source: str = "civitai"  # or "huggingface": queued by `url`, not by ids
    url: str | None = None  # a Hugging Face file's URL, as pasted
    modelId: int | None = None  # noqa: N815
    name: str | None = None
    type: str | None = None
    model_type: str  # the folder suggested for it
    selectedVersionId: int | None = None  # noqa: N815
    versions: list[LookupVersion]


def _versions(model: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for v in model.get("modelVersions") or []:
        images = [
            i.get("url") for i in v.get("images") or [] if isinstance(i, dict) and i.get("url")
        ]
        files = []
        for f in v.get("files") or []:
            size_kb = f.get("sizeKB")
            files.append(
                {
                    "id": f.get("id"),
                    "name": f.get("name") or "",
                    "size": round(size_kb * 1024) if isinstance(size_kb, int | float) else None,
                    "type": f.get("type"),
                    "primary": bool(f.get("primary")),
                    "format": (f.get("metadata") or {}).get("format"),
                    "sha256": ((f.get("hashes") or {}).get("SHA256") or "").lower() or None,
                }
            )
        out.append(
            {
                "id": v.get("id"),
                "name": v.get("name"),
                "baseModel": v.get("baseModel"),
                "publishedAt": v.get("publishedAt"),
                "image": images[0] if images else None,
                "files": files,
            }
        )
    return out


@router.get("/lookup", response_model=Lookup)
async def lookup(
    request: Request,
    url: str | None = Query(
        None,
        description="A civitai.com model page or download URL, a Civitai AIR, or a Hugging "
        "Face file URL (…/resolve/… or …/blob/…)",
    ),
    modelId: int | None = Query(None, gt=0, le=MAX_ID),  # noqa: N803
    modelVersionId: int | None = Query(None, gt=0, le=MAX_ID),  # noqa: N803
) -> dict[str, Any]:
    """A model's name, type, versions and files, so a person can pick before queueing."""
    civitai = request.app.state.civitai
    version_id = modelVersionId
    model_id = modelId
    if url and is_air(url):  # a Civitai AIR: urn:air:<ecosystem>:<type>:civitai:<id>@<version>
        air = parse_air(url)
        model_id, version_id = air.model_id, air.version_id
    elif url and (hub := civitai.source_for(url)) is not None:
        return await _hub_lookup(hub, url)
    elif url:
        if not civitai.is_civitai_url(url):
            raise InvalidRequest(
                "Paste a civitai.com model page or download URL, a Hugging Face file URL, an "
                "AIR (urn:air:…) or a model id"
            )
        model_id, version_id, _, _ = civitai.parse_url(url)
    if version_id and not model_id:
        model_id = (await civitai.get_version(version_id)).get("modelId")
    if not model_id:
        raise InvalidRequest("Give a url, a modelId or a modelVersionId")
    model = await civitai.get_model(model_id)
    kind = str(model.get("type") or "other")
    if version_id is None:  # what a download by model id fetches, not the first one listed
        newest = newest_version(model)
        version_id = newest["id"] if newest else None
    return {
        "modelId": model_id,
        "name": model.get("name"),
        "type": kind,
        "model_type": CIVITAI_TYPES.get(kind.lower(), "other"),
        "selectedVersionId": version_id,
        "versions": _versions(model),
    }


# Words in a Hugging Face file's path that name its folder (its repository names no type).
HUB_FOLDER_WORDS = (
    ("vae", "vae"),
    ("lora", "lora"),
    ("controlnet", "controlnet"),
    ("upscal", "upscaler"),
    ("esrgan", "upscaler"),
    ("text_encoder", "text_encoders"),
    ("t5xxl", "text_encoders"),
    ("clip_vision", "clip_vision"),
    ("embedding", "embedding"),
)


async def _hub_lookup(hub: Any, url: str) -> dict[str, Any]:
    """A Hugging Face file: its repository, its file (name, size, SHA256) at the commit its
    revision names now, and a folder guessed from its path (a checkpoint unless a word says)."""
    resolved = await hub.resolve(JobRequest(url=url, model_type="other"))
    f = hub.file_of(url)
    lowered = f.path.lower()
    folder = next((kind for word, kind in HUB_FOLDER_WORDS if word in lowered), "checkpoint")
    name = resolved.filename
    return {
        "source": "huggingface",
        "url": url,
        "name": resolved.model_name,
        "type": "Hugging Face file",
        "model_type": folder,
        "versions": [
            {
                "name": resolved.version_name,
                "files": [
                    {
                        "name": name,
                        "size": resolved.size,
                        "primary": True,
                        "format": name.rsplit(".", 1)[-1] if "." in name else None,
                        "sha256": resolved.sha256,
                    }
                ],
            }
        ],
    }


class TrackedModel(BaseModel):
    entry: int  # 1-based, as every report of manifest.json numbers its entries
    modelId: Any = None  # noqa: N815 (as written: an invalid entry may hold anything)
    modelVersionId: Any = None  # noqa: N815
    model_type: Any = None
    filename: Any = None
    policy: Any = None  # its update policy: "notify", "download", "replace" or {"keep": N}
    name: str | None = None  # the model's name on Civitai, from its downloads
    version_name: str | None = None
    problem: str | None = None  # why the entry cannot be used; None when it is fine


class ManifestProblem(BaseModel):
    entry: int | None  # None: the whole file
    modelId: Any = None  # noqa: N815
    detail: str


class Manifest(BaseModel):
    entries: list[Any]  # the file as written
    tracked: list[TrackedModel]
    problems: list[ManifestProblem]


async def _manifest_view(request: Request) -> dict[str, Any]:
    path = request.app.state.settings.manifest_path
    raw, _, problems = await asyncio.to_thread(manifest.load, path)
    entries = [e if isinstance(e, dict) else {} for e in raw]
    ids = sorted({e["modelId"] for e in entries if type(e.get("modelId")) is int})
    names = await request.app.state.store.read(_names, ids) if ids else {}
    by_entry = {p.entry: p.detail for p in problems}
    tracked = []
    for i, e in enumerate(entries):
        mine = names.get((e.get("modelId"), e.get("modelVersionId"))) or names.get(
            (e.get("modelId"), None)
        )
        tracked.append(
            {
                "entry": i + 1,
                **{k: e.get(k) for k in ("modelId", "modelVersionId", "model_type", "filename")},
                "policy": e.get("policy") or policy.DEFAULT,
                "name": mine[0] if mine else None,
                "version_name": mine[1] if mine and e.get("modelVersionId") else None,
                "problem": by_entry.get(i + 1),
            }
        )
    return {"entries": raw, "tracked": tracked, "problems": [p.public() for p in problems]}


def _names(db: Any, ids: list[int]) -> dict[tuple[int, int | None], tuple[str, str | None]]:
    """(modelId, versionId) and (modelId, None) → (model name, version name), from the names
    Civitai gave the downloads already made or queued (no new Civitai call per entry)."""
    out: dict[tuple[int, int | None], tuple[str, str | None]] = {}
    marks = ", ".join("?" for _ in ids)
    for table in ("completed", "jobs"):  # completed first: its names win
        sql = (
            f"select modelId, modelVersionId, model_name, version_name from {table} "
            f"where modelId in ({marks}) and model_name is not null order by id desc"
        )
        for model_id, version_id, name, version in db.execute(sql, ids).fetchall():
            out.setdefault((model_id, version_id), (name, version))
            out.setdefault((model_id, None), (name, None))
    return out


@router.get("/manifest", response_model=Manifest)
async def tracked(request: Request) -> dict[str, Any]:
    """The tracked models of manifest.json by name, version and type, and the entries that
    cannot be used, numbered from 1 with their modelId."""
    return await _manifest_view(request)


TrackedModelId = Annotated[int, FastPath(ge=1, le=MAX_ID, description="A Civitai model id")]
NOT_TRACKED: dict[int | str, dict[str, Any]] = {
    404: {"description": "manifest.json does not track this model"}
}


@router.delete("/manifest/{model_id}", response_model=Manifest, responses=NOT_TRACKED)
async def untrack(model_id: TrackedModelId, request: Request) -> dict[str, Any]:
    """Stop tracking a model: its manifest.json entries are removed; its files stay on disk."""
    return await _edit_manifest(request, model_id, manifest.untrack)


async def _edit_manifest(request: Request, model_id: int, edit: Any, *args: Any) -> dict[str, Any]:
    """`edit(path, model_id, *args)` under the manifest lock; the tracked list after it, or 404
    when it found no entry of the model (a file that is no JSON array: 422, left as it is)."""
    path = request.app.state.settings.manifest_path
    try:
        async with request.app.state.manifest_lock:
            changed = await asyncio.to_thread(edit, path, model_id, *args)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    if not changed:
        raise HTTPException(404, f"manifest.json does not track model {model_id}")
    return await _manifest_view(request)


class PolicyChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: Any = Field(
        description='"notify" (list updates only), "download" (the default), "replace" '
        '(download, then retire the old file per old_versions) or {"keep": N} (keep the N '
        "newest versions on disk)."
    )


@router.patch("/manifest/{model_id}", response_model=Manifest, responses=NOT_TRACKED)
async def set_policy(
    model_id: TrackedModelId, body: PolicyChange, request: Request
) -> dict[str, Any]:
    """Set a tracked model's update policy (every manifest.json entry of the model)."""
    try:
        value = policy.check(body.policy)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return await _edit_manifest(request, model_id, manifest.set_policy, value)


@router.get("/completed/{completed_id}/preview", response_class=FileResponse)
async def preview(
    completed_id: Annotated[int, FastPath(ge=1, le=MAX_ID)], request: Request
) -> FileResponse:
    """The preview image saved beside a completed model (its `.preview.png` sidecar)."""
    rows = await request.app.state.store.read(
        lambda db: list(db["completed"].rows_where("id = ?", [completed_id]))
    )
    if not rows:
        raise HTTPException(404, f"No completed download {completed_id}")
    model = Path(rows[0]["path"])
    image = await asyncio.to_thread(holdings.preview_of, model)
    if image is not None:
        return FileResponse(image, headers={"Cache-Control": "max-age=3600"})
    raise HTTPException(404, f"No preview image beside {model.name}")


class TypeTotal(BaseModel):
    model_type: str
    files: int
    bytes: int


class LibrarySummary(BaseModel):
    types: list[TypeTotal]
    base_models: list[str]
    files: int
    bytes: int


@router.get("/library", response_model=LibrarySummary)
async def library_summary(request: Request) -> dict[str, Any]:
    """Files and bytes per model_type (each path once, at its newest completed row), the base
    models the completed files are for, and the totals: what the Library's filters offer."""
    types, bases = await request.app.state.library_totals.get()
    return {
        "types": types,
        "base_models": bases,
        "files": sum(t.files for t in types),
        "bytes": sum(t.bytes for t in types),
    }


class Kept(BaseModel):
    path: str
    reason: str


class Removed(BaseModel):
    id: int
    path: str
    deleted: list[str]
    kept: list[Kept]
    rows_removed: int
    untracked: list[dict[str, Any]]
    still_tracked: list[dict[str, Any]]


@router.delete(
    "/library/{completed_id}",
    response_model=Removed,
    responses={
        403: {"description": "The viewer key may not delete"},
        404: {"description": "No such completed download"},
        409: {"description": "A symbolic link on the way to the file: nothing removed"},
        422: {"description": "The file lies outside download_dir: nothing removed"},
    },
)
async def delete_model(
    completed_id: Annotated[int, FastPath(ge=1, le=MAX_ID)], request: Request
) -> removal.Removal:
    """Delete a completed model from disk with the sidecars the daemon wrote beside it, forget
    its completed rows, and untrack its manifest.json entries (else the next start would fetch
    it again). Nothing outside download_dir, and nothing through a link, is ever removed."""
    state = request.app.state
    return await removal.delete_model(
        state.store,
        completed_id,
        state.queue.settings.models_dir,
        state.queue.models_root,
        state.settings.manifest_path,
        state.manifest_lock,
    )
