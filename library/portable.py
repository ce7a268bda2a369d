"""A library that moves to another machine (issue 26): the export lists every file (its source as
a Civitai AIR or a URL, SHA256, size, path relative to download_dir, tracked); the import says
what is present, what it would download and what is unavailable, and makes the requests that
put each missing file at the same relative path, verified by the listed SHA256."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlite_utils import Database

import safefs
from database import Store
from engine.jobs import SHA256_RE, JobRequest
from library import manifest, scan_rows
from library.scanner import file_sha256

FORMAT = "civitai-daemon-library"
VERSION = 1
# Civitai's AIR ecosystems by the start of a version's base model (sources/air.py cites the form).
ECOSYSTEMS = (("SD 1", "sd1"), ("SD 2", "sd2"), ("SDXL", "sdxl"), ("Pony", "sdxl"))
ECOSYSTEMS += (("Illustrious", "sdxl"), ("Flux", "flux1"), ("SD 3", "sd3"))


class PortableFile(BaseModel):
    path: str = Field(description="Relative to download_dir, with / between folders.")
    sha256: str
    size: int | None = Field(None, ge=0)
    model_type: str | None = None
    air: str | None = None  # urn:air:<ecosystem>:<type>:civitai:<modelId>@<versionId>
    fileId: int | None = None  # noqa: N815 (which file of the version)
    url: str | None = None  # the source of a file off Civitai (a Hugging Face URL)
    tracked: bool = False

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        if not SHA256_RE.fullmatch(value):
            raise ValueError("must be 64 hexadecimal characters")
        return value.lower()


class PortableLibrary(BaseModel):
    format: str = FORMAT
    version: int = VERSION
    files: list[PortableFile]


def air_of(row: dict[str, Any]) -> str | None:
    """A Civitai AIR for a completed row that names its model and version."""
    if not (row.get("modelId") and row.get("modelVersionId")):
        return None
    base = row.get("base_model") or ""
    eco = next((e for start, e in ECOSYSTEMS if base.startswith(start)), "other")
    kind = row.get("model_type") or "other"
    return f"urn:air:{eco}:{kind}:civitai:{row['modelId']}@{row['modelVersionId']}"


def _rows(db: Database) -> list[dict[str, Any]]:
    known = db.execute_returning_dicts(
        "select c.path, c.sha256, c.size, c.model_type, c.modelId, c.modelVersionId, "
        "c.base_model, c.fileId, j.url, j.source from completed c left join jobs j on "
        "j.id = c.job_id where c.id in (select max(id) from completed group by path) "
        "and c.sha256 is not null order by c.path"
    )
    unknown = db.execute_returning_dicts(
        "select path, sha256, size, model_type from file_hashes where status = ? "
        "and sha256 is not null order by path",
        [scan_rows.UNKNOWN],
    )
    return known + unknown


def _tracked(entries: list[Any], row: dict[str, Any]) -> bool:
    sha = (row.get("sha256") or "").lower()
    for e in entries:
        if not isinstance(e, dict):
            continue
        if sha and str(e.get("sha256") or "").lower() == sha:
            return True
        if row.get("modelVersionId") and e.get("modelVersionId") == row["modelVersionId"]:
            return True
        if row.get("url") and e.get("url") == row["url"]:
            return True
    return False


async def export(store: Store, models_root: Path, manifest_path: Path) -> dict[str, Any]:
    """The library as portable JSON (PortableLibrary)."""
    rows = await store.read(_rows)
    here = await asyncio.to_thread(lambda: [safefs.is_file(Path(r["path"])) for r in rows])
    rows = [row for row, there in zip(rows, here, strict=True) if there]  # gone: not exported
    entries, _, _ = await asyncio.to_thread(manifest.load, manifest_path)
    files = []
    for row in rows:
        path = Path(row["path"])
        if not path.is_relative_to(models_root):
            continue
        air = air_of(row)
        url = None if air or not row.get("url") or "***" in row["url"] else row["url"]
        files.append(
            {
                "path": path.relative_to(models_root).as_posix(),
                "sha256": row["sha256"].lower(),
                "size": row["size"],
                "model_type": row.get("model_type"),
                "air": air,
                "fileId": row.get("fileId"),
                "url": url,
                "tracked": _tracked(entries, row),
            }
        )
    return {"format": FORMAT, "version": VERSION, "files": files}


def relative_target(path: str, root: Path) -> Path:
    """Where an imported file goes: `path` under `root`, which it may not leave (no `..`, no
    absolute path, no link on its way); ValueError with the reason otherwise."""
    rel = PurePosixPath(path)
    if "\\" in path or rel.is_absolute() or path.startswith("~"):
        raise ValueError(f"{path!r} is not a path relative to download_dir")
    if any(part in ("..", ".", "") for part in rel.parts) or len(rel.parts) < 2:
        raise ValueError(f"{path!r} must be a folder and a file name under download_dir")
    target = root.joinpath(*rel.parts)
    if (link := safefs.first_link(target, root)) is not None:
        raise ValueError(f"{path!r} leads through the symbolic link {link}; nothing goes there")
    return target


async def plan(store: Store, library: PortableLibrary, root: Path) -> list[dict[str, Any]]:
    """Each file's fate: present (the same bytes at its path), to_download, or unavailable
    (with why), with its size."""
    out = []
    for f in library.files:
        item: dict[str, Any] = {"path": f.path, "sha256": f.sha256, "size": f.size}
        try:
            target = await asyncio.to_thread(relative_target, f.path, root)
        except ValueError as exc:
            out.append({**item, "status": "unavailable", "detail": str(exc)})
            continue
        item["target"] = str(target)
        if await asyncio.to_thread(os.path.lexists, target):
            if await asyncio.to_thread(safefs.is_file, target):
                st = await asyncio.to_thread(os.lstat, target)
                if (await file_sha256(store, target, st))[0].lower() == f.sha256:
                    out.append({**item, "status": "present", "size": st.st_size})
                    continue
            detail = "another file is at this path; it is not overwritten"
            out.append({**item, "status": "unavailable", "detail": detail})
        elif f.air or f.url:
            out.append({**item, "status": "to_download"})
        else:
            detail = "no source: Civitai did not know this file where it was exported"
            out.append({**item, "status": "unavailable", "detail": detail})
    return out


def request_of(f: PortableFile) -> JobRequest:
    """The download request that puts `f` at its path, verified by its SHA256."""
    req = JobRequest(
        air=f.air,
        url=None if f.air else f.url,
        fileId=f.fileId,
        model_type=f.model_type or "other",
        filename=PurePosixPath(f.path).name,
        sha256=f.sha256,
        track=f.tracked,
    )
    req._folder = str(PurePosixPath(f.path).parent)
    return req
