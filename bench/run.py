"""Benchmarks, side by side with curl and aria2c on the same machine, in one run.

    uv run python bench/run.py [--size-mib 1024] [--big] [--runs 3] [--only 1,2,3,4,5]

1. one large file: daemon (download + SHA256) vs `curl -o` vs `aria2c --checksum`
2. a server capping each connection: daemon connections 1 and 4 vs `aria2c -x4 -s4` vs curl
3. many small files through the fake Civitai: jobs per second, end to end
4. responsiveness while 4 large downloads run: /api/status and WebSocket latency
5. update checks for 5000 tracked models: requests made, wall time
Prints a Markdown table of medians and ratios; also writes bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.fileserver import FileServer  # noqa: E402
from tests.fake_civitai import FakeCivitai  # noqa: E402

MIB = 1024 * 1024
RESULTS = REPO / "bench" / "results"


def make_file(path: Path, size: int) -> str:
    """A file of `size` pseudo-random bytes; returns its SHA256 (cached beside it)."""
    cache = path.with_suffix(".sha256")
    if path.exists() and path.stat().st_size == size and cache.exists():
        return cache.read_text().strip()
    block = os.urandom(64 * MIB)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = block[: min(left, len(block))]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    cache.write_text(h.hexdigest())
    return h.hexdigest()


def run_tool(cmd: list[str]) -> dict[str, float]:
    """Wall, CPU seconds and peak RSS of a command, from wait4."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.read().decode()[-500:]}")
    proc.stderr.close()
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds so far, peak RSS in MB) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return cpu, hwm


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
        line = self.proc.stdout.readline().strip()
        self.base = line.removeprefix("GUI: ").removesuffix("/gui")
        token = json.loads((self.home / "config.json").read_text())["api_token"]
        self.client = httpx.Client(base_url=self.base, headers={"X-API-Key": token}, timeout=60)
        self.token = token
        for _ in range(200):
            try:
                if self.client.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)

    def wait(self, job_id: int, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/api/jobs/{job_id}").json()
            if job["status"] in ("completed", "failed", "cancelled"):
                if job["status"] != "completed":
                    raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
                return job
            time.sleep(0.01)
        raise TimeoutError(job_id)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(20)
        self.proc.stdout.close()
        shutil.rmtree(self.home, ignore_errors=True)


def daemon_fetch(url: str, sha: str, connections: int) -> dict[str, float]:
    d = Daemon(connections=connections, workers=1)
    try:
        cpu0, _ = proc_stats(d.proc.pid)
        started = time.perf_counter()
        job = d.client.post(
            "/api/download", json={"url": url, "model_type": "bench", "sha256": sha}
        ).json()
        done = d.wait(job["id"])
        wall = time.perf_counter() - started
        cpu1, hwm = proc_stats(d.proc.pid)
        assert done["sha256"] == sha
        return {"wall": wall, "cpu": cpu1 - cpu0, "rss_mb": hwm}
    finally:
        d.stop()


def aria2c(out: Path, name: str, url: str, sha: str, *extra: str) -> dict[str, float]:
    return run_tool(
        [
            "aria2c",
            "-q",
            *extra,
            "--allow-overwrite=true",
            "--file-allocation=none",
            f"--checksum=sha-256={sha}",
            "-d",
            str(out),
            "-o",
            name,
            url,
        ]
    )


def measure(tools: dict, runs: int, target: Path) -> dict[str, dict[str, float]]:
    """Median of `runs` runs of each tool; the downloaded file is removed after each."""
    results = {}
    for label, fn in tools.items():
        samples = []
        for _ in range(runs):
            samples.append(fn())
            target.unlink(missing_ok=True)
        results[label] = median(samples)
    return results


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def scenario_large(work: Path, size: int, runs: int, rows: list) -> None:
    name = f"big-{size // MIB}.bin"
    sha = make_file(work / "files" / name, size)
    server = FileServer(work / "files").start()
    url = server.url(name)
    out = work / "out"
    out.mkdir(exist_ok=True)

    def curl_durable() -> dict[str, float]:
        # The same durability the daemon gives (fsync before "done"), for a fair comparison.
        started = time.perf_counter()
        r = run_tool(["curl", "-s", "-o", str(out / name), url])
        fd = os.open(out / name, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        return {**r, "wall": time.perf_counter() - started}

    tools = {
        "curl -o (no verification)": lambda: run_tool(["curl", "-s", "-o", str(out / name), url]),
        "curl -o, then fsync": curl_durable,
        "aria2c --checksum=sha-256": lambda: aria2c(out, name, url, sha),
        "daemon, connections 1 (with SHA256)": lambda: daemon_fetch(url, sha, 1),
        "daemon, connections 4 (with SHA256)": lambda: daemon_fetch(url, sha, 4),
    }
    results = measure(tools, runs, out / name)
    server.stop()
    curl = results["curl -o (no verification)"]["wall"]
    aria = results["aria2c --checksum=sha-256"]["wall"]
    for label, r in results.items():
        rows.append(
            [
                f"1. {size // MIB} MiB file: {label}",
                f"{r['wall']:.2f} s",
                f"{size / r['wall'] / MIB:.0f} MiB/s",
                f"{r['cpu']:.2f} s",
                f"{r['rss_mb']:.0f} MB",
                f"{r['wall'] / curl:.2f}× curl, {r['wall'] / aria:.2f}× aria2c",
            ]
        )


def scenario_capped(work: Path, runs: int, rows: list, cap: int = 20 * 1000 * 1000) -> None:
    size = 256 * MIB
    name = "capped.bin"
    sha = make_file(work / "files" / name, size)
    server = FileServer(work / "files", rate=cap).start()
    url = server.url(name)
    out = work / "out"
    tools = {
        "curl": lambda: run_tool(["curl", "-s", "-o", str(out / name), url]),
        "aria2c -x4 -s4": lambda: aria2c(out, name, url, sha, "-x4", "-s4", "-k1M"),
        "daemon, connections 1": lambda: daemon_fetch(url, sha, 1),
        "daemon, connections 4": lambda: daemon_fetch(url, sha, 4),
    }
    results = measure(tools, max(1, runs - 1), out / name)
    server.stop()
    one = results["daemon, connections 1"]["wall"]
    aria = results["aria2c -x4 -s4"]["wall"]
    curl = results["curl"]["wall"]
    for label, r in results.items():
        rows.append(
            [
                f"2. 256 MiB, {cap // 1_000_000} MB/s per connection: {label}",
                f"{r['wall']:.2f} s",
                f"{size / r['wall'] / MIB:.0f} MiB/s",
                f"{r['cpu']:.2f} s",
                f"{r['rss_mb']:.0f} MB",
                f"{one / r['wall']:.2f}× conn-1 speed, {r['wall'] / aria:.2f}× aria2c, {r['wall'] / curl:.2f}× curl",
            ]
        )


def scenario_small(rows: list, count: int = 1000) -> None:
    with FakeCivitai() as fake:
        for i in range(count):
            fake.add_simple(
                10_000 + i,
                20_000 + i,
                f"small file {i}".encode() * 20,
                filename=f"s{i}.safetensors",
            )
        d = Daemon(civitai_base_url=fake.base_url, workers=4)
        try:
            started = time.perf_counter()
            batch = [{"modelVersionId": 20_000 + i, "model_type": "lora"} for i in range(count)]
            r = d.client.post("/api/batch", json=batch, timeout=600).json()
            queued = time.perf_counter() - started
            ids = [j["id"] for j in r["jobs"]]
            while (
                d.client.get("/api/jobs", params={"status": "completed", "limit": 1}).json()[
                    "total"
                ]
                < count
            ):
                time.sleep(0.05)
            wall = time.perf_counter() - started
            cpu, hwm = proc_stats(d.proc.pid)
        finally:
            d.stop()
    assert len(ids) == count
    rows.append(
        [
            f"3. {count} small files (fake Civitai, 4 workers)",
            f"{wall:.2f} s",
            f"{count / wall:.0f} jobs/s",
            f"{cpu:.2f} s",
            f"{hwm:.0f} MB",
            f"batch accepted in {queued:.2f} s",
        ]
    )


def scenario_load(work: Path, rows: list) -> None:
    from websockets.sync.client import connect

    size = 768 * MIB
    names = []
    for i in range(4):
        name = f"load-{i}.bin"
        names.append((name, make_file(work / "files" / name, size)))
    make_file(work / "files" / "tiny.bin", 1000)
    server = FileServer(work / "files").start()
    d = Daemon(workers=4, connections=4)
    status_ms, ws_ms = [], []
    try:
        ws = connect(d.base.replace("http", "ws") + f"/ws/downloads?token={d.token}").__enter__()
        ws.recv()
        jobs = [
            d.client.post(
                "/api/download", json={"url": server.url(n), "model_type": "load", "sha256": s}
            ).json()
            for n, s in names
        ]
        time.sleep(0.5)
        got: dict[int, float] = {}
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                try:
                    msg = json.loads(ws.recv(timeout=0.5))
                except TimeoutError:
                    continue
                except Exception:
                    return
                if msg.get("type") == "job" and msg["job"]["status"] == "queued":
                    got.setdefault(msg["job"]["id"], time.perf_counter())

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        for i in range(150):
            t0 = time.perf_counter()
            d.client.get("/api/status")
            status_ms.append((time.perf_counter() - t0) * 1000)
            if i % 5 == 0:  # WebSocket delivery: a new job's "queued" message
                t0 = time.perf_counter()
                job = d.client.post(
                    "/api/download",
                    json={
                        "url": server.url("tiny.bin") + f"?n={i}",
                        "model_type": "tiny",
                        "filename": f"t{i}.bin",
                    },
                ).json()
                while job["id"] not in got and time.perf_counter() - t0 < 5:
                    time.sleep(0.0005)
                ws_ms.append((got.get(job["id"], time.perf_counter()) - t0) * 1000)
            time.sleep(0.01)
        busy = sum(
            1 for j in jobs if d.client.get(f"/api/jobs/{j['id']}").json()["status"] != "completed"
        )
        stop.set()
        ws.close()
    finally:
        d.stop()
        server.stop()
    q = statistics.quantiles
    rows.append(
        [
            "4. GET /api/status under 4 large downloads",
            f"p50 {statistics.median(status_ms):.1f} ms",
            f"p99 {q(status_ms, n=100)[98]:.1f} ms",
            "",
            "",
            f"{busy} of 4 downloads still running at the end",
        ]
    )
    rows.append(
        [
            "4. WebSocket delivery (POST → queued message)",
            f"p50 {statistics.median(ws_ms):.1f} ms",
            f"p99 {q(ws_ms, n=100)[98]:.1f} ms",
            "",
            "",
            f"{len(ws_ms)} samples",
        ]
    )


def scenario_updates(rows: list, count: int = 5000) -> None:
    from civitai import CivitaiClient
    from daemon import DownloadQueue
    from database import Store
    from events import EventBus
    from settings import Settings
    from updater.checker import check_updates

    with FakeCivitai() as fake:
        entries = []
        for i in range(count):
            fake.add_simple(100_000 + i, 200_000 + i, b"x", filename=f"u{i}.safetensors")
            entries.append(
                {"modelId": 100_000 + i, "modelVersionId": 200_000 + i, "model_type": "lora"}
            )
        for i in range(0, count, 500):  # ten of them have a new version
            fake.publish_version(100_000 + i, fake.version(300_000 + i, [b"new"]))
        home = Path(tempfile.mkdtemp(prefix="bench-updates-"))
        (home / "manifest.json").write_text(json.dumps(entries))
        settings = Settings(home=home, civitai_base_url=fake.base_url)

        async def check() -> tuple[float, object]:
            store = Store(home / "data" / "completed.db")
            await store.open()
            async with httpx.AsyncClient(timeout=60) as http:
                civitai = CivitaiClient(settings, http)
                queue = DownloadQueue(settings, store, EventBus(), civitai, http)
                started = time.perf_counter()
                result = await check_updates(
                    settings, store, civitai, queue, EventBus(), asyncio.Lock()
                )
                wall = time.perf_counter() - started
            await store.close()
            return wall, result

        wall, result = asyncio.run(check())
        shutil.rmtree(home, ignore_errors=True)
    rows.append(
        [
            f"5. update check, {count} tracked models",
            f"{wall:.2f} s",
            f"{result.requests} API requests",
            "",
            "",
            f"{result.checked} checked, {len(result.updates)} updates found",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument(
        "--big", action="store_true", help="also the 4 GiB file (RSS independent of size)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="1,2,3,4,5")
    args = parser.parse_args()
    for tool in ("curl", "aria2c"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed: apt-get install curl aria2")
    only = set(args.only.split(","))
    work = Path(os.environ.get("BENCH_TMP", tempfile.gettempdir())) / "civitai-bench"
    (work / "files").mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = []
    if "1" in only:
        scenario_large(work, args.size_mib * MIB, args.runs, rows)
        if args.big:
            scenario_large(work, 4096 * MIB, 1, rows)
    if "2" in only:
        scenario_capped(work, args.runs, rows)
    if "3" in only:
        scenario_small(rows)
    if "4" in only:
        scenario_load(work, rows)
    if "5" in only:
        scenario_updates(rows)
    header = ["scenario", "wall (median)", "rate", "CPU", "peak RSS", "compared"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    machine = (
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}"
    )
    text = (
        f"Benchmark ({machine}; `uv run python bench/run.py {' '.join(sys.argv[1:])}`)\n\n"
        + "\n".join(lines)
    )
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
