"""A person's controls of a job (issue 15): pause, resume, priority, and retry only where it can
help. The real daemon against the fake Civitai, over real HTTP."""

from __future__ import annotations

import time

from sqlite_utils import Database
from websockets.sync.client import connect

from tests.conftest import assert_file_is, wait_for, wait_job
from tests.receiver import Receiver
from tests.test_downloads import MB, blob, sha
from tests.test_ws import messages_until, ws_url


def saved_bytes(home, job_id: int) -> int:
    db = Database(home / "data" / "completed.db")
    try:
        return sum(p["done"] for p in db["parts"].rows_where("job_id = ?", [job_id]))
    finally:
        db.close()


def cdn_sent(civitai, file_id: int) -> int:
    return sum(r.sent for r in civitai.requests_to("cdn", f"/file/{file_id}/"))


def start_slow(civitai, daemon, size: int = 8 * MB, rate: int = 1 * MB, **config):
    """A daemon downloading one file at `rate` B/s over one connection; (daemon, job, file)."""
    data = blob(size)
    f = civitai.add_simple(1, 10, data, filename="big.safetensors")
    civitai.default_rate = rate
    d = daemon(workers=1, connections=1, **config)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
    return d, job, f, data


def test_pause_mid_download_keeps_the_part_and_resume_fetches_only_the_rest(civitai, daemon, home):
    d, job, f, data = start_slow(civitai, daemon)
    part = home / "data/models/lora/big.safetensors.part"
    with d.client() as c:
        wait_for(lambda: saved_bytes(home, job["id"]) > 1 * MB, 20, what="1 MB saved")
        started = time.monotonic()
        r = c.post(f"/api/jobs/{job['id']}/pause")
        answered = time.monotonic() - started
        assert r.status_code == 200, r.text
        paused = r.json()
        # The answer comes once the transfer has stopped writing: what it says was kept is
        # what the database holds, and it does not grow afterwards.
        kept = saved_bytes(home, job["id"])
        assert paused["status"] == "paused" and paused["bytes_done"] == kept
        assert 1 * MB < kept < len(data) and paused["speed_bps"] == 0
        assert answered < 10, answered
        assert part.is_file() and part.stat().st_size >= kept
        assert c.get("/api/status").json()["active"] == []
        assert c.get(f"/api/jobs/{job['id']}").json()["bytes_done"] == kept
        assert saved_bytes(home, job["id"]) == kept

        civitai.default_rate = None
        before = len(civitai.requests_to("cdn", f"/file/{f.id}/"))
        r = c.post(f"/api/jobs/{job['id']}/resume")
        assert r.status_code == 200, r.text
        assert r.json()["status"] in ("queued", "downloading")
        done = wait_job(c, job["id"])
    assert_file_is(home / "data/models/lora/big.safetensors", sha(data))
    assert done["path"] == str(home / "data/models/lora/big.safetensors") and not part.exists()
    resumed = civitai.requests_to("cdn", f"/file/{f.id}/")[before:]
    assert resumed[0].range == f"bytes={kept}-{len(data) - 1}"
    assert sum(r.sent for r in resumed) == len(data) - kept  # only the rest is fetched
    d.stop()


def test_a_paused_job_stays_paused_across_a_restart_and_resumes_after_it(civitai, daemon, home):
    d, job, f, data = start_slow(civitai, daemon)
    with d.client() as c:
        wait_for(lambda: saved_bytes(home, job["id"]) > 1 * MB, 20, what="1 MB saved")
        assert c.post(f"/api/jobs/{job['id']}/pause").json()["status"] == "paused"
    kept = saved_bytes(home, job["id"])
    assert d.stop() == 0
    civitai.default_rate = None
    civitai.add_simple(2, 20, b"s" * 5000, filename="small.safetensors")
    before = cdn_sent(civitai, f.id)
    d2 = daemon(workers=1, connections=1)
    with d2.client() as c:
        # One worker, and the paused job is the older one: had the start queued it again, the
        # worker would have taken it before the new job.
        small = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"}).json()
        wait_job(c, small["id"])
        still = c.get(f"/api/jobs/{job['id']}").json()
        assert still["status"] == "paused" and still["bytes_done"] == kept
        assert cdn_sent(civitai, f.id) == before
        assert c.get("/api/jobs", params={"status": "paused"}).json()["total"] == 1
        assert c.post(f"/api/jobs/{job['id']}/resume").status_code == 200
        wait_job(c, job["id"])
    assert_file_is(home / "data/models/lora/big.safetensors", sha(data))
    assert cdn_sent(civitai, f.id) - before == len(data) - kept
    d2.stop()


def test_illegal_pauses_and_resumes_are_refused_with_409_and_a_sentence(civitai, daemon, home):
    civitai.add_simple(2, 20, b"s" * 5000, filename="small.safetensors")
    d, job, f, data = start_slow(civitai, daemon)
    with d.client() as c:
        small = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"}).json()
        wait_job(c, job["id"], ("downloading",))
        r = c.post(f"/api/jobs/{job['id']}/resume")
        assert r.status_code == 409
        assert r.json() == {
            "detail": f"Job {job['id']} is downloading; only a paused job can be resumed"
        }
        r = c.post(f"/api/jobs/{small['id']}/resume")
        assert r.status_code == 409 and "is queued; only a paused job" in r.json()["detail"]
        assert c.post(f"/api/jobs/{small['id']}/pause").json()["status"] == "paused"
        r = c.post(f"/api/jobs/{small['id']}/pause")
        assert r.status_code == 409
        assert r.json()["detail"] == f"Job {small['id']} is already paused; resume it to go on"
        assert c.post("/api/jobs/999/pause").status_code == 404
        civitai.default_rate = None
        assert c.post(f"/api/jobs/{small['id']}/resume").json()["status"] == "queued"
        wait_job(c, small["id"])
        r = c.post(f"/api/jobs/{small['id']}/pause")
        assert r.status_code == 409
        assert r.json()["detail"] == (
            f"Job {small['id']} already completed; there is nothing to pause"
        )
    d.stop()


def test_cancel_of_a_paused_job_removes_its_part(civitai, daemon, home):
    d, job, f, data = start_slow(civitai, daemon)
    part = home / "data/models/lora/big.safetensors.part"
    with d.client() as c:
        wait_for(lambda: saved_bytes(home, job["id"]) > 1 * MB, 20, what="1 MB saved")
        assert c.post(f"/api/jobs/{job['id']}/pause").json()["status"] == "paused"
        assert part.is_file()
        r = c.post(f"/api/jobs/{job['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert r.json()["retryable"] is True
    assert not part.exists()
    assert saved_bytes(home, job["id"]) == 0
    d.stop()


def test_pause_and_resume_reach_the_feed_and_the_webhook(civitai, daemon, home):
    hook = Receiver().start()
    try:
        d, job, f, data = start_slow(civitai, daemon, webhook_url=hook.url + "/hook")
        with d.client() as c, connect(ws_url(d, d.token)) as ws:
            wait_for(lambda: saved_bytes(home, job["id"]) > 1 * MB, 20, what="1 MB saved")
            c.post(f"/api/jobs/{job['id']}/pause")
            got = messages_until(
                ws, lambda m: m["type"] == "job" and m["job"]["status"] == "paused"
            )
            assert got[-1]["job"]["id"] == job["id"]
            civitai.default_rate = None
            c.post(f"/api/jobs/{job['id']}/resume")
            messages_until(ws, lambda m: m["type"] == "job" and m["job"]["status"] == "queued")
            wait_job(c, job["id"])
            wait_for(lambda: len(hook.received) == 3, 20, what="three webhooks")
        events = [r.json["event"] for r in hook.received]
        assert events == ["download.paused", "download.resumed", "download.completed"]
        assert all(r.json["job"]["id"] == job["id"] for r in hook.received)
        d.stop()
    finally:
        hook.stop()


def test_priority_change_and_move_to_top_decide_the_next_job_claimed(civitai, daemon, home):
    files = {v: civitai.add_simple(v, v, blob(50_000, v), filename=f"m{v}.bin") for v in (2, 3, 4)}
    d, job, f, data = start_slow(civitai, daemon, size=1 * MB, rate=400_000)
    with d.client() as c:
        queued = {
            v: c.post("/api/download", json={"modelVersionId": v, "model_type": "lora"}).json()
            for v in (2, 3, 4)
        }
        wait_job(c, job["id"], ("downloading",))
        top = c.patch(f"/api/jobs/{queued[4]['id']}", json={"position": "top"})
        assert top.status_code == 200 and top.json()["priority"] == 4, top.text
        later = c.patch(f"/api/jobs/{queued[2]['id']}", json={"priority": 9})
        assert later.status_code == 200 and later.json()["priority"] == 9
        for bad in ({"priority": "3"}, {"priority": 101}, {"priority": -1}, {}, {"x": 1}):
            r = c.patch(f"/api/jobs/{queued[3]['id']}", json=bad)
            assert r.status_code == 422 and r.json()["detail"], (bad, r.text)
        r = c.patch(f"/api/jobs/{queued[3]['id']}", json={"priority": 1, "position": "top"})
        assert r.status_code == 422 and "either" in r.json()["detail"]
        r = c.patch(f"/api/jobs/{job['id']}", json={"priority": 1})
        assert r.status_code == 409
        assert r.json()["detail"] == (
            f"Job {job['id']} is downloading; only the priority of a queued, paused or waiting "
            f"job can be changed"
        )
        civitai.default_rate = None
        for v in (2, 3, 4):
            wait_job(c, queued[v]["id"])
        r = c.patch(f"/api/jobs/{queued[4]['id']}", json={"position": "top"})
        assert r.status_code == 409 and "is completed" in r.json()["detail"]
    order = [r.path.split("/")[2] for r in civitai.requests_to("cdn", "/file/")]
    first = list(dict.fromkeys(order))  # each file in the order it was first fetched
    assert first == [str(f.id), str(files[4].id), str(files[3].id), str(files[2].id)], first
    d.stop()


def test_retry_is_offered_only_where_it_can_help(civitai, daemon, home):
    civitai.add_simple(5, 50, b"a" * 3000, archived=True)
    civitai.add_simple(6, 60, b"b" * 3000, login_required=True)
    d = daemon(workers=1)
    with d.client() as c:
        missing = c.post("/api/batch", json=[{"modelVersionId": 404404, "model_type": "lora"}])
        missing = wait_job(c, missing.json()["jobs"][0]["id"], ("failed",))
        archived = c.post("/api/download", json={"modelVersionId": 50, "model_type": "lora"})
        archived = wait_job(c, archived.json()["id"], ("failed",))
        login = c.post("/api/download", json={"modelVersionId": 60, "model_type": "lora"})
        login = wait_job(c, login.json()["id"], ("failed",))

        assert missing["retryable"] is False
        assert missing["why_not_retryable"] == (
            "Civitai has no such model, version or file; a retry gets the same answer."
        )
        assert archived["retryable"] is False and "archived" in archived["why_not_retryable"]
        assert login["retryable"] is True and login["why_not_retryable"] is None

        r = c.post(f"/api/jobs/{missing['id']}/retry")
        assert r.status_code == 409
        assert r.json() == {
            "detail": f"Job {missing['id']} is not retried: Civitai has no such model, version "
            f'or file; a retry gets the same answer. To try anyway, send {{"force": true}} '
            f"(./civitai retry {missing['id']} --force)."
        }
        assert c.get(f"/api/jobs/{missing['id']}").json()["status"] == "failed"
        r = c.post(f"/api/jobs/{archived['id']}/retry", json={"force": "yes"})
        assert r.status_code == 422
        r = c.post(f"/api/jobs/{archived['id']}/retry", json={"force": True})
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
        assert r.json()["why_not_retryable"] is None
        again = wait_job(c, archived["id"], ("failed",))
        assert again["retryable"] is False  # recorded afresh by the new failure
        r = c.post(f"/api/jobs/{login['id']}/retry")  # no body: as before
        assert r.status_code == 200 and r.json()["status"] == "queued"
        listed = {j["id"]: j for j in c.get("/api/jobs").json()["jobs"]}
        assert listed[missing["id"]]["retryable"] is False
    d.stop()
