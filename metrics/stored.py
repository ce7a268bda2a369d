"""The counts GET /metrics derives from the database at each scrape, so they survive a restart:
jobs by status, bytes downloaded by source, failed jobs by error class, the average speed and
the last update checks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database

from database import Store

CHECKS_READ = 100  # the update checks looked through for the last one without an error


@dataclass(frozen=True)
class Stored:
    jobs_by_status: dict[str, int] = field(default_factory=dict)
    bytes_by_origin: dict[str, int] = field(default_factory=dict)  # completed transfers only
    failed_by_class: dict[str, int] = field(default_factory=dict)
    transferred_bytes: int = 0  # over `transfer_seconds`: the average speed
    transfer_seconds: float = 0.0
    check_duration_s: float | None = None  # the last finished update check
    check_finished: float | None = None  # Unix time
    check_errors: int | None = None
    check_success: float | None = None  # Unix time the last check without an error finished


def unix_time(stamp: str | None) -> float | None:
    """`2026-12-07T15:44:06Z` as Unix seconds; None for no time."""
    if not stamp:
        return None
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _grouped(db: Database, sql: str) -> dict[str, int]:
    return {str(key): int(n or 0) for key, n in db.execute(sql).fetchall()}


def _checks(db: Database) -> dict[str, Any]:
    """The last finished update check: how long it took, when it ended, its errors, and when
    the last one without an error ended."""
    rows = db.execute(
        f"select summary from update_checks order by id desc limit {CHECKS_READ}"
    ).fetchall()
    summaries = [json.loads(r[0]) for r in rows]
    if not summaries:
        return {}
    last = summaries[0]
    started, finished = unix_time(last.get("started_at")), unix_time(last.get("finished_at"))
    duration = last.get("duration_s")
    if duration is None and started is not None and finished is not None:
        duration = finished - started  # a check recorded before duration_s was kept
    success = next((s for s in summaries if not s.get("errors")), None)
    return {
        "check_duration_s": duration,
        "check_finished": finished,
        "check_errors": len(last.get("errors") or []),
        "check_success": unix_time(success.get("finished_at")) if success else None,
    }


def read(db: Database) -> Stored:
    """Every stored count, in one read."""
    totals = db.execute(
        "select coalesce(sum(size), 0), coalesce(sum(elapsed_s), 0) from completed "
        "where elapsed_s > 0"
    ).fetchone()
    return Stored(
        jobs_by_status=_grouped(db, "select status, count(*) from jobs group by status"),
        # A file found in place or adopted by a scan took no transfer (elapsed_s 0): not counted.
        bytes_by_origin=_grouped(
            db,
            "select coalesce(origin, 'direct'), sum(size) from completed where elapsed_s > 0 "
            "group by 1",
        ),
        failed_by_class=_grouped(
            db,
            "select coalesce(error_class, 'unknown'), count(*) from jobs where status = 'failed' "
            "group by 1",
        ),
        transferred_bytes=int(totals[0]),
        transfer_seconds=float(totals[1]),
        **_checks(db),
    )


async def stored(store: Store) -> Stored:
    return await store.read(read)
