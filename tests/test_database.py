"""SQLite state: migrations re-runnable, WAL, and nothing lost to a kill -9 mid-write."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from sqlite_utils import Database

from database import Store, migrations, open_database, utcnow
from tests.conftest import REPO, run_async

LONG_AGO = "2000-01-01T00:00:00Z"


def test_migrations_create_tables_and_rerun_changes_nothing(tmp_path):
    path = tmp_path / "completed.db"
    db = open_database(path)
    assert {"jobs", "parts", "completed", "updates"} <= set(db.table_names())
    applied = [m.name for m in migrations.applied(db)]
    db.close()
    db = open_database(path)
    assert [m.name for m in migrations.applied(db)] == applied
    assert migrations.pending(db) == []
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    db.close()


def test_store_runs_off_the_event_loop_and_persists(tmp_path):
    async def scenario() -> int:
        store = Store(tmp_path / "completed.db")
        await store.open()
        job = await store.insert_job({"status": "queued", "model_type": "lora", "priority": 5})
        await store.update_job(job["id"], bytes_done=10)
        await store.close()
        return job["id"]

    job_id = run_async(scenario())
    db = Database(tmp_path / "completed.db")
    assert db["jobs"].get(job_id)["bytes_done"] == 10


def test_kill_9_mid_write_leaves_a_consistent_database(tmp_path):
    path = tmp_path / "completed.db"
    writer = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from database import open_database
        db = open_database({str(path)!r})
        print("ready", flush=True)
        i = 0
        while True:
            with db.atomic():
                db["jobs"].insert({{"status": "queued", "model_type": "lora", "priority": i,
                                   "created_at": "x"}})
                db["completed"].insert({{"job_id": i, "path": "p%d" % i}})
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    conn = sqlite3.connect(path)
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    jobs = conn.execute("select count(*) from jobs").fetchone()[0]
    completed = conn.execute("select count(*) from completed").fetchone()[0]
    assert jobs > 0 and jobs == completed  # each transaction landed whole or not at all


def test_webhook_deliveries_are_forgotten_after_the_window_and_not_before(tmp_path):
    async def scenario() -> list[tuple[bool, object]]:
        store = Store(tmp_path / "completed.db")
        await store.open()
        first = await store.deliveries.claim("old", "2026-01-01T00:00:00Z", LONG_AGO)
        await store.deliveries.record("old", {"jobs": [], "errors": []})
        again = await store.deliveries.claim("old", "2026-01-01T00:00:00Z", LONG_AGO)  # kept
        later = await store.deliveries.claim("other", "2999-01-01T00:00:00Z", LONG_AGO)  # purges
        fresh = await store.deliveries.claim("old", "2026-01-01T00:00:00Z", LONG_AGO)
        await store.close()
        return [first, again, later, fresh]

    first, again, later, fresh = run_async(scenario())
    assert first == (True, None)
    assert again == (False, {"jobs": [], "errors": []})
    assert later == (True, None)
    assert fresh == (True, None)  # forgotten: a delivery this old is refused by its timestamp


def test_a_webhook_claim_whose_handler_died_is_free_again_after_a_minute_and_after_a_restart(
    tmp_path,
):
    """Killed between claim and record, a delivery must not answer 409 for a day."""
    forget = "2000-01-01T00:00:00Z"
    result = {"jobs": [{"id": 1}], "errors": []}

    def minute_before(seconds_from_now: float) -> str:
        return utcnow(time.time() + seconds_from_now - 60)

    async def scenario() -> dict[str, tuple[bool, object]]:
        seen = {}
        store = Store(tmp_path / "completed.db")
        await store.open()
        seen["first"] = await store.deliveries.claim("lost", forget, minute_before(0))
        seen["while handled"] = await store.deliveries.claim("lost", forget, minute_before(0))
        seen["a minute on"] = await store.deliveries.claim("lost", forget, minute_before(61))
        await store.deliveries.claim("done", forget, minute_before(0))
        await store.deliveries.record("done", result)
        seen["answered, a minute on"] = await store.deliveries.claim(
            "done", forget, minute_before(61)
        )
        await store.deliveries.claim("killed", forget, minute_before(0))
        await store.close()  # the daemon stops (or dies) before recording "killed"
        store = Store(tmp_path / "completed.db")
        await store.open()
        seen["after restart"] = await store.deliveries.claim("killed", forget, minute_before(0))
        seen["answered, after restart"] = await store.deliveries.claim(
            "done", forget, minute_before(0)
        )
        await store.close()
        return seen

    seen = run_async(scenario())
    assert seen == {
        "first": (True, None),
        "while handled": (False, None),  # the webhook answers 409: still being handled
        "a minute on": (True, None),
        "answered, a minute on": (False, result),  # an answered delivery is never re-run
        "after restart": (True, None),
        "answered, after restart": (False, result),
    }
