"""The Library page's list (issue 26 item 3): every file in the library, one row per path, with
its catalog fields, whether it is tracked and whether an update is available, filtered, searched
and paged in one indexed query that counts the matches as it goes.

The files a scan found that Civitai does not know (`file_hashes` rows with status 'unknown', the
scan of branch lib-backend) are listed too, when that column exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from database import Store
from library import catalog
from library.holdings import NEWEST_PER_PATH

SORTS = {
    "newest": "completed_at desc, id desc",
    "oldest": "completed_at, id",
    "name": "lower(coalesce(model_name, filename)), id",
    "size": "size desc, id desc",
    "type": "model_type, lower(coalesce(model_name, filename)), id",
}
HASH_WORD = re.compile(r"[0-9a-f]{10}|[0-9a-f]{64}")  # an AutoV2, or a whole SHA256
# A path's folder: the path with everything after its last "/" cut off (SQLite has no dirname).
FOLDER_SQL = "rtrim(path, replace(path, '/', ''))"
ACTIVE_JOB = "('queued', 'downloading', 'waiting', 'verifying', 'paused')"

FILES_SQL = f"""
select c.id, 'model' as kind, c.path, c.filename, c.model_type, c.modelId, c.modelVersionId,
  c.model_name, c.version_name, c.base_model, c.size, c.sha256, c.trained_words, c.preview_nsfw,
  c.completed_at, u.id as update_id, u.new_version_id as update_version_id,
  u.version_name as update_version_name, u.size as update_size, u.job_id as update_job_id,
  u.early_access_until as update_early_access, u.file_id as update_file_id,
  u.filename as update_filename,
  (select status from jobs where jobs.id = u.job_id) as update_job_status,
  (select url from jobs where jobs.id = c.job_id) as job_url
from completed c left join updates u on u.id = (
  select max(u2.id) from updates u2
  where u2.modelId = c.modelId and u2.old_version_id = c.modelVersionId
  and not exists (select 1 from completed c3 where c3.modelVersionId = u2.new_version_id))
where c.{NEWEST_PER_PATH}
"""
UNKNOWN_SQL = """
select null, 'unknown', h.path, replace(h.path, rtrim(h.path, replace(h.path, '/', '')), ''),
  h.model_type, null, null, null, null, null, h.size, h.sha256, null, 0, h.checked_at,
  null, null, null, null, null, null, null, null, null, null
from file_hashes h where h.status = 'unknown' and h.path not in (select path from completed)
"""


@dataclass
class Query:
    q: str = ""
    model_type: str | None = None
    base_model: str | None = None
    folder: str | None = None  # relative to download_dir; "" is download_dir itself
    tracked: bool | None = None
    update: bool | None = None
    unknown: bool | None = None  # True: only the files Civitai does not know; False: none of them
    sort: str = "newest"
    page: int = 1
    per_page: int = 60


def has_unknown_files(db: Database) -> bool:
    """The scan that records unknown files has run its migration (file_hashes.status)."""
    columns = {c.name for c in db["file_hashes"].columns}
    return {"status", "model_type", "checked_at"} <= columns


def _where(query: Query, root: str, tracked: list[int]) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if query.model_type:
        where.append("model_type = ?")
        args.append(query.model_type)
    if query.base_model:
        where.append("base_model = ?")
        args.append(query.base_model)
    if query.folder is not None:
        where.append(f"{FOLDER_SQL} = ?")
        args.append(f"{root}/{query.folder}/" if query.folder else f"{root}/")
    if query.tracked is not None:
        where.append(
            f"coalesce(modelId in (select value from json_each(?)), 0) = {int(query.tracked)}"
        )
        args.append(f"[{','.join(map(str, tracked))}]")
    if query.update is not None:
        where.append("update_id is not null" if query.update else "update_id is null")
    if query.unknown is not None:
        where.append("kind = 'unknown'" if query.unknown else "kind = 'model'")
    for word in query.q.lower().split():  # every word in a name, a file, a trigger word or a hash
        text = (
            "instr(lower(coalesce(model_name, '') || ' ' || coalesce(version_name, '') || ' ' || "
            "filename || ' ' || coalesce(trained_words, '')), ?)"
        )
        args.append(word)
        if HASH_WORD.fullmatch(word):
            text += " or substr(lower(sha256), 1, ?) = ?"
            args += [len(word), word]
        where.append(f"({text})")
    return " and ".join(where) or "1", args


def search(
    db: Database, query: Query, root: str, tracked: list[int]
) -> tuple[list[dict[str, Any]], int]:
    """One page of files that match, and how many match in all."""
    union = FILES_SQL + (f" union all {UNKNOWN_SQL}" if has_unknown_files(db) else "")
    where, args = _where(query, root, tracked)
    sql = (
        f"select *, count(*) over () as total from ({union}) where {where} "
        f"order by {SORTS.get(query.sort, SORTS['newest'])} limit ? offset ?"
    )
    cursor = db.execute(sql, [*args, query.per_page, (query.page - 1) * query.per_page])
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    total = rows[0]["total"] if rows else _count(db, union, where, args)
    return rows, total


def _count(db: Database, union: str, where: str, args: list[Any]) -> int:
    """The matches past the last page (a page beyond the end is empty, its total still told)."""
    return int(db.execute(f"select count(*) from ({union}) where {where}", args).fetchone()[0])


def folders(db: Database, root: str) -> list[str]:
    """The folders that hold files, relative to download_dir ("" for download_dir itself)."""
    union = f"select path from completed where {NEWEST_PER_PATH}"
    if has_unknown_files(db):
        union += " union select path from file_hashes where status = 'unknown'"
    rows = db.execute(f"select distinct {FOLDER_SQL} from ({union}) order by 1").fetchall()
    prefix = f"{root}/"
    return [f[len(prefix) :].rstrip("/") for (f,) in rows if f and f.startswith(prefix)]


def shaped(
    row: dict[str, Any], root: str, tracked: set[int], show_nsfw: bool, civitai_url: str
) -> dict[str, Any]:
    """A row as the page shows it: its folder, AutoV2, trigger words, page link and marks."""
    sha = (row.get("sha256") or "").lower() or None
    folder = str(Path(row["path"]).parent)
    update = None
    if row.get("update_id") is not None:
        update = {
            "id": row["update_id"],
            "version_id": row["update_version_id"],
            "version_name": row["update_version_name"],
            "size": row["update_size"],
            "job_id": row["update_job_id"],
            "job_status": row["update_job_status"],
            "early_access_until": row["update_early_access"],
        }
    nsfw = bool(row.get("preview_nsfw"))
    return {
        "id": row["id"],
        "kind": row["kind"],
        "path": row["path"],
        "folder": folder[len(root) + 1 :] if folder.startswith(f"{root}/") else "",
        "filename": row["filename"],
        "model_type": row["model_type"],
        "modelId": row["modelId"],
        "modelVersionId": row["modelVersionId"],
        "model_name": row["model_name"],
        "version_name": row["version_name"],
        "base_model": row["base_model"],
        "size": row["size"],
        "sha256": sha,
        "autov2": sha[:10].upper() if sha else None,
        "trained_words": catalog.words_of(row.get("trained_words")),
        "nsfw": nsfw,
        "blur": nsfw and not show_nsfw,
        "tracked": row["modelId"] in tracked,
        "page_url": page_url(row, civitai_url),
        "update": update,
        "completed_at": row["completed_at"],
    }


def page_url(row: dict[str, Any], civitai_url: str) -> str | None:
    """The model's page: on Civitai by its ids, on the Hub from the URL its job was given."""
    if row.get("modelId"):
        version = f"?modelVersionId={row['modelVersionId']}" if row.get("modelVersionId") else ""
        return f"{civitai_url.rstrip('/')}/models/{row['modelId']}{version}"
    url = row.get("job_url") or ""
    if url.startswith(("https://", "http://")) and "/resolve/" in url:
        return url.replace("/resolve/", "/blob/", 1)
    return None


async def listing(
    store: Store, query: Query, roots: tuple[str, ...], tracked: list[int]
) -> tuple[list[dict[str, Any]], int, list[str], str]:
    """(a page of rows, the number that match, the folders, the root the paths lie under)."""

    def op(db: Database) -> tuple[list[dict[str, Any]], int, list[str], str]:
        root = _root_of(db, roots)
        rows, total = search(db, query, root, tracked)
        return rows, total, folders(db, root), root

    return await store.read(op)


def _root_of(db: Database, roots: tuple[str, ...]) -> str:
    """download_dir as the rows spell it: resolved (as the queue writes paths) or as set."""
    row = db.execute("select path from completed order by id desc limit 1").fetchone()
    for root in roots:
        if row and str(row[0]).startswith(f"{root}/"):
            return root
    return roots[0]
