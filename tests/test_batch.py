"""Big batches: answered at once, resolved in the background, heard by every feed client."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from websockets.asyncio.client import connect as aconnect
from websockets.sync.client import connect

from tests.conftest import assert_file_is, wait_for, wait_job
from tests.receiver import Receiver
from tests.test_downloads import sha
from tests.test_ws import messages_until, ws_url

ENTRIES = 2000
BAD = 999_999  # a version Civitai does not have
ANSWER_BOUND = 6.0  # seconds; generous for a loaded 2-core machine (the benchmark holds 2 s)


def content(i: int) -> bytes:
    # The first is big: behind a slow CDN it keeps a single worker busy for the whole test.
    return b"\0" * (8 * 1024 * 1024) if i == 0 else f"file {i} ".encode() * 50


def add_versions(civitai, n: int = ENTRIES) -> None:
    for i in range(n):
        civitai.add_simple(10_000 + i, 20_000 + i, content(i), filename=f"s{i}.safetensors")
    civitai.default_rate = 64 * 1024  # bytes/s, per connection


def batch_body(n: int = ENTRIES, bad_at: int | None = None) -> list[dict]:
    body = [{"modelVersionId": 20_000 + i, "model_type": "lora"} for i in range(n)]
    if bad_at is not None:
        body[bad_at] = {"modelVersionId": BAD, "model_type": "lora"}
    return body


def all_jobs(c, status: str | None = None) -> list[dict]:
    jobs, offset = [], 0
    while True:
        params = {"limit": 1000, "offset": offset, **({"status": status} if status else {})}
        page = c.get("/api/jobs", params=params).json()["jobs"]
        jobs += page
        offset += len(page)
        if len(page) < 1000:
            return jobs


def test_a_2000_entry_batch_is_answered_at_once_and_resolved_in_the_background(civitai, daemon):
    add_versions(civitai)
    # One worker, busy with the first file: the names and sizes that appear on the queued jobs
    # come from the background resolver.
    d = daemon(workers=1, connections=1)
    body = batch_body(bad_at=ENTRIES // 2)
    with d.client() as c, connect(ws_url(d, d.token)) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
        started = time.monotonic()
        r = c.post("/api/batch", json=body, timeout=120)
        answered = time.monotonic() - started
        assert r.status_code == 202, r.text
        assert answered <= ANSWER_BOUND, f"a {ENTRIES}-entry batch took {answered:.1f} s"
        jobs = r.json()["jobs"]
        assert r.json()["errors"] == []
        # Every entry has its job, in the order given, each a new one.
        assert [j["modelVersionId"] for j in jobs] == [e["modelVersionId"] for e in body]
        assert len({j["id"] for j in jobs}) == ENTRIES
        assert c.get("/api/jobs").json()["total"] == ENTRIES
        bad = jobs[ENTRIES // 2]

        # The version Civitai does not know fails its job with the 404 sentence, on the feed.
        def bad_failed(m: dict) -> bool:
            return (
                m["type"] == "job"
                and m["job"]["id"] == bad["id"]
                and m["job"]["status"] == "failed"
            )

        got = messages_until(ws, bad_failed, timeout=120)
        assert got[-1]["job"]["error"] == f"No model version {BAD} on Civitai"
        assert wait_job(c, bad["id"], ("failed",))["error"] == f"No model version {BAD} on Civitai"

        def resolved() -> list[dict] | None:
            queued = all_jobs(c, "queued")
            return queued if all(j["filename"] and j["bytes_total"] for j in queued) else None

        queued = wait_for(resolved, 120, 0.5, "every queued job to show its name and size")
        assert len(queued) == ENTRIES - 2  # all but the bad one and the one downloading
        for job in queued:
            i = job["modelVersionId"] - 20_000
            assert job["filename"] == f"s{i}.safetensors"
            assert job["bytes_total"] == len(content(i))
            assert job["model_name"] == f"Model {10_000 + i}"
    d.stop()


async def _listen(url: str, clients: int, ids: set[int], ready: threading.Event, out: list):
    """`clients` feed clients; each returns the ids of the jobs it heard queued, once it heard
    all of `ids` (or after a deadline)."""

    async def one() -> set[int]:
        heard: set[int] = set()
        async with aconnect(url, max_queue=None) as ws:
            assert json.loads(await ws.recv())["type"] == "snapshot"
            connected.append(1)
            if len(connected) == clients:
                ready.set()
            async with asyncio.timeout(240):
                while not ids or not ids <= heard:
                    msg = json.loads(await ws.recv())
                    if msg["type"] == "job" and msg["job"]["status"] == "queued":
                        heard.add(msg["job"]["id"])
        return heard

    connected: list[int] = []
    out.extend(await asyncio.gather(*(one() for _ in range(clients)), return_exceptions=True))


def test_every_feed_client_of_many_hears_every_job_of_a_big_batch_queued(civitai, daemon):
    clients = 100
    add_versions(civitai)
    d = daemon(workers=1)
    ids: set[int] = set()  # filled once the batch is answered; the clients stop when all heard
    ready, heard = threading.Event(), []
    listener = threading.Thread(
        target=lambda: asyncio.run(_listen(ws_url(d, d.token), clients, ids, ready, heard))
    )
    listener.start()
    try:
        assert ready.wait(120), "the feed clients did not all connect"
        with d.client() as c:
            started = time.monotonic()
            r = c.post("/api/batch", json=batch_body(), timeout=120)
            answered = time.monotonic() - started
            assert r.status_code == 202, r.text
            assert answered <= ANSWER_BOUND, f"with {clients} clients: {answered:.1f} s"
            ids.update(j["id"] for j in r.json()["jobs"])
            assert len(ids) == ENTRIES
    finally:
        listener.join(300)
    assert len(heard) == clients
    for got in heard:
        assert not isinstance(got, BaseException), repr(got)
        assert got >= ids, f"a client missed {len(ids - got)} of {ENTRIES} jobs"
    d.stop()


def test_the_same_file_in_other_words_is_fetched_once(civitai, daemon):
    """Known without Civitai: the same request twice in a batch is one job. Known only once
    Civitai answered: a model id and its newest version id are the same file, so the later
    job fails saying so; a file completed before completes at once, with no transfer."""
    civitai.add_simple(1, 10, b"a" * 5000, filename="a.safetensors")
    civitai.add_simple(2, 20, b"b" * 5000, filename="b.safetensors")
    d = daemon(workers=1)
    with d.client() as c:
        first = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"}).json()
        wait_job(c, first["id"])
        fetched = len(civitai.requests_to("cdn", "/file"))
        civitai.default_rate = 1000  # a.safetensors takes seconds: still active when asked again
        r = c.post(
            "/api/batch",
            json=[
                {"modelVersionId": 10, "model_type": "lora"},
                {"modelVersionId": 10, "model_type": "lora"},
                {"modelId": 1, "model_type": "lora"},
                {"modelId": 2, "model_type": "lora"},
                {"modelVersionId": 10, "model_type": "vae"},
                {"url": "https://elsewhere.example/x.bin", "model_type": "lora"},
            ],
        )
        assert r.status_code == 202, r.text
        jobs, errors = r.json()["jobs"], r.json()["errors"]
        assert jobs[0]["id"] == jobs[1]["id"] and not jobs[1]["duplicate"]
        assert [e["index"] for e in errors] == [4, 5]
        assert f"as job {jobs[0]['id']} with model_type 'lora'" in errors[0]["detail"]
        assert errors[1]["detail"].startswith("Downloads from 'elsewhere.example' are not allowed")
        assert wait_job(c, jobs[0]["id"])["filename"] == "a.safetensors"
        same = wait_job(c, jobs[2]["id"], ("failed",))
        assert same["error"].startswith(
            f"This is the same file as job {jobs[0]['id']} (model_type 'lora'), which is already "
        )
        assert same["error"].endswith("; it is not downloaded twice")
        again = wait_job(c, jobs[3]["id"])
        assert again["path"] == first["path"] and again["sha256"] == first["sha256"]
    # a.safetensors once; b.safetensors (completed before) not again.
    assert len(civitai.requests_to("cdn", "/file")) == fetched + 1
    d.stop()


def test_civitais_no_for_a_manifest_entry_fails_its_job_and_reaches_the_webhook(
    civitai, daemon, home
):
    civitai.add_simple(1, 10, b"a" * 1000, filename="a.safetensors")
    (home / "manifest.json").write_text(
        json.dumps(
            [
                {"modelVersionId": 10, "model_type": "lora"},
                {"modelVersionId": BAD, "model_type": "lora"},
            ]
        )
    )
    hook = Receiver().start()
    try:
        d = daemon(webhook_url=hook.url + "/hook")
        with d.client() as c:
            wait_for(lambda: len(hook.received) == 2, 30, what="both webhooks")
            jobs = {j["modelVersionId"]: j for j in all_jobs(c)}
        events = {r.json["event"]: r.json["job"] for r in hook.received}
        assert events["download.completed"]["id"] == jobs[10]["id"]
        assert events["download.failed"]["id"] == jobs[BAD]["id"]
        assert events["download.failed"]["error"] == f"No model version {BAD} on Civitai"
        assert jobs[BAD]["status"] == "failed" and jobs[BAD]["attempts"] == 0
        d.stop()
    finally:
        hook.stop()


def test_two_workers_never_fetch_one_file_asked_for_in_other_words(civitai, daemon):
    """Both jobs are claimed before the background resolver reaches them, so each worker asks
    Civitai itself: the second to learn which file it is fails as the same file, not a second
    download of it."""
    civitai.add_simple(1, 10, b"a" * 200_000, filename="a.safetensors")
    civitai.default_rate = 100_000  # two seconds: the first job is still active meanwhile
    d = daemon(workers=2)
    with d.client() as c:
        r = c.post(
            "/api/batch",
            json=[
                {"modelId": 1, "model_type": "lora"},
                {"modelVersionId": 10, "model_type": "lora"},
            ],
        )
        assert r.status_code == 202, r.text
        ids = [j["id"] for j in r.json()["jobs"]]
        ends = [wait_job(c, i, ("completed", "failed")) for i in ids]
    assert sorted(e["status"] for e in ends) == ["completed", "failed"], ends
    done = next(e for e in ends if e["status"] == "completed")
    failed = next(e for e in ends if e["status"] == "failed")
    assert failed["error"].startswith(f"This is the same file as job {done['id']}"), failed["error"]
    assert len(civitai.requests_to("cdn", "/file")) == 1
    assert_file_is(done["path"], sha(b"a" * 200_000))
    d.stop()
