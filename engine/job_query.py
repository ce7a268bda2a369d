"""Which jobs a list or a clear is about: statuses and a search, as one SQL condition.

The GUI's queue asks for one group at a time (running, queued, …) and a person's search; a
"clear finished" removes the rows of the same selection. Both read it from here, so what is
cleared is exactly what was listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlite_utils import Database

import errors
from database import Store
from engine.jobs import ACTIVE, ACTIVE_SQL, JobStatus
from errors import InvalidRequest

FINAL = ("completed", "cancelled", "failed")  # a job in one of these never changes by itself
ORDERS = {
    "newest": "id desc",
    "queue": "priority, id",  # the order workers claim queued jobs in
}


def parse_statuses(text: str | None) -> list[str]:
    """`queued,waiting` → ["queued", "waiting"]; empty means every status."""
    if not text:
        return []
    statuses = [s.strip() for s in text.split(",") if s.strip()]
    allowed = {s.value for s in JobStatus}
    unknown = [s for s in statuses if s not in allowed]
    if unknown:
        raise InvalidRequest(
            f"status must be one of {', '.join(sorted(allowed))} (several separated by commas), "
            f"not {', '.join(repr(s) for s in unknown)}"
        )
    return statuses


def search_condition(q: str | None) -> tuple[str | None, list[Any]]:
    """A job matches a search when its id, model id or version id is the number given, or its
    model or version name, file name, model_type or the URL asked for contains the text
    (case-insensitive for ASCII letters): a batch job not yet resolved has only its request."""
    text = (q or "").strip()
    if not text:
        return None, []
    like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    fields = ("model_name", "version_name", "filename", "model_type", "url")
    where = " or ".join(f"coalesce({f}, '') like ? escape '\\'" for f in fields)
    args: list[Any] = [like] * len(fields)
    if text.isdigit() and len(text) < 19:
        where += " or ? in (id, modelId, modelVersionId)"
        args.append(int(text))
    return f"({where})", args


def condition(statuses: list[str], q: str | None) -> tuple[str | None, list[Any]]:
    """The SQL condition (or None for all jobs) and its arguments."""
    parts: list[str] = []
    args: list[Any] = []
    if statuses:
        parts.append(f"status in ({', '.join('?' for _ in statuses)})")
        args += statuses
    search, search_args = search_condition(q)
    if search:
        parts.append(search)
        args += search_args
    return (" and ".join(parts) or None), args


async def delete(store: Store, where: str, args: list[Any]) -> list[int]:
    """Remove the rows of the jobs matching `where`, and their parts, in one transaction; their
    ids. Files are never touched here: only the history goes."""

    def op(db: Database) -> list[int]:
        with db.atomic():
            ids = [r[0] for r in db.execute(f"select id from jobs where {where}", args)]
            for start in range(0, len(ids), 500):  # SQLite's limit on bound variables
                chunk = ids[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                db.execute(f"delete from parts where job_id in ({marks})", chunk)
                db.execute(f"delete from jobs where id in ({marks})", chunk)
        return ids

    return await store.run(op)


async def jobs_by_key(
    store: Store, keys: Iterable[str], statuses: Iterable[str], oldest_first: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """The jobs of these statuses whose dedupe_key or request_key is one of `keys`, grouped by
    each of those keys it has; one query however many keys. Newest first, or oldest first."""
    wanted = set(keys)
    jobs = await store.jobs_with_keys(sorted(wanted), list(statuses))  # newest first
    by_key: dict[str, list[dict[str, Any]]] = {}
    for job in reversed(jobs) if oldest_first else jobs:
        for key in {job["dedupe_key"], job.get("request_key")} & wanted:
            by_key.setdefault(key, []).append(job)
    return by_key


async def active_by_key(store: Store, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The active jobs whose dedupe_key or request_key is one of `keys`, oldest first."""
    return await jobs_by_key(store, keys, ACTIVE, oldest_first=True)


async def active_by_path(
    store: Store, paths: list[str | None], but: int | None = None
) -> dict[str, dict[str, Any]]:
    """The active job (the oldest; not job `but`) that will write each of `paths` (None: not
    known yet). Two types sharing a folder may name one path for two different files."""
    wanted = sorted({p for p in paths if p})
    if not wanted:
        return {}
    marks = ", ".join("?" for _ in wanted)
    where = f"path in ({marks}) and {ACTIVE_SQL} and id != ?"
    by_path: dict[str, dict[str, Any]] = {}
    for job in await store.jobs_where(where, [*wanted, -1 if but is None else but]):
        by_path.setdefault(job["path"], job)  # oldest first
    return by_path


async def taken(store: Store, fields: dict[str, Any], job_id: int) -> errors.DaemonError | None:
    """Why job `job_id`, just resolved to `fields`, cannot go on: another active job is the same
    file (asked in other words), or writes another file at its path; None when neither."""
    others = await store.jobs_where(
        f"dedupe_key = ? and id != ? and {ACTIVE_SQL}", [fields["dedupe_key"], job_id], "id"
    )
    if others:
        return errors.SameFileElsewhere(
            others[0]["id"], others[0]["status"], others[0]["model_type"]
        )
    path = fields.get("path") or ""
    held = (await active_by_path(store, [path], but=job_id)).get(path)
    return errors.PathTaken(held, path) if held else None
