"""SQLite state through sqlite-utils: jobs, their parts, completed downloads, updates, webhook
deliveries and revoked sessions (SPEC §11).

Every call runs on one dedicated thread (the single writer), never on the event loop. The schema
is built by the named migrations in schema.py.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

import job_secrets
from config import permissions
from schema import migrations

T = TypeVar("T")


def utcnow(seconds: float | None = None) -> str:
    """Now (or `seconds` since the epoch) as ISO 8601 UTC, second precision, with a Z."""
    moment = datetime.now(UTC) if seconds is None else datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def open_database(path: Path | str) -> Database:
    """Open (creating) the database in WAL mode and apply pending migrations."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    permissions.create_private(path)  # it holds the jobs' URLs: the owner's only
    db = Database(path)
    db.enable_wal()
    for extra in permissions.database_files(path)[1:]:
        permissions.make_private(extra)  # made by an older daemon with the umask's mode
    # FULL: a committed offset survives power loss, not only a killed process.
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")
    migrations.apply(db)
    return db


def _update_job(db: Database, job_id: int, fields: dict[str, Any], now: str) -> None:
    """Set a job's fields; a URL among them is stored without its credentials."""
    if job_secrets.touches(fields):
        held = db.execute(f"select {job_secrets.COLUMN} from jobs where id = ?", [job_id])
        found = held.fetchone()
        fields = job_secrets.kept_apart(fields, found[0] if found else None)
    db["jobs"].update(job_id, {"updated_at": now, **fields})


class Store:
    """The daemon's database: async methods that run sqlite-utils calls on one thread (jobs,
    parts, completed, updates); webhook deliveries and revoked sessions beside it, on the same
    threads (`deliveries`, `revoked_sessions`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        # Reads on a connection and thread of their own: WAL lets them run while a commit waits
        # for the disk, so the API stays quick while downloads keep the disk busy.
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-read")
        self._db: Database | None = None
        self._reader: Database | None = None
        self.deliveries = WebhookDeliveries(self)
        self.revoked_sessions = RevokedSessions(self)

    async def open(self) -> None:
        await self._call(self._executor, self._open)
        await self._call(self._read_executor, self._open_reader)

    def _open(self) -> None:
        self._db = open_database(self.path)
        with self._db.atomic():
            # A delivery claimed but never recorded was being handled when the daemon stopped
            # (or was killed): nothing handles it now, so a retry may claim it again.
            self._db.execute("delete from webhook_deliveries where result is null")

    def _open_reader(self) -> None:
        self._reader = Database(self.path)
        self._reader.execute("PRAGMA query_only=1")

    async def close(self) -> None:
        if self._reader is not None:
            await self._call(self._read_executor, self._reader.close)
            self._reader = None
        if self._db is not None:
            await self._call(self._executor, self._db.close)
            self._db = None
        self._read_executor.shutdown(wait=True)
        self._executor.shutdown(wait=True)

    async def _call(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(fn, *args))

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(db, *args)` on the writer's thread."""
        return await self._call(
            self._executor, lambda: fn(self._require(self._db), *args, **kwargs)
        )

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(db, *args)` on the reader's thread; `fn` must not write."""
        return await self._call(
            self._read_executor, lambda: fn(self._require(self._reader), *args, **kwargs)
        )

    @staticmethod
    def _require(db: Database | None) -> Database:
        if db is None:
            raise RuntimeError("database is not open")
        return db

    # Jobs ---------------------------------------------------------------------------------

    async def insert_job(self, row: dict[str, Any]) -> dict[str, Any]:
        def op(db: Database) -> dict[str, Any]:
            now = utcnow()
            with db.atomic():
                table = db["jobs"]
                table.insert({"created_at": now, "updated_at": now, **job_secrets.kept_apart(row)})
                return table.get(table.last_pk)

        return await self.run(op)

    async def insert_jobs(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert many jobs in ONE transaction (one commit, one fsync); the rows, in order."""

        rows = [job_secrets.kept_apart(row) for row in rows]

        def op(db: Database) -> list[dict[str, Any]]:
            now = utcnow()
            columns = sorted({k for row in rows for k in row} | {"created_at", "updated_at"})
            sql = (
                f"insert into jobs ({', '.join(f'[{c}]' for c in columns)}) "
                f"values ({', '.join('?' for _ in columns)})"
            )
            ids = []
            with db.atomic():
                for row in rows:
                    values = {"created_at": now, "updated_at": now, **row}
                    ids.append(db.execute(sql, [values.get(c) for c in columns]).lastrowid)
            by_id = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                by_id.update({r["id"]: r for r in db["jobs"].rows_where(f"id in ({marks})", chunk)})
            return [by_id[i] for i in ids]

        if not rows:
            return []
        return await self.run(op)

    async def update_jobs(self, changes: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Set fields of many jobs in one transaction; the jobs after it, in order."""

        def op(db: Database) -> list[dict[str, Any]]:
            now = utcnow()
            with db.atomic():
                for job_id, fields in changes:
                    _update_job(db, job_id, fields, now)
            return [db["jobs"].get(job_id) for job_id, _ in changes]

        if not changes:
            return []
        return await self.run(op)

    async def jobs_with_keys(self, keys: list[str], statuses: list[str]) -> list[dict[str, Any]]:
        """Jobs of these statuses whose dedupe_key or request_key is one of `keys`, newest
        first; one call however many keys (asked 400 at a time)."""

        def op(db: Database) -> list[dict[str, Any]]:
            found: dict[int, dict[str, Any]] = {}
            # Stored without a URL's credentials; answered with them, as the caller's keys are.
            wanted = sorted({job_secrets.public_key(k) for k in keys})
            status_marks = ", ".join("?" for _ in statuses)
            for start in range(0, len(wanted), 400):
                chunk = wanted[start : start + 400]
                marks = ", ".join("?" for _ in chunk)
                where = (
                    f"status in ({status_marks}) and "
                    f"(dedupe_key in ({marks}) or request_key in ({marks}))"
                )
                for row in db["jobs"].rows_where(where, [*statuses, *chunk, *chunk]):
                    for key in ("dedupe_key", "request_key"):
                        row[key] = job_secrets.revealed(row, key)
                    found[row["id"]] = row
            return sorted(found.values(), key=lambda r: -r["id"])

        if not keys:
            return []
        return await self.read(op)

    async def update_job(self, job_id: int, **fields: Any) -> dict[str, Any]:
        def op(db: Database) -> dict[str, Any]:
            with db.atomic():
                _update_job(db, job_id, fields, utcnow())
                return db["jobs"].get(job_id)

        return await self.run(op)

    async def get_job(self, job_id: int) -> dict[str, Any] | None:
        def op(db: Database) -> dict[str, Any] | None:
            rows = list(db["jobs"].rows_where("id = ?", [job_id]))
            return rows[0] if rows else None

        return await self.read(op)

    async def jobs_where(
        self,
        where: str | None = None,
        args: list[Any] | None = None,
        order_by: str = "id",
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[dict[str, Any]]:
        def op(db: Database) -> list[dict[str, Any]]:
            return list(
                db["jobs"].rows_where(
                    where, args or [], order_by=order_by, limit=limit, offset=offset
                )
            )

        return await self.read(op)

    async def count_jobs_by_status(self, where: str = "1", args: Any = ()) -> dict[str, int]:
        def op(db: Database) -> dict[str, int]:
            rows = db.query(
                f"select status, count(*) n from jobs where {where} group by status", args
            )
            return {r["status"]: r["n"] for r in rows}

        return await self.read(op)

    # Parts --------------------------------------------------------------------------------

    async def get_parts(self, job_id: int) -> list[dict[str, Any]]:
        return await self.run(
            lambda db: list(db["parts"].rows_where("job_id = ?", [job_id], order_by="idx"))
        )

    async def set_parts(
        self, job_id: int, parts: list[dict[str, Any]], **fields: Any
    ) -> dict[str, Any] | None:
        """Replace a job's parts (and set job fields) in one transaction; the job after it."""

        def op(db: Database) -> dict[str, Any] | None:
            with db.atomic():
                db.execute("delete from parts where job_id = ?", [job_id])
                if parts:
                    db["parts"].insert_all([{**p, "job_id": job_id} for p in parts])
                if fields:
                    _update_job(db, job_id, fields, utcnow())
                    return db["jobs"].get(job_id)
            return None

        return await self.run(op)

    async def save_progress(self, job_id: int, parts: list[dict[str, Any]], **fields: Any) -> None:
        """Commit each part's durable offset and the job's counters in one transaction."""

        def op(db: Database) -> None:
            # Progress need not survive a power cut (an offset that goes back is re-fetched),
            # so its commits skip the WAL fsync; every other commit keeps synchronous=FULL.
            db.execute("PRAGMA synchronous=NORMAL")
            try:
                with db.atomic():
                    for p in parts:
                        db.execute(
                            "update parts set done = ? where job_id = ? and idx = ?",
                            [p["done"], job_id, p["idx"]],
                        )
                    _update_job(db, job_id, fields, utcnow())
            finally:
                db.execute("PRAGMA synchronous=FULL")

        await self.run(op)

    # Completed and updates ----------------------------------------------------------------

    async def add_completed(self, row: dict[str, Any]) -> None:
        await self.run(lambda db: db["completed"].insert(row))

    async def add_update(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """Record a found update once; None when it was already recorded."""

        def op(db: Database) -> dict[str, Any] | None:
            with db.atomic():
                exists = db.execute(
                    "select 1 from updates where modelId = ? and new_version_id = ?",
                    [row["modelId"], row["new_version_id"]],
                ).fetchone()
                if exists:
                    return None
                table = db["updates"]
                table.insert({"found_at": utcnow(), **row})
                return table.get(table.last_pk)

        return await self.run(op)

    async def waiting_update(self, model_id: int, version_id: int) -> dict[str, Any] | None:
        """An update recorded before without a job (it was in early access then)."""

        def op(db: Database) -> dict[str, Any] | None:
            rows = db["updates"].rows_where(
                "modelId = ? and new_version_id = ? and job_id is null", [model_id, version_id]
            )
            return next(iter(rows), None)

        return await self.read(op)

    async def list_updates(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self.read(
            lambda db: list(db["updates"].rows_where(order_by="id desc", limit=limit))
        )

    async def completed_totals(self) -> tuple[int, float]:
        """(bytes, seconds spent transferring them) over the completed jobs that transferred: a
        file found in place or adopted by a scan took no transfer time, so it is not counted."""

        def op(db: Database) -> tuple[int, float]:
            row = db.execute(
                "select coalesce(sum(size), 0), coalesce(sum(elapsed_s), 0) from completed "
                "where elapsed_s > 0"
            ).fetchone()
            return int(row[0]), float(row[1])

        return await self.read(op)

    async def find_completed(
        self, version_id: int | None, model_id: int | None, sha256: str | None
    ) -> list[dict[str, Any]]:
        """Completed downloads of that version (or model, or hash), newest first."""
        if version_id:
            where, args = "modelVersionId = ?", [version_id]
        elif sha256:
            where, args = "lower(sha256) = ?", [sha256.lower()]
        elif model_id:
            where, args = "modelId = ?", [model_id]
        else:
            return []
        return await self.read(
            lambda db: list(db["completed"].rows_where(where, args, order_by="id desc"))
        )


class WebhookDeliveries:
    """Inbound webhook deliveries already handled, on the store's writer: a replay queues nothing
    twice."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def claim(
        self, delivery_id: str, forget_before: str, stale_before: str
    ) -> tuple[bool, dict[str, Any] | None]:
        """(True, None) when this call is the first with the id; else (False, the first
        delivery's result, or None while it is still being handled). Deliveries received before
        `forget_before` (ISO 8601 UTC) are forgotten, so the table does not grow forever; a claim
        made before `stale_before` and never recorded (its handler died) counts as unclaimed."""

        def op(db: Database) -> tuple[bool, dict[str, Any] | None]:
            with db.atomic():
                db.execute("delete from webhook_deliveries where received_at < ?", [forget_before])
                db.execute(
                    "delete from webhook_deliveries where result is null and received_at < ?",
                    [stale_before],
                )
                row = db.execute(
                    "select result from webhook_deliveries where id = ?", [delivery_id]
                ).fetchone()
                if row is not None:
                    return False, json.loads(row[0]) if row[0] else None
                db["webhook_deliveries"].insert({"id": delivery_id, "received_at": utcnow()})
                return True, None

        return await self.store.run(op)

    async def record(self, delivery_id: str, result: dict[str, Any]) -> None:
        row = {"id": delivery_id, "received_at": utcnow(), "result": json.dumps(result)}
        await self.store.run(lambda db: db["webhook_deliveries"].upsert(row, pk="id"))

    async def release(self, delivery_id: str) -> None:
        def op(db: Database) -> None:
            with db.atomic():
                db.execute("delete from webhook_deliveries where id = ?", [delivery_id])

        await self.store.run(op)


class RevokedSessions:
    """GUI sessions ended by Log out, on the store's writer, kept until they would expire."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def unexpired(self, now: int) -> dict[str, int]:
        """Session ids ended by Log out that have not expired yet; the expired ones are purged."""

        def op(db: Database) -> dict[str, int]:
            with db.atomic():
                db.execute("delete from revoked_sessions where expires_at <= ?", [now])
            rows = db.execute("select jti, expires_at from revoked_sessions").fetchall()
            return {jti: expires for jti, expires in rows}

        return await self.store.run(op)

    async def add(self, jti: str, expires_at: int, now: int) -> None:
        def op(db: Database) -> None:
            with db.atomic():
                db["revoked_sessions"].upsert({"jti": jti, "expires_at": expires_at}, pk="jti")
                db.execute("delete from revoked_sessions where expires_at <= ?", [now])

        await self.store.run(op)
