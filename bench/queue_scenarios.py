"""Scenarios through the fake Civitai: many small files, a large batch, the update checker."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from bench import responsiveness
from bench.daemon_process import Daemon
from bench.measure import Report, proc_cpu, proc_hwm_mb
from tests.fake_civitai import FakeCivitai


def scenario_small(count: int, report: Report) -> float:
    with FakeCivitai() as fake:
        for i in range(count):
            fake.add_simple(
                10_000 + i,
                20_000 + i,
                f"small file {i}".encode() * 20,
                filename=f"s{i}.safetensors",
            )
        with Daemon(civitai_base_url=fake.base_url, workers=4) as d:
            cpu0 = proc_cpu(d.proc.pid)
            started = time.perf_counter()
            batch = [{"modelVersionId": 20_000 + i, "model_type": "lora"} for i in range(count)]
            r = d.client.post("/api/batch", json=batch, timeout=900)
            queued = time.perf_counter() - started
            if r.status_code != 202 or len(r.json()["jobs"]) != count:
                raise RuntimeError(f"batch of small files: {r.status_code} {r.text[:300]}")
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                done = d.client.get("/api/jobs", params={"status": "completed", "limit": 1})
                if done.json()["total"] >= count:
                    break
                time.sleep(0.05)
            wall = time.perf_counter() - started
            cpu, hwm = proc_cpu(d.proc.pid) - cpu0, proc_hwm_mb(d.proc.pid)
    report.row(
        f"3. {count} small files (fake Civitai, 4 workers)",
        f"{wall:.2f} s",
        f"{count / wall:.0f} jobs/s",
        f"{cpu:.2f} s",
        f"{hwm:.0f} MB",
        f"batch answered in {queued:.2f} s",
        "one run; polling /api/jobs every 50 ms",
    )
    return count / wall


def scenario_batch(count: int, clients: int, report: Report) -> list[responsiveness.BatchResult]:
    results = responsiveness.batch(count, [0, clients])
    for r in results:
        fan = (
            f"every client heard of every job {r.fanout_s:.2f} s after the POST"
            if r.fanout_s is not None
            else f"{r.heard} of {r.clients} clients heard of every job within the wait"
        )
        report.row(
            f"5. POST /api/batch, {count} entries, {r.clients} WebSocket clients reading",
            f"{r.answer_s:.2f} s",
            f"{r.jobs} jobs",
            "",
            "",
            fan if r.clients else "no WebSocket client",
            "perf_counter from POST to the 202 answer",
        )
    return results


def scenario_updates(count: int, report: Report) -> int:
    from config.settings import Settings
    from daemon import DownloadQueue
    from database import Store, utcnow
    from events import EventBus
    from sources.civitai import CivitaiClient
    from updater.checker import check_updates
    from updater.context import CheckContext, CheckResult

    with FakeCivitai() as fake:
        entries = []
        for i in range(count):
            fake.add_simple(100_000 + i, 200_000 + i, b"x", filename=f"u{i}.safetensors")
            entries.append(
                {"modelId": 100_000 + i, "modelVersionId": 200_000 + i, "model_type": "lora"}
            )
        for i in range(0, count, 500):  # one in 500 has a new version
            fake.publish_version(100_000 + i, fake.version(300_000 + i, [b"new"]))
        home = Path(tempfile.mkdtemp(prefix="bench-updates-", dir=os.environ.get("BENCH_TMP")))
        (home / "manifest.json").write_text(json.dumps(entries))
        settings = Settings(home=home, civitai_base_url=fake.base_url)

        async def check() -> tuple[float, object]:
            store = Store(home / "data" / "completed.db")
            await store.open()
            async with httpx.AsyncClient(timeout=60) as http:
                civitai = CivitaiClient(settings, http)
                queue = DownloadQueue(settings, store, EventBus(), civitai, http)
                started = time.perf_counter()
                result = CheckResult(started_at=utcnow())
                ctx = CheckContext(
                    settings, store, civitai, queue, EventBus(), asyncio.Lock(), result
                )
                await check_updates(ctx)
                wall = time.perf_counter() - started
            await store.close()
            return wall, result

        wall, result = asyncio.run(check())
        shutil.rmtree(home, ignore_errors=True)
    report.row(
        f"6. update check, {count} tracked models",
        f"{wall:.2f} s",
        f"{result.requests} API requests",  # type: ignore[attr-defined]
        "",
        "",
        f"{result.checked} checked, {len(result.updates)} updates found",  # type: ignore[attr-defined]
        "in this process, against the fake Civitai",
    )
    return result.requests  # type: ignore[attr-defined]
