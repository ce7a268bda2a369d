"""The finished update checks, kept in SQLite (table `update_checks`) so the last one is still
reported after a restart."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database

from database import Store

KEEP = 100  # checks kept; older ones are forgotten


class CheckHistory:
    """Finished checks' summaries, on the store's writer and reader threads."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, summary: dict[str, Any]) -> None:
        def op(db: Database) -> None:
            with db.atomic():
                db["update_checks"].insert(
                    {
                        "started_at": summary["started_at"],
                        "finished_at": summary["finished_at"],
                        "summary": json.dumps(summary),
                    }
                )
                db.execute(
                    "delete from update_checks where id not in "
                    f"(select id from update_checks order by id desc limit {KEEP})"
                )

        await self.store.run(op)

    async def last(self) -> dict[str, Any] | None:
        """The summary of the last finished check, or None when none has run in this home."""

        def op(db: Database) -> dict[str, Any] | None:
            query = "select summary from update_checks order by id desc limit 1"
            row = db.execute(query).fetchone()
            return json.loads(row[0]) if row else None

        return await self.store.read(op)
