"""GET /metrics (issue 29 item 2): Prometheus's text format from a real daemon that downloaded
from the fake Civitai and the fake Hub; the scraper's metrics_token opens it and nothing else;
the Grafana dashboard in docs/grafana queries only metrics a scrape has."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlite_utils import Database

from database import Store, migrations, open_database
from events import EventBus
from metrics.exposition import DaemonMetrics
from tests.conftest import assert_file_is, run_async, run_job, wait_for
from tests.fake_civitai import FakeCivitai
from tests.fake_hf import FakeHub

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "docs/grafana/civitai-daemon.json"
HF = "https://huggingface.co"
METRICS_TOKEN = "scraper-Qm7vX2pL9cR4tY8wZ1nB6kD3"  # ≥ 128 bits, as config.json asks
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def content(size: int, seed: bytes) -> bytes:
    block = hashlib.sha256(seed).digest() * 2048
    return (block * (size // len(block) + 1))[:size]


def parse(text: str) -> Samples:
    """Every sample of a scrape: (name, sorted labels) → value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(client: httpx.Client, **headers: str) -> Samples:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def downloads(civitai: FakeCivitai, hf: FakeHub, daemon, **config):
    """A daemon that downloaded a Civitai file and a Hub file, failed a Civitai file on corrupt
    bytes (the fake corrupts both attempts) and ran an update check; with the two files."""
    lora = content(200_000, b"lora")
    civitai.add_simple(1, 10, lora, filename="a.safetensors")
    civitai.add_simple(2, 20, content(50_000, b"bad"), filename="b.safetensors")
    vae = content(300_000, b"vae")
    hf.add_repo("acme/vae", {"vae.safetensors": vae})
    d = daemon(hf_base_url=hf.base_url, workers=1, **config)
    civitai_job = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    hub_url = f"{HF}/acme/vae/resolve/main/vae.safetensors"
    hub_job = run_job(d, {"url": hub_url, "model_type": "vae"})
    civitai.fault("cdn", corrupt=True, times=2)
    failed = run_job(d, {"modelVersionId": 20, "model_type": "lora"}, statuses=("failed",))
    assert "SHA256" in failed["error"] or "hash" in failed["error"].lower(), failed["error"]
    with d.client() as c:
        assert c.post("/api/updates/check").status_code == 200
    assert_file_is(civitai_job["path"], hashlib.sha256(lora).hexdigest())
    assert_file_is(hub_job["path"], hashlib.sha256(vae).hexdigest())
    return d, Path(civitai_job["path"]), Path(hub_job["path"])


def test_a_scrape_shows_bytes_by_source_jobs_by_status_and_the_failure_by_class(
    civitai: FakeCivitai, hf: FakeHub, daemon
):
    d, lora, vae = downloads(civitai, hf, daemon)
    with d.client() as c:
        # The failure is counted by a subscriber of the event bus: wait for it, with a deadline.
        m = wait_for(
            lambda: (
                (s := scrape(c))
                and value(s, "civitai_daemon_failures_total", error_class="HashMismatch") == 1
                and s
            ),
            what="the failure in a scrape",
        )
    on_disk = {"civitai": lora.stat().st_size, "huggingface": vae.stat().st_size, "direct": 0}
    for source, size in on_disk.items():
        assert value(m, "civitai_daemon_downloaded_bytes_total", source=source) == size, source
    assert value(m, "civitai_daemon_jobs", status="completed") == 2
    assert value(m, "civitai_daemon_jobs", status="failed") == 1
    assert value(m, "civitai_daemon_jobs", status="queued") == 0
    assert value(m, "civitai_daemon_failed_jobs", error_class="HashMismatch") == 1
    assert value(m, "civitai_daemon_queue_length") == 0
    assert value(m, "civitai_daemon_active_transfers") == 0
    assert value(m, "civitai_daemon_average_speed_bytes_per_second") > 0
    assert value(m, "civitai_daemon_received_bytes_total") >= sum(on_disk.values())
    assert value(m, "civitai_daemon_update_check_duration_seconds") >= 0
    assert value(m, "civitai_daemon_update_check_last_success_timestamp_seconds") > 0
    assert value(m, "civitai_daemon_store_hits_total") == 0  # no shared store configured
    assert value(m, "civitai_daemon_download_dir_free_bytes") > 0
    text = d.client().get("/metrics").text
    assert "127.0.0" not in text and d.token not in text  # no URL, no secret in any label
    d.stop()

    # After a restart: what the database holds is still counted; what counts events starts again.
    d.start()
    with d.client() as c:
        again = scrape(c)
    for source, size in on_disk.items():
        assert value(again, "civitai_daemon_downloaded_bytes_total", source=source) == size
    assert value(again, "civitai_daemon_failed_jobs", error_class="HashMismatch") == 1
    assert value(again, "civitai_daemon_failures_total", error_class="HashMismatch") is None
    assert value(again, "civitai_daemon_update_check_last_success_timestamp_seconds") == value(
        m, "civitai_daemon_update_check_last_success_timestamp_seconds"
    )
    d.stop()


def test_a_scrape_during_a_transfer_shows_it_active_with_its_speed(civitai: FakeCivitai, daemon):
    civitai.add_simple(1, 10, content(3_000_000, b"slow"), filename="slow.safetensors")
    civitai.default_rate = 200_000  # 15 s: the scrapes below see it running
    d = daemon(workers=1)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()

        def running() -> Samples | None:
            s = scrape(c)
            busy = value(s, "civitai_daemon_active_transfers") == 1
            return s if busy and value(s, "civitai_daemon_speed_bytes_per_second") else None

        m = wait_for(running, what="the transfer and its speed in a scrape")
        assert value(m, "civitai_daemon_jobs", status="downloading") == 1
        assert c.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
        after = wait_for(
            lambda: (s := scrape(c)) and value(s, "civitai_daemon_active_transfers") == 0 and s,
            what="no transfer once cancelled",
        )
    assert value(after, "civitai_daemon_jobs", status="cancelled") == 1
    assert value(after, "civitai_daemon_downloaded_bytes_total", source="civitai") == 0
    d.stop()


def test_the_shared_stores_counters_reach_a_scrape_once_it_is_watched(tmp_path: Path):
    store = Store(tmp_path / "completed.db")

    class Idle:
        """A queue with nothing running (daemon.DownloadQueue's side the metrics read)."""

        network_bytes = 0

        def __init__(self) -> None:
            self.store = store

        def current_speed(self) -> float:
            return 0.0

        def active_jobs(self) -> list[dict]:
            return []

    async def scrapes() -> tuple[Samples, Samples]:
        await store.open()
        exporter = DaemonMetrics(Idle(), EventBus(), tmp_path / "models")
        before = parse((await exporter.exposition()).decode())
        exporter.watch_store(SimpleNamespace(hits=3, uploads=2, upload_failures=1))
        after = parse((await exporter.exposition()).decode())
        await store.close()
        return before, after

    before, after = run_async(scrapes())
    for name in ("store_hits", "store_uploads", "store_upload_failures"):
        assert value(before, f"civitai_daemon_{name}_total") == 0
    assert value(after, "civitai_daemon_store_hits_total") == 3
    assert value(after, "civitai_daemon_store_uploads_total") == 2
    assert value(after, "civitai_daemon_store_upload_failures_total") == 1


def test_the_metrics_token_opens_metrics_and_nothing_else(civitai: FakeCivitai, daemon, home):
    viewer = "viewer-" + "Hj3Kp9Lm2Nq8Rs4Tv7Wx1Yz6"
    d = daemon(metrics_token=METRICS_TOKEN, viewer_token=viewer)
    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    with httpx.Client(base_url=d.base_url, timeout=10) as anyone:
        assert anyone.get("/metrics", headers=bearer).status_code == 200
        assert anyone.get("/metrics", headers={"X-API-Key": METRICS_TOKEN}).status_code == 200
        for path in ("/api/jobs", "/api/status", "/api/metrics", "/api/settings"):
            r = anyone.get(path, headers=bearer)
            assert r.status_code == 401, (path, r.status_code)
            assert "A valid API key is needed" in r.json()["detail"]
        assert anyone.post("/api/download", headers=bearer, json={}).status_code == 401
        assert anyone.get("/metrics").status_code == 401
        wrong = anyone.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401 and wrong.json()["detail"].startswith("A valid API key")
    with d.client() as c:
        assert c.get("/metrics").status_code == 200  # the API key opens it too
        assert c.get("/metrics", headers={"Authorization": f"Bearer {viewer}"}).status_code == 200
        settings = c.get("/api/settings").json()
        assert settings["settings"]["metrics_token"] == {"set": True}
        assert settings["keys"]["metrics_token"]["secret"] is True
        assert METRICS_TOKEN not in json.dumps(settings)
        weak = c.patch("/api/settings", json={"metrics_token": "prometheus"})
        assert weak.status_code == 422
        assert "metrics_token must hold at least 128 bits" in weak.json()["detail"]
        new = "scraper-" + "Zt4Kq8Wm2Xr6Yb1Nc5Vd9Lf3"
        assert c.patch("/api/settings", json={"metrics_token": new}).status_code == 200
    with httpx.Client(base_url=d.base_url, timeout=10) as anyone:
        assert anyone.get("/metrics", headers=bearer).status_code == 401  # the old one: no more
        ok = anyone.get("/metrics", headers={"Authorization": f"Bearer {new}"})
        assert ok.status_code == 200
    d.stop()
    logs = "".join(p.read_text(errors="replace") for p in (home / "logs").glob("*") if p.is_file())
    assert METRICS_TOKEN not in logs and new not in logs


def test_a_job_that_gave_up_after_its_retries_counts_under_its_last_errors_class(
    civitai: FakeCivitai, daemon
):
    civitai.add_simple(1, 10, b"x" * 1000)
    civitai.fault("cdn", status=503, times=10)
    d = daemon(retries=2)
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    assert "Gave up after 2 attempts" in failed["error"]
    with d.client() as c:
        m = wait_for(
            lambda: (
                (s := scrape(c))
                and value(s, "civitai_daemon_failures_total", error_class="ServerError")
                and s
            ),
            what="the failure in a scrape",
        )
    assert value(m, "civitai_daemon_failed_jobs", error_class="ServerError") == 1
    d.stop()


def test_completed_rows_of_an_older_database_are_given_their_source(tmp_path: Path):
    path = tmp_path / "completed.db"
    db = Database(path)
    migrations.apply(db, stop_before="017_fleet-metrics_origin_and_error_class")
    jobs = [
        (1, "https://civitai.com/models/1?modelVersionId=10", 10),
        (2, "https://huggingface.co/acme/vae/resolve/main/vae.safetensors", None),
        (3, "https://files.example.org/x.safetensors", None),
    ]
    for job_id, url, version in jobs:
        row = {"id": job_id, "status": "completed", "model_type": "lora", "url": url}
        db["jobs"].insert({**row, "priority": 5, "created_at": "2026-01-01T00:00:00Z"})
        db["completed"].insert({"job_id": job_id, "modelVersionId": version, "size": 7})
    db["completed"].insert({"job_id": 99, "size": 7})  # its job cleared from the history
    db.close()
    db = open_database(path)
    origins = [r["origin"] for r in db.query("select origin from completed order by id")]
    assert origins == ["civitai", "huggingface", "direct", "direct"]
    db.close()


PROMQL_WORDS = re.compile(r"\bcivitai_daemon_[a-z0-9_]+")


def dashboard_metrics() -> dict[str, set[str]]:
    """Each panel's title → the metric names its PromQL expressions name."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(board["schemaVersion"], int) and board["title"] and board["uid"]
    found: dict[str, set[str]] = {}
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        for target in panel["targets"]:
            names = set(PROMQL_WORDS.findall(target["expr"]))
            assert names, f"panel {panel['title']!r}: {target['expr']!r} names no metric"
            found.setdefault(panel["title"], set()).update(names)
    for variable in board["templating"]["list"]:  # the daemon picker asks Prometheus too
        names = set(PROMQL_WORDS.findall(json.dumps(variable.get("query", ""))))
        if names:
            found[f"variable {variable['name']}"] = names
    return found


def test_every_metric_the_grafana_dashboard_queries_is_in_a_real_scrape(
    civitai: FakeCivitai, hf: FakeHub, daemon
):
    d, _, _ = downloads(civitai, hf, daemon)
    with d.client() as c:
        wait_for(
            lambda: value(scrape(c), "civitai_daemon_failures_total", error_class="HashMismatch"),
            what="the failure in a scrape",
        )
        names = {name for name, _ in scrape(c)}
    d.stop()
    missing = {
        title: sorted(wanted - names)
        for title, wanted in dashboard_metrics().items()
        if wanted - names
    }
    assert not missing, f"panels query metrics no scrape has: {missing}"
