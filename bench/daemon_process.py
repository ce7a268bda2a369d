"""The daemon under benchmark: a real process started with launch.py in a fresh home, and a
WebSocket feed that notes when each job status message arrives (no polling that would add CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.measure import PageCache, Sample, proc_cpu, proc_hwm_mb

REPO = Path(__file__).resolve().parent.parent
TERMINAL = ("completed", "failed", "cancelled")


class Feed:
    """A WebSocket client in a thread: records (arrival time, job) for each status change."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=None)
        first = json.loads(self.ws.recv(timeout=30))
        assert first["type"] == "snapshot", first
        self.changes: dict[int, list[tuple[float, str]]] = {}
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        last: dict[int, str] = {}
        while True:
            try:
                raw = self.ws.recv()
            except Exception:
                with self.cond:
                    self.cond.notify_all()
                return
            now = time.perf_counter()
            msg = json.loads(raw)
            if msg.get("type") != "job":
                continue
            job = msg["job"]
            if last.get(job["id"]) == job["status"]:
                continue  # a progress message: the same status as before
            last[job["id"]] = job["status"]
            with self.cond:
                self.changes.setdefault(job["id"], []).append((now, job["status"]))
                self.cond.notify_all()

    def wait_for(self, job_id: int, statuses: tuple[str, ...], timeout: float) -> tuple[float, str]:
        """Arrival time and status of the first change of `job_id` into one of `statuses`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, status in self.changes.get(job_id, []):
                    if status in statuses:
                        return at, status
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    raise TimeoutError(f"job {job_id} never reached {statuses} on the feed")
                self.cond.wait(left)

    def close(self) -> None:
        self.ws.close()
        self.thread.join(10)


class Daemon:
    def __init__(self, **config: object) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="bench-home-", dir=os.environ.get("BENCH_TMP")))
        values = {
            "civitai_base_url": "http://127.0.0.9:9",
            "allowed_hosts": ["127.0.0.1"],
            "save_metadata": False,
            "log_level": "WARNING",
            **config,
        }
        (self.home / "config.json").write_text(json.dumps(values))
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "launch.py"), "--home", str(self.home)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("GUI: "):
            self.proc.kill()
            raise RuntimeError(f"the daemon did not start: {line!r}")
        self.base = line.removeprefix("GUI: ").removesuffix("/gui")
        self.token = json.loads((self.home / "config.json").read_text())["api_token"]
        self.client = httpx.Client(
            base_url=self.base, headers={"X-API-Key": self.token}, timeout=120
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.client.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        self.feed: Feed | None = None
        self.settle()

    def settle(self, quiet: float = 0.02, window: float = 0.2, timeout: float = 10) -> None:
        """Wait until start-up work is over (under `quiet` CPU-s in `window` s), so it is not
        counted as the download's CPU."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = proc_cpu(self.proc.pid)
            time.sleep(window)
            if proc_cpu(self.proc.pid) - before <= quiet:
                return

    @property
    def ws_url(self) -> str:
        return self.base.replace("http", "ws", 1) + f"/ws/downloads?token={self.token}"

    def open_feed(self) -> Feed:
        self.feed = Feed(self.ws_url)
        return self.feed

    def fetch(self, payload: dict[str, Any], cache: PageCache, timeout: float = 900) -> Sample:
        """One download, timed from the POST to the `completed` message on the feed; CPU is
        the whole daemon process over that span, RSS its VmHWM (it was started for this run)."""
        feed = self.feed or self.open_feed()
        cpu0 = proc_cpu(self.proc.pid)
        started = time.perf_counter()
        response = self.client.post("/api/download", json=payload)
        response.raise_for_status()
        job_id = response.json()["id"]
        done_at, status = feed.wait_for(job_id, TERMINAL, timeout)
        cpu = proc_cpu(self.proc.pid) - cpu0
        job = self.client.get(f"/api/jobs/{job_id}").json()
        if status != "completed":
            raise RuntimeError(f"daemon job {job_id} {status}: {job['error']}")
        if payload.get("sha256") and job["sha256"] != payload["sha256"]:
            raise RuntimeError(f"daemon job {job_id} has SHA256 {job['sha256']}")
        fsync = cache.after(Path(job["path"]))
        return Sample(
            wall=done_at - started,
            cpu=cpu,
            rss_mb=proc_hwm_mb(self.proc.pid),
            extra={"fsync": fsync},
        )

    def stop(self) -> None:
        if self.feed:
            self.feed.close()
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
