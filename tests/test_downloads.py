"""The download engine against the fake Civitai: real daemon process, real HTTP, real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import resource
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlite_utils import Database

from config.settings import load_settings
from engine.jobs import JobRequest
from main import create_app
from tests.conftest import assert_file_is, run_async, run_job, wait_for, wait_job, write_config
from tests.fake_civitai import TOKEN

MB = 1024 * 1024


def blob(size: int, seed: int = 1) -> bytes:
    """Deterministic, incompressible-enough bytes."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def committed_parts(home, job_id: int) -> list[dict]:
    db = Database(home / "data" / "completed.db")
    try:
        return list(db["parts"].rows_where("job_id = ?", [job_id], order_by="idx"))
    finally:
        db.close()


def test_version_id_download_lands_verified_with_sidecars(civitai, daemon, home):
    data = blob(3 * MB)
    civitai.add_simple(1, 10, data, filename="tiny lora [v1].safetensors")
    d = daemon()
    with d.client() as c:
        r = c.post("/api/download", json={"modelVersionId": 10, "model_type": "LORA"})
        assert r.status_code == 202
        job = r.json()
        assert job["status"] == "queued" and job["model_type"] == "lora"
        assert job["filename"] == "tiny lora [v1].safetensors" and job["sha256"] == sha(data)
        done = wait_job(c, job["id"])
        completed = c.get("/api/completed").json()["completed"]
    folder = home / "data" / "models" / "lora"
    target = folder / "tiny lora [v1].safetensors"
    assert target.read_bytes() == data
    assert done["path"] == str(target) and done["bytes_done"] == len(data)
    assert files_in(folder) == [
        "tiny lora [v1].civitai.info",
        "tiny lora [v1].json",
        "tiny lora [v1].preview.png",
        "tiny lora [v1].safetensors",
    ]
    info = json.loads((folder / "tiny lora [v1].civitai.info").read_text())
    assert info["id"] == 10 and info["model"]["name"] == "Model 1"
    assert completed[0]["sha256"] == sha(data) and completed[0]["path"] == str(target)
    # One hit on the download endpoint, with fileId pinned.
    hits = civitai.requests_to("api", "/api/download/models/10")
    assert len(hits) == 1 and "fileId=" in hits[0].path
    d.stop()


def test_model_id_page_url_and_download_url_resolve_to_the_right_file(civitai, daemon, home):
    old, new = blob(100_000, 1), blob(120_000, 2)
    civitai.add_model(
        5,
        "Multi",
        "Checkpoint",
        [
            civitai.version(51, [civitai.file(new, name="new.safetensors")]),
            civitai.version(50, [civitai.file(old, name="old.safetensors")]),
        ],
    )
    pruned = civitai.file(b"p" * 5000, name="same.safetensors", primary=False)
    full = civitai.file(b"f" * 6000, name="same.safetensors", primary=True)
    civitai.add_model(6, "Two files", "LORA", [civitai.version(60, [pruned, full])])
    d = daemon()
    with d.client() as c:
        by_model = c.post("/api/download", json={"modelId": 5, "model_type": "checkpoint"}).json()
        page = c.post(
            "/api/download",
            json={
                "url": "https://civitai.com/models/5/multi?modelVersionId=50",
                "model_type": "checkpoint",
            },
        ).json()
        primary = c.post("/api/download", json={"modelVersionId": 60, "model_type": "lora"}).json()
        assert by_model["modelVersionId"] == 51 and page["modelVersionId"] == 50
        for job in (by_model, page, primary):
            wait_job(c, job["id"])
        # The endpoint without fileId would serve the pruned file; we pinned the primary one.
        assert (home / "data/models/lora/same.safetensors").read_bytes() == b"f" * 6000
        dl = c.post(
            "/api/download",
            json={
                "url": f"https://civitai.com/api/download/models/60?fileId={pruned.id}",
                "model_type": "lora",
                "filename": "same-pruned.safetensors",
            },
        ).json()
        assert dl["fileId"] == pruned.id
        wait_job(c, dl["id"])
    assert (home / "data/models/checkpoint/new.safetensors").read_bytes() == new
    assert (home / "data/models/checkpoint/old.safetensors").read_bytes() == old
    assert (home / "data/models/lora/same-pruned.safetensors").read_bytes() == b"p" * 5000
    d.stop()


def test_kill_9_mid_download_resumes_with_range_from_where_it_stopped(civitai, daemon, home):
    data = blob(8 * MB)
    civitai.add_simple(1, 10, data, filename="big.safetensors")
    civitai.default_rate = 2 * MB  # 4 s for the whole file
    d = daemon(workers=1)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
    wait_for(
        lambda: sum(p["done"] for p in committed_parts(home, job["id"])) > 3 * MB,
        20,
        what="3 MB committed",
    )
    d.kill()
    committed = sum(p["done"] for p in committed_parts(home, job["id"]))
    part = home / "data/models/lora/big.safetensors.part"
    assert part.exists() and committed < len(data)
    missing = len(data) - committed
    civitai.default_rate = None
    cdn_before = len(civitai.requests_to("cdn", "/file"))
    d2 = daemon(workers=1)
    with d2.client() as c:
        done = wait_job(c, job["id"])
    resumed = civitai.requests_to("cdn", "/file")[cdn_before:]
    fetched = sum(r.sent for r in resumed)
    assert_file_is(done["path"], sha(data))
    assert done["path"] == str(home / "data/models/lora/big.safetensors")
    assert not part.exists()
    assert resumed[0].range == f"bytes={committed}-{len(data) - 1}"
    assert resumed[0].headers.get("if-range")
    # Nothing committed is fetched again.
    assert fetched == missing, (fetched, missing)
    d2.stop()


def test_dropped_connection_resumes_and_completes(civitai, daemon, home):
    data = blob(2 * MB)
    civitai.add_simple(1, 10, data)
    civitai.fault("cdn", drop_after=700_000)
    d = daemon()
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    assert_file_is(done["path"], sha(data))
    assert done["attempts"] == 1
    ranges = [r.range for r in civitai.requests_to("cdn", "/file")]
    assert ranges[0] == "bytes=0-" and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-", (
        ranges
    )
    assert civitai.bytes_sent == len(data), ranges  # nothing fetched twice
    # The signed link was reused: one hit on the quota-counted endpoint.
    assert len(civitai.requests_to("api", "/api/download")) == 1
    d.stop()


def test_5xx_and_429_sequences_are_retried_and_retry_after_is_honoured(civitai, daemon):
    data = blob(300_000)
    civitai.add_simple(1, 10, data)
    civitai.fault("cdn", status=500)
    civitai.fault("cdn", status=503)
    civitai.fault("cdn", status=429, retry_after=1.5)
    d = daemon(retries=5)
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, timeout=30)
    assert_file_is(done["path"], sha(data))
    assert done["attempts"] == 3
    cdn = civitai.requests_to("cdn", "/file")
    assert len(cdn) == 4
    d.stop()


def test_retry_after_is_waited_before_the_next_request(civitai, daemon):
    civitai.add_simple(1, 10, b"x" * 1000)
    civitai.fault("download", status=429, retry_after=2)
    d = daemon()
    started = time.monotonic()
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_job(c, job["id"])
    assert time.monotonic() - started >= 2
    d.stop()


def test_retries_are_bounded_and_the_error_says_why(civitai, daemon):
    civitai.add_simple(1, 10, b"x" * 1000)
    civitai.fault("cdn", status=503, times=10)
    d = daemon(retries=2)
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",), timeout=30)
    assert "Gave up after 2 attempts" in failed["error"] and "503" in failed["error"]
    assert len(civitai.requests_to("cdn", "/file")) == 2
    d.stop()


def test_login_required_fails_at_once_with_the_token_message_then_works_with_a_token(
    civitai, daemon, home, daemon_factory
):
    data = blob(200_000)
    civitai.add_simple(1, 10, data, login_required=True)
    d = daemon()
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    assert "needs a Civitai login" in failed["error"] and "civitai_token" in failed["error"]
    assert failed["attempts"] == 0
    assert len(civitai.requests_to("api", "/api/download")) == 1  # not retried
    d.stop()
    d2 = daemon_factory(home, env={"CIVITAI_TOKEN": TOKEN}).start()
    job_id = failed["id"]
    with d2.client() as c:
        retried = c.post(f"/api/jobs/{job_id}/retry").json()
        assert retried["status"] == "queued" and retried["error"] is None
        done = wait_job(c, job_id)
        body = json.dumps(c.get(f"/api/jobs/{job_id}").json())
    assert done["sha256"] == sha(data)
    assert (
        civitai.requests_to("api", "/api/download")[-1].headers["authorization"]
        == f"Bearer {TOKEN}"
    )
    # The token never reaches the CDN, nor any response, log or database row.
    assert all("authorization" not in r.headers for r in civitai.requests_to("cdn"))
    assert TOKEN not in body
    d2.stop()
    for log in (home / "logs").iterdir():
        assert TOKEN not in log.read_text()
    assert TOKEN.encode() not in (home / "data" / "completed.db").read_bytes()


@pytest.mark.parametrize(
    "kind,expected",
    [
        ({"disabled": True}, "disabled downloads"),
        ({"early_access": True}, "early access"),
        ({"archived": True}, "archived"),
    ],
)
def test_civitai_refusals_fail_at_once_with_a_reason(civitai, daemon, kind, expected):
    civitai.add_simple(1, 10, b"x", **kind)
    d = daemon()
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    assert expected in failed["error"] and failed["attempts"] == 0
    d.stop()


def test_corrupt_bytes_are_fetched_once_more(civitai, daemon, home):
    data = blob(500_000)
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    civitai.fault("cdn", corrupt=True)
    d = daemon()
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    assert_file_is(done["path"], sha(data))
    assert (home / "data/models/lora/m.safetensors").read_bytes() == data
    assert len(civitai.requests_to("cdn", "/file")) == 2
    d.stop()


def test_second_mismatch_fails_with_both_hashes_and_keeps_unverified(civitai, daemon, home):
    data = blob(500_000)
    f = civitai.add_simple(1, 10, data, filename="m.safetensors")
    f.published_sha256 = "AB" * 32  # Civitai publishes a wrong hash
    d = daemon()
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    assert "ab" * 32 in failed["error"] and sha(data) in failed["error"]
    folder = home / "data/models/lora"
    assert not (folder / "m.safetensors").exists()
    assert (folder / "m.safetensors.unverified").read_bytes() == data
    assert not (folder / "m.safetensors.part").exists()
    d.stop()


def test_server_ignoring_range_starts_over_cleanly(civitai, daemon, home):
    data = blob(2 * MB)
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    civitai.fault("cdn", drop_after=600_000)
    civitai.fault("cdn", ignore_range=True)
    d = daemon()
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    assert_file_is(done["path"], sha(data))
    assert (home / "data/models/lora/m.safetensors").read_bytes() == data
    d.stop()


def test_expired_link_is_resolved_afresh_on_resume(civitai, daemon):
    data = blob(2 * MB)
    civitai.add_simple(1, 10, data)
    civitai.fault("cdn", drop_after=500_000)
    civitai.link_ttl = 3600
    d = daemon()
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: len(civitai.requests_to("cdn", "/file")) >= 1, 10)
        civitai.expire_links()
        done = wait_job(c, job["id"])
    assert_file_is(done["path"], sha(data))
    assert len(civitai.requests_to("api", "/api/download")) == 2  # one fresh resolution
    d.stop()


def test_html_page_instead_of_the_file_is_never_saved(civitai, daemon, home):
    data = blob(100_000)
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    civitai.fault("cdn", html=True)
    d = daemon()
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    assert done["attempts"] == 1
    assert (home / "data/models/lora/m.safetensors").read_bytes() == data
    d.stop()


def test_stalled_body_is_detected_and_resumed(civitai, daemon):
    data = blob(1 * MB)
    civitai.add_simple(1, 10, data)
    civitai.fault("cdn", stall_after=300_000)
    d = daemon(timeout=1)
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, timeout=20)
    assert_file_is(done["path"], sha(data))
    assert done["attempts"] == 1
    d.stop()


def test_trickling_body_is_caught_by_the_lowest_speed_watchdog(civitai, daemon):
    data = blob(1 * MB)
    civitai.add_simple(1, 10, data)
    civitai.fault("cdn", rate=400)  # 400 B/s: bytes keep coming, so a read timeout never fires
    d = daemon(timeout=2)
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, timeout=20)
    assert_file_is(done["path"], sha(data))
    assert done["attempts"] == 1
    d.stop()


def test_unsafe_filenames_never_leave_their_folder(civitai, daemon, home):
    civitai.add_simple(1, 10, b"evil bytes", filename="../../evil.safetensors")
    civitai.add_simple(2, 20, b"ok")
    d = daemon()
    with d.client() as c:
        for name in ("../x.safetensors", "a/b.safetensors", ".hidden", "nul\x00.bin", "..\\w.bin"):
            r = c.post(
                "/api/download", json={"modelVersionId": 20, "model_type": "lora", "filename": name}
            )
            assert r.status_code == 422 and "file name" in r.json()["detail"], (name, r.text)
        r = c.post("/api/download", json={"modelVersionId": 20, "model_type": "../lora"})
        assert r.status_code == 422 and "model_type" in r.json()["detail"]
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        done = wait_job(c, job["id"])
    assert done["filename"] == "evil.safetensors"
    assert (home / "data/models/lora/evil.safetensors").read_bytes() == b"evil bytes"
    assert (
        not (home / "data/evil.safetensors").exists() and not (home / "evil.safetensors").exists()
    )
    d.stop()


def test_priority_runs_lower_first_then_fifo(civitai, daemon):
    for i in range(4):
        civitai.add_simple(i + 1, 10 + i, blob(400_000, i), filename=f"m{i}.safetensors")
    civitai.default_rate = 1 * MB
    d = daemon(workers=1)
    with d.client() as c:
        first = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{first['id']}").json()["status"] == "downloading")
        low = c.post(
            "/api/download", json={"modelVersionId": 11, "model_type": "lora", "priority": 9}
        ).json()
        high = c.post(
            "/api/download", json={"modelVersionId": 12, "model_type": "lora", "priority": 1}
        ).json()
        mid = c.post("/api/download", json={"modelVersionId": 13, "model_type": "lora"}).json()
        ids = [first["id"], low["id"], high["id"], mid["id"]]
        jobs = [wait_job(c, i, timeout=30) for i in ids]
    started = [int(r.path.split("/")[2]) for r in civitai.requests_to("cdn", "/file")]
    by_job = {j["id"]: j["fileId"] for j in jobs}
    assert started == [
        by_job[first["id"]],
        by_job[high["id"]],
        by_job[mid["id"]],
        by_job[low["id"]],
    ]
    d.stop()


def test_same_file_is_not_queued_twice(civitai, daemon):
    civitai.add_simple(1, 10, blob(2 * MB))
    civitai.default_rate = 1 * MB
    d = daemon()
    with d.client() as c:
        a = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        b = c.post("/api/download", json={"modelId": 1, "model_type": "lora"}).json()
        assert a["id"] == b["id"]
        assert c.get("/api/jobs").json()["total"] == 1
    d.stop()


def test_cancel_removes_the_part_and_retry_starts_again(civitai, daemon, home):
    data = blob(4 * MB)
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    civitai.default_rate = 1 * MB
    d = daemon()
    part = home / "data/models/lora/m.safetensors.part"
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["bytes_done"] > 0)
        assert part.exists()
        cancelled = c.post(f"/api/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert not part.exists()
        again = c.post(f"/api/jobs/{job['id']}/cancel")
        assert again.status_code == 422 and "cancelled" in again.json()["detail"]
        civitai.default_rate = None
        assert c.post(f"/api/jobs/{job['id']}/retry").json()["status"] == "queued"
        done = wait_job(c, job["id"])
    assert done["sha256"] == sha(data)
    d.stop()


def test_cancel_a_queued_job(civitai, daemon):
    civitai.add_simple(1, 10, blob(3 * MB), filename="running.safetensors")
    civitai.add_simple(2, 20, blob(1000, 2), filename="queued.safetensors")
    civitai.default_rate = 1 * MB
    d = daemon(workers=1)
    with d.client() as c:
        c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        queued = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"}).json()
        assert c.post(f"/api/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"
        assert c.get(f"/api/jobs/{queued['id']}").json()["status"] == "cancelled"
    d.stop()


def test_file_already_in_place_completes_without_transfer(civitai, daemon, home):
    data = blob(300_000)
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    folder = home / "data/models/lora"
    folder.mkdir(parents=True)
    (folder / "m.safetensors").write_bytes(data)
    d = daemon()
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    assert done["sha256"] == sha(data)
    assert civitai.requests_to("cdn", "/file") == []
    assert civitai.requests_to("api", "/api/download") == []
    d.stop()


def test_different_file_in_place_is_never_overwritten(civitai, daemon, home):
    civitai.add_simple(1, 10, blob(300_000), filename="m.safetensors")
    folder = home / "data/models/lora"
    folder.mkdir(parents=True)
    (folder / "m.safetensors").write_bytes(b"my own file")
    d = daemon()
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    assert "not overwritten" in failed["error"]
    assert (folder / "m.safetensors").read_bytes() == b"my own file"
    d.stop()


def test_too_little_disk_space_is_a_clear_error_before_any_transfer(civitai, daemon):
    f = civitai.add_simple(1, 10, b"small really")
    f.advertised_size = 2**60  # the API says an exabyte
    d = daemon()
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    assert "Not enough disk space" in failed["error"] and "free" in failed["error"]
    assert civitai.requests_to("cdn", "/file") == []
    d.stop()


def test_large_file_uses_parallel_range_parts_and_resumes_each_after_kill(civitai, daemon, home):
    data = blob(72 * MB)
    civitai.add_simple(1, 10, data, filename="big.safetensors")
    civitai.default_rate = 6 * MB  # per connection
    d = daemon(connections=4, workers=1)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "checkpoint"})
        job = job.json()
    wait_for(
        lambda: sum(x["done"] > 2 * MB for x in committed_parts(home, job["id"])) == 4,
        30,
        what="every connection's part to commit progress",
    )
    d.kill()
    parts = committed_parts(home, job["id"])
    assert len(parts) > 4  # pieces in file order, more than one per connection
    first = civitai.requests_to("cdn", "/file")
    assert len(first) >= 4  # four at once; a connection done with its piece asks for the next
    committed = sum(p["done"] for p in parts)
    civitai.default_rate = None
    n = len(first)
    d2 = daemon(connections=4, workers=1)
    with d2.client() as c:
        done = wait_job(c, job["id"], timeout=60)
    resumed = civitai.requests_to("cdn", "/file")[n:]
    assert sorted(r.range for r in resumed) == sorted(
        f"bytes={p['start'] + p['done']}-{p['end']}"
        for p in parts
        if p["start"] + p["done"] <= p["end"]
    )
    assert sum(r.sent for r in resumed) == len(data) - committed
    assert_file_is(done["path"], sha(data))
    assert done["path"] == str(home / "data/models/checkpoint/big.safetensors")
    d2.stop()


def test_direct_urls_only_from_allowed_hosts(civitai, daemon, home):
    data = blob(50_000)
    civitai.add_simple(1, 10, data)
    d = daemon(allowed_hosts=["127.0.0.2"])
    direct = civitai.signed_url(civitai.models[1].versions[0].files[0])
    with d.client() as c:
        refused = c.post(
            "/api/download", json={"url": "https://evil.example.com/x.bin", "model_type": "other"}
        )
        assert refused.status_code == 422 and "not allowed" in refused.json()["detail"]
        job = c.post(
            "/api/download", json={"url": direct, "model_type": "other", "sha256": sha(data)}
        ).json()
        done = wait_job(c, job["id"])
    assert done["filename"] == "model.safetensors"  # from the URL path
    assert (home / "data/models/other/model.safetensors").read_bytes() == data
    d.stop()


def test_a_direct_url_refused_by_its_host_says_so_without_the_url(civitai, daemon):
    civitai.add_simple(1, 10, b"x")
    d = daemon(allowed_hosts=["127.0.0.2"])
    missing = f"{civitai.cdn_url}/file/424242/nothing.bin?token=secret-in-url"
    failed = run_job(d, {"url": missing, "model_type": "other"}, ("failed",))
    assert failed["error"].startswith("127.0.0.2 refused the download (404")
    assert "secret-in-url" not in failed["error"] and failed["attempts"] == 0
    d.stop()


def test_restart_requeues_manifest_entries_unless_completed(civitai, daemon, home):
    civitai.add_simple(1, 10, blob(10_000, 1), filename="a.safetensors")
    civitai.add_simple(2, 20, blob(10_000, 2), filename="b.safetensors")
    (home / "manifest.json").write_text(
        json.dumps(
            [
                {"modelId": 1, "model_type": "lora"},
                {"modelId": 2, "modelVersionId": 20, "model_type": "LORA", "note": "mine"},
                {"modelId": "x", "model_type": "lora"},
                {"model_type": "lora"},
            ]
        )
    )
    d = daemon()
    with d.client() as c:
        wait_for(lambda: c.get("/api/jobs").json()["total"] == 2)
        for job in c.get("/api/jobs").json()["jobs"]:
            wait_job(c, job["id"])
    d.stop()
    err = d.stderr_text()
    # Numbered as a person counts them (1-based), with the entry's modelId where it has one.
    assert "manifest.json entry 3 (modelId x) skipped" in err
    assert "manifest.json entry 4 skipped" in err
    log = home / "logs" / "download.log"
    reads = log.read_text().count("manifest.json read:")
    d2 = daemon()
    with d2.client() as c:
        # The second start has read the manifest through: what it queued is in by now.
        wait_for(lambda: log.read_text().count("manifest.json read:") > reads)
        assert (
            "manifest.json read: 2 entries, 2 already in place, 0 in the queue" in log.read_text()
        )
        assert c.get("/api/jobs").json()["total"] == 2  # nothing queued again
    d2.stop()


def _file_size_limit(limit: int):
    def apply() -> None:
        # Past the limit the kernel refuses writes (EFBIG), as a full disk would (ENOSPC).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


def test_disk_full_mid_download_keeps_the_part_and_says_so(civitai, home, daemon_factory, daemon):
    data = blob(3 * MB)
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    daemon().stop()  # writes the config for the fake
    limited = daemon_factory(home)
    limited.preexec = _file_size_limit(1 * MB)
    limited.start()
    with limited.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        failed = wait_job(c, job["id"], ("failed",))
        assert c.get("/api/health").status_code == 200  # the daemon stays up
    limited.stop()
    assert "disk space" in failed["error"] or "too large" in failed["error"]
    assert "part already downloaded is kept" in failed["error"]
    part = home / "data/models/lora/m.safetensors.part"
    assert part.exists() and part.stat().st_size > 0
    d = daemon()
    with d.client() as c:
        c.post(f"/api/jobs/{job['id']}/retry")
        done = wait_job(c, job["id"])
    assert_file_is(done["path"], sha(data))
    d.stop()


def test_throttle_caps_the_total_rate_shared_by_all_workers(civitai, daemon):
    cap, window = 1_000_000, 8.0
    for i in range(3):
        civitai.add_simple(i + 1, 10 + i, blob(16 * MB, seed=i), filename=f"t{i}.safetensors")
    d = daemon(throttle=cap, workers=3, connections=1)
    with d.client() as c:
        ids = [
            c.post("/api/download", json={"modelVersionId": 10 + i, "model_type": "lora"}).json()[
                "id"
            ]
            for i in range(3)
        ]

        def progress() -> list[int]:
            return [c.get(f"/api/jobs/{i}").json()["bytes_done"] for i in ids]

        # Warm-up: all three streaming, and the bucket's first second of burst spent.
        wait_for(lambda: all(b > 0 for b in progress()), 20, what="three downloads running")
        time.sleep(2)
        before, t0 = progress(), time.monotonic()
        time.sleep(window)
        after, t1 = progress(), time.monotonic()
        statuses = [c.get(f"/api/jobs/{i}").json()["status"] for i in ids]
    d.stop()
    moved = [b - a for a, b in zip(before, after, strict=True)]
    # The daemon's progress, not the fake's sent bytes: loopback socket buffers (up to 32 MiB
    # here) would hold whole files and hide the rate the daemon actually reads at.
    rate = sum(moved) / (t1 - t0)
    assert statuses == ["downloading"] * 3  # the window saw three concurrent downloads
    assert all(m > 0.15 * cap * window for m in moved), moved  # each got a share
    assert abs(rate - cap) <= 0.15 * cap, (rate, moved)


def test_graceful_stop_mid_download_keeps_part_and_resumes(civitai, daemon, home):
    data = blob(6 * MB)
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    civitai.default_rate = 2 * MB
    d = daemon()
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["bytes_done"] > 1 * MB)
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 10
    db = Database(home / "data" / "completed.db")
    assert db["jobs"].get(job["id"])["status"] == "queued"
    kept = db.execute("select sum(done) from parts").fetchone()[0]
    db.close()
    assert (home / "data/models/lora/m.safetensors.part").stat().st_size >= kept > 0
    civitai.default_rate = None
    n = len(civitai.requests_to("cdn", "/file"))
    d2 = daemon()
    with d2.client() as c:
        done = wait_job(c, job["id"])
    assert_file_is(done["path"], sha(data))
    assert civitai.requests_to("cdn", "/file")[n].range == f"bytes={kept}-{len(data) - 1}"
    assert sum(r.sent for r in civitai.requests_to("cdn", "/file")[n:]) == len(data) - kept
    d2.stop()


def test_network_bytes_and_speed_show_in_status_while_downloading(civitai, daemon):
    civitai.add_simple(1, 10, blob(4 * MB))
    civitai.default_rate = 1 * MB
    d = daemon()
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        status = wait_for(
            lambda: (
                (s := c.get("/api/status").json())["active"]
                and s["active"][0]["speed_bps"] > 0
                and s
            ),
            10,
        )
    active = status["active"][0]
    assert active["id"] == job["id"] and active["status"] == "downloading"
    assert 0 < active["bytes_done"] < active["bytes_total"] == 4 * MB
    assert status["workers"] == 2 and status["paused"] is False and status["version"]
    d.stop()


def test_cancel_right_after_submit_always_wins(civitai, daemon, home):
    """Claim and cancel are atomic: a 200 means cancelled, and no worker runs the job."""
    pairs = 50
    for n in range(pairs):
        civitai.add_simple(100 + n, 1000 + n, blob(200_000, n), filename=f"m{n}.safetensors")
    # Two seconds per file: a cancel answered in time always arrives before the file is being
    # placed (a 409 then would be correct, so the test must never let a job get that far), and a
    # cancel the daemon lost still completes its file within the wait below.
    civitai.default_rate = 100_000
    d = daemon(workers=2)
    folder = home / "data/models/lora"
    answers = []
    with d.client() as c:
        for n in range(pairs):
            job = c.post("/api/download", json={"modelVersionId": 1000 + n, "model_type": "lora"})
            assert job.status_code == 202, job.text
            cancel = c.post(f"/api/jobs/{job.json()['id']}/cancel")
            answers.append((job.json()["id"], cancel.status_code, cancel.json().get("status")))

        def settled():
            counts = c.get("/api/metrics").json()["jobs_by_status"]
            return not any(counts.get(s) for s in ("queued", "downloading", "verifying"))

        wait_for(settled, 60, what="every job to settle")
        final = {job_id: c.get(f"/api/jobs/{job_id}").json()["status"] for job_id, _, _ in answers}
    lost = [a for a in answers if a[1:] != (200, "cancelled") or final[a[0]] != "cancelled"]
    assert not lost, f"{len(lost)} of {pairs} cancels lost: {lost[:5]}; final {final}"
    assert files_in(folder) == []  # no final file, no .part
    d.stop()


def test_cancelling_a_completed_job_says_it_already_completed(civitai, daemon):
    civitai.add_simple(1, 10, blob(1000))
    d = daemon()
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    with d.client() as c:
        late = c.post(f"/api/jobs/{done['id']}/cancel")
        assert late.status_code == 409
        assert late.json() == {
            "detail": f"Job {done['id']} already completed; there is nothing to cancel"
        }
        assert c.get(f"/api/jobs/{done['id']}").json()["status"] == "completed"
    d.stop()


def download_hits(civitai) -> int:
    return len(civitai.requests_to("api", "/api/download/models"))


def test_asking_again_for_a_completed_file_answers_at_once_as_a_duplicate(civitai, daemon, home):
    data = blob(100_000)
    civitai.add_simple(1, 10, data, filename="same.safetensors")
    d = daemon()
    target = home / "data/models/lora/same.safetensors"
    first = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    hits = download_hits(civitai)
    with d.client() as c:
        for again in (
            {"modelVersionId": 10, "model_type": "LORA"},
            {"modelId": 1, "model_type": "lora"},
        ):
            r = c.post("/api/download", json=again)
            assert r.status_code == 200, r.text
            job = r.json()
            assert (job["id"], job["status"], job["duplicate"]) == (first["id"], "completed", True)
            assert job["path"] == str(target)
        assert c.get("/api/jobs").json()["total"] == 1  # no new row
        assert download_hits(civitai) == hits  # Civitai's download endpoint was not asked
        assert (
            first["duplicate"] is False
            and c.get(f"/api/jobs/{first['id']}").json()["duplicate"] is False
        )

        target.unlink()  # deleted meanwhile: a new job downloads it again
        r = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        assert r.status_code == 202 and r.json()["duplicate"] is False
        assert r.json()["id"] != first["id"]
        wait_job(c, r.json()["id"])
    assert target.read_bytes() == data and download_hits(civitai) == hits + 1
    d.stop()


@pytest.mark.parametrize("change", ["other size", "same size, other bytes", "a link"])
def test_a_completed_file_changed_meanwhile_is_no_duplicate_and_is_never_overwritten(
    civitai, daemon, home, tmp_path, change
):
    """Size and mtime recorded at completion, on the file itself (a link is not it): a file
    changed in any of these ways is not the completed one, and the job asked for it stops at
    the file that is there instead of overwriting it."""
    data = blob(100_000)
    civitai.add_simple(1, 10, data, filename="same.safetensors")
    d = daemon()
    first = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    target = home / "data/models/lora/same.safetensors"
    theirs = blob(len(data), 2)
    outside = tmp_path / "outside.safetensors"
    if change == "other size":
        target.write_bytes(b"truncated")
    elif change == "same size, other bytes":
        target.write_bytes(theirs)
    else:
        outside.write_bytes(theirs)
        target.unlink()
        target.symlink_to(outside)
    with d.client() as c:
        r = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        assert r.status_code == 202, r.text
        assert r.json()["id"] != first["id"] and r.json()["duplicate"] is False
        failed = wait_job(c, r.json()["id"], ("failed",))
    assert failed["error"] == (
        f"A different file is already at {target}; it is not overwritten. Move it away, or "
        f"queue the job with another filename."
    )
    if change == "a link":
        assert target.is_symlink() and outside.read_bytes() == theirs
    else:
        assert target.read_bytes() == (b"truncated" if change == "other size" else theirs)
    d.stop()


def test_a_completion_recorded_before_mtimes_were_kept_is_checked_by_its_hash(
    civitai, daemon, home
):
    data = blob(100_000)
    civitai.add_simple(1, 10, data, filename="same.safetensors")
    d = daemon()
    first = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    d.stop()
    db = Database(home / "data" / "completed.db")
    for table in ("jobs", "completed"):  # as a database from before migration 005 left them
        db.execute(f"update {table} set mtime_ns = null")
    db.conn.commit()
    db.close()
    target = home / "data/models/lora/same.safetensors"
    os.utime(target, ns=(1, 1))  # another mtime, the same bytes: still the completed file
    d = daemon()
    with d.client() as c:
        r = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        assert r.status_code == 200, r.text
        assert (r.json()["id"], r.json()["duplicate"]) == (first["id"], True)
        target.write_bytes(blob(len(data), 2))  # the same size, other bytes: not it
        r = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        assert r.status_code == 202, r.text
        assert r.json()["duplicate"] is False
        wait_job(c, r.json()["id"], ("failed",))
    d.stop()


def test_a_direct_url_already_downloaded_is_a_duplicate_not_a_conflict(civitai, daemon, home):
    data = blob(50_000)
    f = civitai.add_simple(1, 10, data)
    d = daemon(allowed_hosts=["127.0.0.2"])
    direct = civitai.signed_url(f)
    first = run_job(d, {"url": direct, "model_type": "other"})
    cdn = len(civitai.requests_to("cdn", "/file"))
    with d.client() as c:
        r = c.post("/api/download", json={"url": direct, "model_type": "other"})
        assert r.status_code == 200, r.text
        assert (r.json()["id"], r.json()["duplicate"]) == (first["id"], True)
        # Another URL for the same bytes (same SHA256) at the same path is the same file too.
        other = direct.replace("?", "?again=1&", 1)
        r = c.post("/api/download", json={"url": other, "model_type": "other", "sha256": sha(data)})
        assert r.status_code == 200, r.text
        assert (r.json()["id"], r.json()["duplicate"]) == (first["id"], True)
        assert c.get("/api/jobs").json()["total"] == 1
    assert len(civitai.requests_to("cdn", "/file")) == cdn
    assert (home / "data/models/other/model.safetensors").read_bytes() == data
    d.stop()


def test_the_same_file_queued_under_another_model_type_is_refused_with_409(civitai, daemon):
    civitai.add_simple(1, 10, blob(2 * MB), filename="m.safetensors")
    civitai.default_rate = 256 * 1024  # still running while it is asked again
    d = daemon()
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        r = c.post("/api/download", json={"modelVersionId": 10, "model_type": "checkpoint"})
        assert r.status_code == 409
        assert r.json()["detail"].startswith("This file is already ")
        assert f"as job {job['id']} with model_type 'lora'" in r.json()["detail"]
        same = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        assert same.status_code == 202 and same.json()["id"] == job["id"]
        batch = c.post(
            "/api/batch", json=[{"modelVersionId": 10, "model_type": "checkpoint"}]
        ).json()
        assert batch["errors"][0]["index"] == 0
        assert f"as job {job['id']} with model_type 'lora'" in batch["errors"][0]["detail"]
        assert c.get("/api/jobs").json()["total"] == 1
        c.post(f"/api/jobs/{job['id']}/cancel")
    d.stop()


def test_many_retries_of_one_job_at_once_queue_it_once_and_it_runs_once(civitai, daemon, home):
    """A double-clicked Retry: one retry queues the job, every other one is refused, and the
    file is fetched by one worker only."""
    data = blob(1 * MB)
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    civitai.default_rate = 256 * 1024
    d = daemon(workers=2)
    with d.client() as c:
        job_id = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()[
            "id"
        ]
        assert c.post(f"/api/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        hits = download_hits(civitai)
        civitai.default_rate = 2 * MB  # half a second: long enough for a second worker to join
        clicks = 24
        together = threading.Barrier(clicks)

        def click(_: int) -> httpx.Response:
            c.get("/api/health")  # each thread's connection is open before the barrier
            together.wait(10)
            return c.post(f"/api/jobs/{job_id}/retry")

        with ThreadPoolExecutor(clicks) as pool:
            answers = list(pool.map(click, range(clicks)))
        accepted = [r for r in answers if r.status_code == 200]
        refused = [r for r in answers if r.status_code != 200]
        assert len(accepted) == 1, [(r.status_code, r.text) for r in answers]
        for r in refused:
            assert r.status_code == 422, r.text
            assert r.json()["detail"].startswith(f"Job {job_id} is ")
            assert r.json()["detail"].endswith("only failed or cancelled jobs can be retried")
        done = wait_job(c, job_id)
    assert_file_is(done["path"], sha(data))
    assert download_hits(civitai) == hits + 1
    d.stop()


def test_a_cancel_that_cannot_remove_the_part_fails_the_job_with_the_reason(civitai, daemon, home):
    """The job never stays `downloading` with no task behind it (it would resume at next start)."""
    civitai.add_simple(1, 10, blob(4 * MB), filename="m.safetensors")
    civitai.default_rate = 512 * 1024
    d = daemon()
    part = home / "data/models/lora/m.safetensors.part"
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["bytes_done"] > 0)
        part.rename(part.with_name("moved-away"))  # the daemon keeps writing through its fd
        part.mkdir()  # a directory cannot be unlinked
        (part / "keep").write_bytes(b"mine")
        r = c.post(f"/api/jobs/{job['id']}/cancel")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "failed"
        assert r.json()["error"] == (
            f"Stopped, but the partial file {part} could not be removed (Is a directory); "
            f"delete it, then retry or leave the job"
        )
        assert c.get(f"/api/jobs/{job['id']}").json()["status"] == "failed"
        assert c.get("/api/status").json()["active"] == []
    d.stop()
    d2 = daemon()  # nothing resumes it
    with d2.client() as c:
        assert c.get(f"/api/jobs/{job['id']}").json()["status"] == "failed"
    assert (part / "keep").read_bytes() == b"mine"
    d2.stop()


def test_a_cancel_in_progress_when_the_daemon_stops_still_ends_cancelled(civitai, home):
    """In process (the shutdown must land between the cancel's decision and its cleanup): the
    lifespan ends while the cancel waits for the job's task; the job is cancelled, its .part gone
    (a job left downloading or queued would resume at the next start)."""
    civitai.add_simple(1, 10, blob(4 * MB), filename="m.safetensors")
    civitai.default_rate = 512 * 1024
    # No scan at start: its `scan` events would come between the job events read below.
    write_config(home, civitai_base_url=civitai.base_url, retries=5, timeout=10, auto_scan=False)
    settings = load_settings(home)
    part = settings.models_dir / "lora" / "m.safetensors.part"

    async def cancel_then_stop() -> int:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            queue = app.state.queue
            with app.state.bus.subscribe(progress=True) as events:
                job, _ = await queue.submit(JobRequest(modelVersionId=10, model_type="lora"))
                async with asyncio.timeout(20):
                    while not (await events.get()).job.get("bytes_done"):
                        pass
            cancel = asyncio.create_task(queue.cancel(job["id"]))
            async with asyncio.timeout(20):
                # No event marks "cancel decided, cleanup pending": that is the queue's own state.
                while job["id"] not in queue._cancelling:  # noqa: ASYNC110
                    await asyncio.sleep(0)
            # the lifespan ends here, with the cancel decided but not yet cleaned up
        with contextlib.suppress(asyncio.CancelledError):
            await cancel
        return job["id"]

    job_id = run_async(cancel_then_stop())
    db = Database(settings.data_dir / "completed.db")
    try:
        assert db["jobs"].get(job_id)["status"] == "cancelled"
    finally:
        db.close()
    assert not part.exists()
