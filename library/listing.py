"""The Library page's list (issue 26 item 3): every file in the library, one row per path, with
its catalog fields, whether it is tracked and whether an update is available; filtered,
searched and paged by SQLite, counted in the same read.

Fast with 10,000 files (bench/library.py): the page is one query over the rows' own columns;
the update and page link of its 60 rows are looked up for those rows only; the rows a newer one
of the same path supersedes, and the folders, are worked out again only once `completed` has
changed.

The files a scan found that Civitai does not know (`file_hashes` rows with status 'unknown', the
scan of branch lib-backend) are listed too, when that column exists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from database import Store
from library import catalog

SORTS = {
    "newest": "completed_at desc, id desc",
    "oldest": "completed_at, id",
    "name": "lower(coalesce(model_name, filename)), id",
    "size": "size desc, id desc",
    "type": "model_type, lower(coalesce(model_name, filename)), id",
}
HASH_WORD = re.compile(r"[0-9a-f]{10}|[0-9a-f]{64}")  # an AutoV2, or a whole SHA256
FILES_SQL = """
select id, 'model' as kind, path, filename, model_type, modelId, modelVersionId, model_name,
  version_name, base_model, size, sha256, trained_words, preview_nsfw, completed_at, job_id,
  search_text
from completed where id not in (select value from json_each(?))
"""
UNKNOWN_SQL = """
select null, 'unknown', path, replace(path, rtrim(path, replace(path, '/', '')), ''),
  model_type, null, null, null, null, null, size, sha256,
  null, 0, checked_at, null, replace(path, rtrim(path, replace(path, '/', '')), '')
from file_hashes where status = 'unknown' and path not in (select path from completed)
"""
# The newest update found for the version on disk whose new version is not on disk yet.
UPDATE_OF = """(select max(u.id) from updates u where u.modelId = {t}.modelId
  and u.old_version_id = {t}.modelVersionId
  and not exists (select 1 from completed n where n.modelVersionId = u.new_version_id))"""
PAGE_UPDATES = f"""
select c.id, u.id, u.new_version_id, u.version_name, u.size, u.job_id, u.early_access_until,
  u.file_id, u.filename, u.untracked, (select status from jobs where jobs.id = u.job_id),
  (select url from jobs where jobs.id = c.job_id)
from completed c left join updates u on u.id = {UPDATE_OF.format(t="c")}
where c.id in (select value from json_each(?))
"""
UPDATE_FIELDS = (
    "update_id",
    "update_version_id",
    "update_version_name",
    "update_size",
    "update_job_id",
    "update_early_access",
    "update_file_id",
    "update_filename",
    "update_untracked",
    "update_job_status",
    "job_url",
)


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
        where.append("substr(path, 1, length(path) - length(filename)) = ?")  # its folder
        args.append(f"{root}/{query.folder.strip('/')}/" if query.folder.strip("/") else f"{root}/")
    if query.tracked is not None:
        where.append(
            f"coalesce(modelId in (select value from json_each(?)), 0) = {int(query.tracked)}"
        )
        args.append(json.dumps(tracked))
    if query.update is not None:
        where.append(f"{UPDATE_OF.format(t='f')} is {'not ' if query.update else ''}null")
    if query.unknown is not None:
        where.append("kind = 'unknown'" if query.unknown else "kind = 'model'")
    for word in query.q.split():  # every word in a name, a file, a trigger word or a hash
        # LIKE ignores the case of ASCII letters; the word's own % and _ are taken literally.
        text = "search_text like ? escape '\\'"
        args.append("%" + re.sub(r"([\\%_])", r"\\\1", word) + "%")
        word = word.lower()
        if HASH_WORD.fullmatch(word):
            text += " or sha256 like ?"  # its first hex digits: LIKE ignores their case
            args.append(f"{word}%")
        where.append(f"({text})")
    return " and ".join(where) or "1", args


@dataclass
class Seen:
    """What `completed` (and the unknown files) looked like when the cache below was made."""

    key: tuple[Any, ...]
    superseded: str  # JSON list of the ids a newer row of the same path replaces
    folders: list[str]


class Shelf:
    """The Library's list over one store; keeps what changes only with `completed`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: Seen | None = None

    async def listing(
        self, query: Query, roots: tuple[str, ...], tracked: list[int]
    ) -> tuple[list[dict[str, Any]], int, list[str], str]:
        """(a page of rows, the number that match, the folders, download_dir as rows spell it)."""
        return await self.store.read(self._listing, query, roots, tracked)

    def _listing(
        self, db: Database, query: Query, roots: tuple[str, ...], tracked: list[int]
    ) -> tuple[list[dict[str, Any]], int, list[str], str]:
        root = _root_of(db, roots)
        unknown = has_unknown_files(db)
        seen = self._seen(db, root, unknown)
        union = FILES_SQL + (f" union all {UNKNOWN_SQL}" if unknown else "")
        where, args = _where(query, root, tracked)
        source = f"select * from ({union}) as f where {where}"
        args = [seen.superseded, *args]  # FILES_SQL's one argument comes first
        order = SORTS.get(query.sort, SORTS["newest"])
        offset = (query.page - 1) * query.per_page
        cursor = db.execute(
            f"{source} order by {order} limit ? offset ?", [*args, query.per_page, offset]
        )
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
        if query.page == 1 and len(rows) < query.per_page:
            total = len(rows)  # all of them are on this page
        else:
            total = int(db.execute(f"select count(*) from ({source})", args).fetchone()[0])
        _add_updates(db, rows)
        return rows, total, seen.folders, root

    def _seen(self, db: Database, root: str, unknown: bool) -> Seen:
        key = tuple(db.execute("select max(id), count(*), total(size) from completed").fetchone())
        if unknown:
            key += tuple(db.execute("select count(*), max(rowid) from file_hashes").fetchone())
        key += (root,)
        if self.seen is None or self.seen.key != key:
            superseded = [
                i
                for (i,) in db.execute(
                    "select id from completed c where exists (select 1 from completed n "
                    "where n.path = c.path and n.id > c.id)"
                )
            ]
            self.seen = Seen(key, json.dumps(superseded), _folders(db, root, unknown))
        return self.seen


def _add_updates(db: Database, rows: list[dict[str, Any]]) -> None:
    """Each row's update available and its job's URL (for the page link): the page's rows only."""
    ids = [r["id"] for r in rows if r["id"] is not None]
    found = {
        r[0]: dict(zip(UPDATE_FIELDS, r[1:], strict=True))
        for r in db.execute(PAGE_UPDATES, [json.dumps(ids)]).fetchall()
    }
    for row in rows:
        row.update(found.get(row["id"]) or dict.fromkeys(UPDATE_FIELDS))


def _folders(db: Database, root: str, unknown: bool) -> list[str]:
    """The folders that hold files, relative to download_dir ("" for download_dir itself)."""
    union = "select substr(path, 1, length(path) - length(filename)) as f from completed"
    if unknown:
        union += " union select rtrim(path, replace(path, '/', '')) from file_hashes"
        union += " where status = 'unknown'"
    rows = db.execute(f"select distinct f from ({union}) order by 1").fetchall()
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
            "untracked": bool(row["update_untracked"]),
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


def _root_of(db: Database, roots: tuple[str, ...]) -> str:
    """download_dir as the rows spell it: resolved (as the queue writes paths) or as set."""
    row = db.execute("select path from completed order by id desc limit 1").fetchone()
    for root in roots:
        if row and str(row[0]).startswith(f"{root}/"):
            return root
    return roots[0]
