"""The queue as a long list: statuses, search and order in GET /api/jobs; clearing the history."""

from __future__ import annotations

import os
import sqlite3

from tests.conftest import assert_file_is, wait_job


def db_job_ids(home) -> set[int]:
    with sqlite3.connect(home / "data/completed.db") as db:
        return {r[0] for r in db.execute("select id from jobs")}


def queue_mixed(civitai, c) -> dict[str, dict]:
    """Two completed jobs, a failed and a cancelled one, and one held downloading."""
    done_a = civitai.add_simple(1, 10, os.urandom(20_000), filename="alpha_lora.safetensors")
    done_b = civitai.add_simple(2, 20, os.urandom(30_000), filename="beta.ckpt", type="Checkpoint")
    civitai.add_simple(3, 30, b"x" * 100, filename="locked.safetensors", login_required=True)
    civitai.add_simple(4, 40, os.urandom(3_000_000), filename="gamma_cancel.safetensors")
    civitai.add_simple(5, 50, os.urandom(4_000_000), filename="delta_slow.safetensors")
    jobs = {}
    for name, version, kind in (
        ("a", 10, "lora"),
        ("b", 20, "checkpoint"),
        ("failed", 30, "lora"),
    ):
        r = c.post("/api/download", json={"modelVersionId": version, "model_type": kind})
        assert r.status_code == 202, r.text
        jobs[name] = r.json()
    jobs["a"] = wait_job(c, jobs["a"]["id"])
    jobs["b"] = wait_job(c, jobs["b"]["id"])
    jobs["failed"] = wait_job(c, jobs["failed"]["id"], ("failed",))
    civitai.default_rate = 200_000  # the next two stay downloading until cancelled or freed
    r = c.post("/api/download", json={"modelVersionId": 40, "model_type": "lora"})
    wait_job(c, r.json()["id"], ("downloading",))
    jobs["cancelled"] = c.post(f"/api/jobs/{r.json()['id']}/cancel").json()
    assert jobs["cancelled"]["status"] == "cancelled", jobs["cancelled"]
    r = c.post("/api/download", json={"modelVersionId": 50, "model_type": "lora"})
    jobs["running"] = wait_job(c, r.json()["id"], ("downloading",))
    jobs["files"] = {"a": done_a, "b": done_b}
    return jobs


def test_jobs_are_listed_by_several_statuses_a_search_and_in_the_order_workers_take_them(
    civitai, daemon
):
    d = daemon(workers=1)
    with d.client() as c:
        jobs = queue_mixed(civitai, c)
        ended = c.get("/api/jobs?status=completed,cancelled").json()
        assert [j["id"] for j in ended["jobs"]] == [
            jobs["cancelled"]["id"],
            jobs["b"]["id"],
            jobs["a"]["id"],
        ]
        assert ended["total"] == 3
        assert ended["counts"] == {
            "queued": 0,
            "downloading": 1,
            "waiting": 0,
            "verifying": 0,
            "paused": 0,
            "completed": 2,
            "failed": 1,
            "cancelled": 1,
        }
        # A search matches the file name, the model name, the type or the id, any case.
        by_file = c.get("/api/jobs?q=ALPHA").json()
        assert [j["id"] for j in by_file["jobs"]] == [jobs["a"]["id"]] and by_file["total"] == 1
        assert by_file["counts"]["completed"] == 1 and by_file["counts"]["downloading"] == 0
        by_type = c.get("/api/jobs?q=checkpoint").json()
        assert [j["id"] for j in by_type["jobs"]] == [jobs["b"]["id"]]
        by_id = c.get(f"/api/jobs?q={jobs['failed']['id']}").json()
        assert jobs["failed"]["id"] in [j["id"] for j in by_id["jobs"]]
        # `%` and `_` are text, not wildcards.
        assert c.get("/api/jobs?q=%25").json()["total"] == 0
        assert c.get("/api/jobs?q=a_l").json()["total"] == 1  # alpha_lora, not "a?l"
        # Queued jobs in the order the workers take them: lower priority first, then oldest.
        c.post("/api/download", json={"modelVersionId": 10, "model_type": "other", "priority": 9})
        c.post("/api/download", json={"modelVersionId": 20, "model_type": "other", "priority": 1})
        queued = c.get("/api/jobs?status=queued&order=queue").json()["jobs"]
        assert [j["priority"] for j in queued] == [1, 9]
        bad = c.get("/api/jobs?status=queued,nonsense")
        assert bad.status_code == 422
        assert bad.json()["detail"].startswith("status must be one of")
        assert "'nonsense'" in bad.json()["detail"]
        assert c.get("/api/jobs?order=random").status_code == 422
        civitai.default_rate = None
    d.stop()


def test_clear_finished_forgets_the_rows_and_never_a_file(civitai, daemon, home):
    d = daemon(workers=1, viewer_token="wall-screen-key")
    with d.client() as c:
        jobs = queue_mixed(civitai, c)
        files = {
            k: home / "data/models" / j["model_type"] / j["filename"]
            for k, j in jobs.items()
            if k in ("a", "b")
        }
        stats = {k: p.stat() for k, p in files.items()}
        bytes_before = c.get("/api/metrics").json()["bytes_downloaded"]
        viewer = c.post("/api/jobs/clear", headers={"Authorization": "Bearer wall-screen-key"})
        assert viewer.status_code == 403
        assert "viewer key can only read" in viewer.json()["detail"]
        active = c.post("/api/jobs/clear", json={"statuses": ["completed", "downloading"]})
        assert active.status_code == 422
        assert active.json()["detail"] == (
            "Only finished jobs can be cleared (completed, cancelled, failed), not downloading: "
            "cancel them first"
        )
        # Only what the search matches, of the statuses given.
        some = c.post("/api/jobs/clear", json={"statuses": ["completed"], "q": "beta"}).json()
        assert some == {"cleared": 1, "ids": [jobs["b"]["id"]]}
        rest = c.post("/api/jobs/clear").json()
        assert sorted(rest["ids"]) == sorted(
            [jobs["a"]["id"], jobs["failed"]["id"], jobs["cancelled"]["id"]]
        )
        listed = c.get("/api/jobs").json()
        assert [j["id"] for j in listed["jobs"]] == [jobs["running"]["id"]]
        assert listed["total"] == 1
        assert db_job_ids(home) == {jobs["running"]["id"]}
        assert c.get(f"/api/jobs/{jobs['a']['id']}").status_code == 404
        # The files, the library and the totals stay.
        for k, path in files.items():
            assert_file_is(path, jobs["files"][k].sha256)
            assert path.stat().st_ino == stats[k].st_ino
            assert path.stat().st_mtime_ns == stats[k].st_mtime_ns
        library = c.get("/api/completed").json()["completed"]
        assert sorted(e["filename"] for e in library) == ["alpha_lora.safetensors", "beta.ckpt"]
        assert c.get("/api/metrics").json()["bytes_downloaded"] == bytes_before
        # Asked again, a cleared file is found in place: no byte fetched, the file untouched.
        civitai.default_rate = None
        wait_job(c, jobs["running"]["id"])
        sent = civitai.bytes_sent
        again = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        assert again.status_code == 202, again.text
        done = wait_job(c, again.json()["id"])
        assert done["path"] == str(files["a"])
        assert civitai.bytes_sent == sent
        assert files["a"].stat().st_ino == stats["a"].st_ino
        assert_file_is(files["a"], jobs["files"]["a"].sha256)
    d.stop()
