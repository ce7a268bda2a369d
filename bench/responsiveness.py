"""The daemon's API and feed while it is busy: `/api/status` and WebSocket status changes under
4 saturating downloads, and `/api/batch` with many WebSocket clients open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.daemon_process import TERMINAL, Daemon
from bench.fileserver import FileServer
from bench.measure import PageCache
from tests.fake_civitai import FakeCivitai

LOAD_JOBS = 4


@dataclass
class LoadResult:
    status_ms: list[float] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)  # load downloads running at each status call
    ws_ms: list[float] = field(default_factory=list)  # API call's return → message on the feed
    ws_call_ms: list[float] = field(default_factory=list)  # API call's start → message
    downloads: int = 0  # load downloads started


def under_load(
    server: FileServer, name: str, sha: str, calls: int, probe_every: int = 5
) -> LoadResult:
    """`calls` GETs of /api/status while 4 downloads (4 connections each) keep running: each
    finished one is replaced at once. Every `probe_every` calls, a small job is queued and then
    cancelled; each status change is timed from the API call's return to the arrival of its
    `job` message on a WebSocket client."""
    result = LoadResult()
    with Daemon(workers=LOAD_JOBS, connections=4) as d:
        feed = d.open_feed()
        running: set[int] = set()

        def top_up() -> None:
            for job_id in list(running):
                changes = feed.changes.get(job_id, [])
                if changes and changes[-1][1] in TERMINAL:
                    running.discard(job_id)
                    job = d.client.get(f"/api/jobs/{job_id}").json()
                    if job["status"] != "completed":
                        raise RuntimeError(
                            f"load download {job_id} {job['status']}: {job['error']}"
                        )
                    PageCache.after(Path(job["path"]))  # 1 GiB each: keep the disk free
            while len(running) < LOAD_JOBS:
                result.downloads += 1
                n = result.downloads
                job = d.client.post(
                    "/api/download",
                    json={
                        "url": server.url(name) + f"?load={n}",
                        "filename": f"load-{n}.bin",
                        "model_type": "load",
                        "sha256": sha,
                        "priority": 1,
                    },
                ).json()
                running.add(job["id"])

        top_up()
        for job_id in list(running):
            feed.wait_for(job_id, ("downloading",), 60)
        for i in range(calls):
            top_up()
            t0 = time.perf_counter()
            status = d.client.get("/api/status")
            result.status_ms.append((time.perf_counter() - t0) * 1000)
            status.raise_for_status()
            active = status.json()["active"]
            result.busy.append(sum(1 for j in active if j["model_type"] == "load"))
            if i % probe_every == 0:
                _probe(d, server, i, result)
            time.sleep(0.01)
    return result


def _probe(d: Daemon, server: FileServer, i: int, result: LoadResult) -> None:
    """Queue a small job (→ `queued`), then cancel it (→ `cancelled`): two status changes."""
    assert d.feed is not None

    def timed(call: Any) -> tuple[httpx.Response, float, float]:
        t_call = time.perf_counter()
        response = call()
        t_return = time.perf_counter()
        return response, t_call, t_return

    response, t_call, t_return = timed(
        lambda: d.client.post(
            "/api/download",
            json={
                "url": server.url("tiny.bin") + f"?probe={i}",
                "filename": f"probe-{i}.bin",
                "model_type": "probe",
                "priority": 9,
            },
        )
    )
    response.raise_for_status()
    job_id = response.json()["id"]
    at, _ = d.feed.wait_for(job_id, ("queued",), 60)
    result.ws_ms.append(max(0.0, at - t_return) * 1000)
    result.ws_call_ms.append((at - t_call) * 1000)
    response, t_call, t_return = timed(lambda: d.client.post(f"/api/jobs/{job_id}/cancel"))
    if response.status_code != 200:  # a worker freed up and finished it first: no sample
        d.feed.wait_for(job_id, TERMINAL, 60)
        return
    at, _ = d.feed.wait_for(job_id, ("cancelled",), 60)
    result.ws_ms.append(max(0.0, at - t_return) * 1000)
    result.ws_call_ms.append((at - t_call) * 1000)


class Crowd:
    """`n` WebSocket clients on one asyncio loop in a thread, each reading every message and
    noting which jobs it has heard of."""

    def __init__(self, url: str, n: int) -> None:
        self.url = url
        self.n = n
        self.seen: list[set[int]] = [set() for _ in range(n)]
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        if not self.ready.wait(120):
            raise TimeoutError(f"{n} WebSocket clients did not connect within 120 s")
        if self.error:
            raise self.error

    def _main(self) -> None:
        self.loop.run_until_complete(self._run())

    async def _run(self) -> None:
        from websockets.asyncio.client import connect

        try:
            sockets = [await connect(self.url, max_size=None) for _ in range(self.n)]
            for ws in sockets:
                await ws.recv()  # the snapshot
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self.error = exc
            self.ready.set()
            return
        self.stop = asyncio.Event()
        self.ready.set()
        readers = [asyncio.create_task(self._read(ws, k)) for k, ws in enumerate(sockets)]
        await self.stop.wait()
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)

    async def _read(self, ws: Any, k: int) -> None:
        seen = self.seen[k]
        with contextlib.suppress(Exception):
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "job":
                    seen.add(msg["job"]["id"])

    def heard_all(self, ids: set[int]) -> int:
        return sum(1 for s in self.seen if ids <= s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(60)


@dataclass
class BatchResult:
    clients: int
    answer_s: float  # POST /api/batch → 202
    jobs: int
    fanout_s: float | None  # POST → every client heard of every job (None: not within the wait)
    heard: int  # clients that heard of every job


def batch(count: int, clients: list[int], wait: float = 120) -> list[BatchResult]:
    """POST a batch of `count` Civitai versions to a fresh daemon per entry of `clients`, with
    that many WebSocket clients connected and reading."""
    results = []
    with FakeCivitai() as fake:
        for i in range(count):
            fake.add_simple(
                50_000 + i, 60_000 + i, f"batch file {i}".encode(), filename=f"b{i}.safetensors"
            )
        entries = [{"modelVersionId": 60_000 + i, "model_type": "lora"} for i in range(count)]
        for n in clients:
            with Daemon(civitai_base_url=fake.base_url) as d:
                crowd = Crowd(d.ws_url, n) if n else None
                try:
                    started = time.perf_counter()
                    response = d.client.post("/api/batch", json=entries, timeout=900)
                    answer = time.perf_counter() - started
                    if response.status_code != 202:
                        raise RuntimeError(
                            f"batch answered {response.status_code}: {response.text[:300]}"
                        )
                    ids = {j["id"] for j in response.json()["jobs"]}
                    fanout, heard = None, 0
                    if crowd:
                        deadline = time.monotonic() + wait
                        while time.monotonic() < deadline:
                            heard = crowd.heard_all(ids)
                            if heard == n:
                                fanout = time.perf_counter() - started
                                break
                            time.sleep(0.05)
                finally:
                    if crowd:
                        crowd.close()
            results.append(BatchResult(n, answer, len(ids), fanout, heard))
    return results
