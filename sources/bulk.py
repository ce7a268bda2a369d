"""A Civitai creator's models in bulk: list them, preview what a download would fetch, queue.

Civitai lists a creator's models at `/api/v1/models?username=<name>` (SPEC §13), 100 a page at
most, the rest behind `metadata.nextCursor` (an opaque cursor such as "22138|364671|25494";
`nextPage` is the same query with `cursor=` added). `types=` (Civitai's names: LORA, Checkpoint,
TextualInversion, …) and `baseModels=` (e.g. "SDXL 1.0") are passed on, once per value, as
Civitai takes them; NSFW models are left out unless `nsfw=true`, sent only while the daemon's
`show_nsfw` is on (an API base at civitai.green answers safe models only, whatever it is sent).
The listing is bounded: MAX_PAGES requests and MAX_MODELS models, and the preview says which
bound it reached.

An unknown username lists nothing, as a creator whose models are all filtered out does: Civitai's
creators search (`/api/v1/creators?query=`) tells the two apart, so the first is a 404.

For each model the preview shows what a download by its model id would fetch: the newest
published, downloadable version (versions.newest_version; among those of the asked base models)
and its primary model file, never training data (civitai.pick_file); its size, and whether it is
already downloaded (and still in place) or queued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

import errors
from database import Store
from engine import job_query
from engine.completed import CompletedFiles, completed_by_sha256
from engine.jobs import model_type_from_civitai
from sources.civitai import LIST_TYPES, CivitaiClient, list_page, pick_file
from sources.versions import newest_version

MAX_PAGES = 10  # requests of one preview: at 100 models a page, 1000 models
MAX_MODELS = 500  # models one preview lists (and one bulk queues)
PAGE_SIZE = 100  # Civitai's largest page

# Civitai's model types as its list takes them (`types=`); the names a person may give for each.
CIVITAI_TYPES = LIST_TYPES
TYPE_NAMES = {t.lower(): t for t in CIVITAI_TYPES} | {
    "embedding": "TextualInversion",
    "lycoris": "LoCon",
    "locon": "LoCon",
    "hypernet": "Hypernetwork",
    "motion": "MotionModule",
}


class BulkFilter(BaseModel):
    """POST /api/bulk/preview: whose models, of which types and base models."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(
        min_length=1, max_length=100, description="The creator's name on Civitai."
    )
    types: list[str] = Field(
        [], max_length=16, description="Civitai's types: LORA, Checkpoint, TextualInversion, …"
    )
    baseModels: list[str] = Field(  # noqa: N815
        [], max_length=16, description='Base models, as Civitai names them: "SDXL 1.0", …'
    )
    nsfw: bool | None = Field(
        None,
        strict=True,
        description="List NSFW models too; left out: as show_nsfw says. Only while show_nsfw is "
        "on does Civitai get nsfw=true.",
    )

    def within(self, show_nsfw: bool) -> BulkFilter:
        """This filter as the settings allow it: NSFW models only while `show_nsfw` is on."""
        if self.nsfw and not show_nsfw:
            raise errors.InvalidRequest(
                "NSFW models are listed only while show_nsfw is on (Settings, "
                '"Browse: show NSFW models")'
            )
        return self.model_copy(update={"nsfw": show_nsfw if self.nsfw is None else self.nsfw})

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        value = value.strip().removeprefix("@")
        if not value or any(c in value for c in "/?#&\\ ") or not value.isprintable():
            raise ValueError("must be a Civitai username, as in civitai.com/user/<name>")
        return value

    @field_validator("types")
    @classmethod
    def _types(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            name = TYPE_NAMES.get(str(value).strip().lower().replace(" ", ""))
            if name is None:
                raise ValueError(f"{value!r} is not a Civitai type; use {', '.join(CIVITAI_TYPES)}")
            out.append(name)
        return list(dict.fromkeys(out))

    @field_validator("baseModels")
    @classmethod
    def _base_models(cls, values: list[str]) -> list[str]:
        if any(not v.strip() or len(v) > 100 for v in values):
            raise ValueError('each is a base model name as Civitai writes it, e.g. "SDXL 1.0"')
        return list(dict.fromkeys(v.strip() for v in values))


@dataclass
class Listing:
    models: list[dict[str, Any]]
    pages: int
    limit_hit: str | None  # "pages" or "models" when the listing stopped before its end


async def creator_models(civitai: CivitaiClient, f: BulkFilter) -> Listing:
    """The creator's models Civitai lists, following the cursor, within MAX_PAGES/MAX_MODELS."""
    params: dict[str, Any] = {
        "username": f.username,
        "limit": PAGE_SIZE,
        "nsfw": "true" if f.nsfw else "false",
    }
    if f.types:
        params["types"] = f.types
    if f.baseModels:
        params["baseModels"] = f.baseModels
    models: list[dict[str, Any]] = []
    async for page, items, more in civitai.model_pages(params, MAX_PAGES):
        models += items
        if len(models) > MAX_MODELS:
            return Listing(models[:MAX_MODELS], page, "models")
        if not more:
            return Listing(models, page, None)
    return Listing(models, MAX_PAGES, "pages")


async def creator_exists(civitai: CivitaiClient, username: str) -> bool:
    """Whether Civitai's creators search knows this exact name (any case)."""
    data = await civitai.get_json("/api/v1/creators", {"query": username, "limit": 100})
    items, _ = list_page(data)
    names = {str(c.get("username", "")).lower() for c in items}
    return username.lower() in names


def preview_item(model: dict[str, Any], base_models: list[str]) -> dict[str, Any]:
    """What a download of this model would fetch, or why nothing can be."""
    kind = model.get("type")
    item: dict[str, Any] = {
        "modelId": model.get("id"),
        "name": model.get("name"),
        "type": kind,
        "model_type": model_type_from_civitai(kind),
        "nsfw": bool(model.get("nsfw")),
        "state": "new",
    }
    versions = [v for v in model.get("modelVersions") or [] if isinstance(v, dict)]
    if base_models:
        versions = [v for v in versions if v.get("baseModel") in base_models]
    version = newest_version({"modelVersions": versions})
    if version is None:
        item.update(
            state="unavailable",
            problem="no published version with a model file to download now (only drafts, "
            "early access or training data)",
        )
        return item
    try:
        f = pick_file(version, None)
    except errors.DaemonError as exc:
        item.update(state="unavailable", problem=str(exc), modelVersionId=version.get("id"))
        return item
    size_kb = f.get("sizeKB")
    hashes = f.get("hashes")
    sha = hashes.get("SHA256") if isinstance(hashes, dict) else None
    item.update(
        modelVersionId=version.get("id"),
        versionName=version.get("name"),
        baseModel=version.get("baseModel"),
        publishedAt=version.get("publishedAt"),
        fileId=f.get("id"),
        filename=f.get("name"),
        size=round(size_kb * 1024) if isinstance(size_kb, int | float) else None,
        sha256=sha.lower() if isinstance(sha, str) else None,
    )
    return item


async def mark_holdings(store: Store, items: list[dict[str, Any]]) -> None:
    """Each item's file already queued (`queued`, its job) or downloaded and still in place
    (`downloaded`, its path): as a job of the same Civitai file, or a library file (a scan's
    too) of the same SHA256."""
    wanted = [i for i in items if i["state"] == "new"]
    keys = [f"civitai:{i['modelVersionId']}:{i['fileId']}" for i in wanted]
    active = await job_query.active_by_key(store, keys)
    done = await job_query.jobs_by_key(store, keys, ["completed"])
    by_sha = await completed_by_sha256(store, [i["sha256"] for i in wanted if i.get("sha256")])
    completed = CompletedFiles(store)
    for item, key in zip(wanted, keys, strict=True):
        if jobs := active.get(key):
            item.update(state="queued", job_id=jobs[0]["id"], job_status=jobs[0]["status"])
            continue
        records = done.get(key, []) + by_sha.get(item.get("sha256") or "", [])
        for record in records:
            if await completed.still_in_place(record):
                item.update(state="downloaded", path=record["path"])
                break


def limit_sentence(listing: Listing) -> str | None:
    if listing.limit_hit == "pages":
        return (
            f"Civitai lists more: this preview stopped after {MAX_PAGES} pages of "
            f"{PAGE_SIZE}. Narrow it with a type or base-model filter."
        )
    if listing.limit_hit == "models":
        return (
            f"Civitai lists more: this preview shows the first {MAX_MODELS} models. Narrow it "
            f"with a type or base-model filter."
        )
    return None


async def preview(civitai: CivitaiClient, store: Store, f: BulkFilter) -> dict[str, Any]:
    """The creator's models with their newest versions, states and totals (POST
    /api/bulk/preview); CreatorNotFound when Civitai has no such creator."""
    listing = await creator_models(civitai, f)
    if not listing.models and not await creator_exists(civitai, f.username):
        raise errors.CreatorNotFound(f.username)
    items = [preview_item(m, f.baseModels) for m in listing.models]
    await mark_holdings(store, items)
    fetchable = [i for i in items if i["state"] != "unavailable"]
    new = [i for i in items if i["state"] == "new"]
    return {
        "username": f.username,
        "filters": {"types": f.types, "baseModels": f.baseModels, "nsfw": f.nsfw},
        "items": items,
        "totals": {
            "models": len(fetchable),
            "bytes": sum(i.get("size") or 0 for i in fetchable),
            "new": len(new),
            "new_bytes": sum(i.get("size") or 0 for i in new),
            "queued": sum(i["state"] == "queued" for i in items),
            "downloaded": sum(i["state"] == "downloaded" for i in items),
            "unavailable": len(items) - len(fetchable),
        },
        "pages": listing.pages,
        "limit": {
            "hit": listing.limit_hit,
            "detail": limit_sentence(listing),
            "max_pages": MAX_PAGES,
            "max_models": MAX_MODELS,
        },
    }
