"""Finding library files by hash (issue 26): a full SHA256 or its AutoV2 (the first 10 hex
digits, as Civitai shows it), in any case, finds the file whether Civitai knows it or not."""

from __future__ import annotations

import re
from typing import Any

from sqlite_utils import Database

from library import scan_rows

HEX = re.compile(r"[0-9a-fA-F]+")
DEFAULT_LIMIT = 200


def autov2(sha256: str | None) -> str | None:
    """Civitai's AutoV2 of a SHA256: its first 10 hex digits, upper case."""
    return sha256[:10].upper() if sha256 else None


def is_hash(q: str) -> bool:
    q = q.strip()
    return len(q) in (10, 64) and HEX.fullmatch(q) is not None


def match_hash(q: str, column: str = "sha256") -> tuple[str, list[str]]:
    """A SQL clause (and its arguments) matching `column` against `q`, a full SHA256 or an
    AutoV2, any case; ValueError when `q` is neither."""
    q = q.strip().lower()
    if not is_hash(q):
        raise ValueError(
            "q must be a SHA256 (64 hexadecimal digits) or an AutoV2 (its first 10 digits)"
        )
    if len(q) == 64:
        return f"lower({column}) = ?", [q]
    return f"substr(lower({column}), 1, 10) = ?", [q]


def library_files(db: Database, q: str | None, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """The files of the library, newest first: the completed ones (`known`) and those a scan
    found that Civitai does not know (`unknown`) or was not asked about yet (`pending`); those
    matching `q` (match_hash) when it is given."""
    where, args = match_hash(q) if q else ("1", [])
    known = db.execute_returning_dicts(
        "select id, path, sha256, size, model_type, modelId, modelVersionId, model_name, "
        f"version_name, base_model, completed_at from completed where {where} "
        "and id in (select max(id) from completed group by path) order by id desc limit ?",
        [*args, limit],
    )
    others = db.execute_returning_dicts(
        "select path, sha256, size, model_type, status, checked_at from file_hashes "
        f"where status in (?, ?) and {where} order by path limit ?",
        [scan_rows.UNKNOWN, scan_rows.PENDING, *args, limit],
    )
    files = [{**row, "status": "known"} for row in known] + others
    for row in files:
        row["sha256"] = (row["sha256"] or "").lower() or None
        row["autov2"] = autov2(row["sha256"])
    return files[:limit]
