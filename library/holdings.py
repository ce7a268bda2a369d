"""What the library holds: the completed files a person can filter, their totals per model_type,
and the disk under download_dir (SPEC §14, issue 15).

A file completed twice at one path (a re-download, an update swapped in place) is one file: the
totals count each path once, at its newest completed row.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from database import Store
from engine.jobs import OLD_PREVIEW_SUFFIXES, PREVIEW_SUFFIX

NEWEST_PER_PATH = "id in (select max(id) from completed group by path)"


def _filters(
    model_type: str | None, base_model: str | None, q: str | None
) -> tuple[str, list[Any]]:
    where, args = [], []
    if model_type:
        where.append("model_type = ?")
        args.append(model_type)
    if base_model:
        where.append("base_model = ?")
        args.append(base_model)
    for word in (q or "").split():  # every word somewhere in the name, version or filename
        where.append(
            "(instr(lower(coalesce(model_name, '')), ?) or instr(lower(coalesce(version_name, "
            "'')), ?) or instr(lower(filename), ?))"
        )
        args += [word.lower()] * 3
    return " and ".join(where) or "1", args


async def completed_rows(
    store: Store,
    model_type: str | None = None,
    base_model: str | None = None,
    q: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Completed downloads, newest first, that match every filter given; and how many match."""
    where, args = _filters(model_type, base_model, q)

    def op(db: Database) -> tuple[list[dict[str, Any]], int]:
        rows = list(
            db["completed"].rows_where(where, args, order_by="id desc", limit=limit, offset=offset)
        )
        total = db.execute(f"select count(*) from completed where {where}", args).fetchone()[0]
        return rows, int(total)

    return await store.read(op)


def preview_of(model: Path) -> Path | None:
    """The preview image saved beside a model, if any: its `<stem>.preview.png`, else the
    `<stem>.preview.<ext>` an older daemon wrote (the image as Civitai served it)."""
    for suffix in (PREVIEW_SUFFIX, *OLD_PREVIEW_SUFFIXES):
        candidate = model.with_name(model.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def with_previews(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with `has_preview`: the GUI asks for an image only where there is one (a 404
    per model without one was a console error on the Library page)."""
    return [{**row, "has_preview": preview_of(Path(row["path"])) is not None} for row in rows]


@dataclass
class TypeTotal:
    model_type: str
    files: int
    bytes: int


async def totals(store: Store) -> tuple[list[TypeTotal], list[str]]:
    """(files and bytes per model_type, largest first; the base models seen), each path once."""

    def op(db: Database) -> tuple[list[TypeTotal], list[str]]:
        per_type = db.execute(
            "select model_type, count(*), coalesce(sum(size), 0) from completed "
            f"where {NEWEST_PER_PATH} group by model_type order by 3 desc, 1"
        ).fetchall()
        bases = db.execute(
            "select distinct base_model from completed where base_model is not null "
            "and base_model != '' order by lower(base_model)"
        ).fetchall()
        return [TypeTotal(t, int(n), int(b)) for t, n, b in per_type], [b for (b,) in bases]

    return await store.read(op)


class Totals:
    """`totals`, computed again only once the completed table has changed (a row added or
    removed): /api/status asks every second, and a large library takes milliseconds to sum."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: tuple[Any, ...] | None = None
        self._value: tuple[list[TypeTotal], list[str]] = ([], [])

    async def get(self) -> tuple[list[TypeTotal], list[str]]:
        seen = await self.store.read(
            lambda db: tuple(
                db.execute("select max(id), count(*), total(size) from completed").fetchone()
            )
        )
        if seen != self._seen:
            self._value = await totals(self.store)
            self._seen = seen
        return self._value


@dataclass
class Disk:
    path: str  # download_dir as configured (absolute)
    total: int
    used: int
    free: int  # what the daemon may still write (blocks free to unprivileged users)


def _existing(path: Path) -> Path:
    """`path`, or its nearest existing parent: download_dir is made at the first download."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def disk_usage(models_dir: Path) -> Disk:
    usage = shutil.disk_usage(_existing(Path(os.path.realpath(models_dir))))
    return Disk(str(models_dir), usage.total, usage.used, usage.free)


async def disk(models_dir: Path) -> Disk:
    return await asyncio.to_thread(disk_usage, models_dir)
