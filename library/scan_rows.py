"""The scan's rows in `file_hashes` (issue 26): each model file under download_dir the daemon did
not download, with its SHA256, its type (from its folder) and what Civitai said of it: `pending`
(not asked yet), `unknown` (Civitai does not know it) or `matched` (adopted into `completed`).
Rows without a status are only the hash cache of a completed download."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

PENDING, UNKNOWN, MATCHED = "pending", "unknown", "matched"
Found = tuple[str, int, int, str]  # path, size, mtime_ns, model_type


def record_found(db: Database, found: list[Found], known: set[str]) -> None:
    """The files a scan found become rows: a new or changed file `pending` (its old hash
    dropped), an unchanged one keeps its hash and status. A row whose file is gone leaves the
    list; one the daemon now holds as a completed download is `matched`."""
    here = {f[0] for f in found}
    old = {r["path"]: r for r in db.query("select * from file_hashes")}
    with db.atomic():
        for path, row in old.items():
            if row["status"] is None or path in here:
                continue
            if path in known:
                db.execute("update file_hashes set status = ? where path = ?", [MATCHED, path])
            else:
                db.execute("delete from file_hashes where path = ?", [path])
        for path, size, mtime_ns, kind in found:
            row = old.get(path)
            if row and row["sha256"] and (row["size"], row["mtime_ns"]) == (size, mtime_ns):
                db.execute(
                    "update file_hashes set model_type = ?, status = coalesce(status, ?) "
                    "where path = ?",
                    [kind, PENDING, path],
                )
                continue
            db.execute(
                "insert or replace into file_hashes (path, size, mtime_ns, sha256, model_type, "
                "status, checked_at) values (?, ?, ?, null, ?, ?, null)",
                [path, size, mtime_ns, kind, PENDING],
            )


def to_ask(db: Database) -> list[dict[str, Any]]:
    """The hashed files Civitai has not matched yet (pending, or unknown when last asked)."""
    return db.execute_returning_dicts(
        "select path, sha256, model_type from file_hashes where status in (?, ?) "
        "and sha256 is not null order by path",
        [PENDING, UNKNOWN],
    )


def record_answers(db: Database, answers: dict[str, str], now: str) -> None:
    """path → `matched` or `unknown`, as Civitai answered at `now`."""
    with db.atomic():
        for path, status in answers.items():
            db.execute(
                "update file_hashes set status = ?, checked_at = ? where path = ?",
                [status, now, path],
            )


def has_pending(db: Database) -> bool:
    """A scan was cut short (the daemon stopped or was killed): files wait to be hashed or asked."""
    found = db.execute("select 1 from file_hashes where status = ? limit 1", [PENDING])
    return found.fetchone() is not None
