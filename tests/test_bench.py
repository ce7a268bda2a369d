"""bench/run.py --quick, run as a user runs it: every row and target line is printed, and each
tool's peak RSS is its own (a measurement that included the script would show the script's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

ROWS = [
    "1. 64 MiB: curl -s -o (no verification)",
    "1. 64 MiB: curl -s -o /dev/null (the network's limit)",
    "1. 64 MiB: openssl dgst -sha256 of the cached file (the hash's limit)",
    "1. 64 MiB: aria2c -x1 -s1 --checksum=sha-256",
    "1. 64 MiB: aria2c -x4 -s4 --checksum=sha-256",
    "1. 64 MiB: daemon, connections 1 (SHA256)",
    "1. 64 MiB: daemon, connections 4 (SHA256)",
    "2. 64 MiB, 50 MB/s per connection: aria2c -x4 -s4 --checksum=sha-256",
    "2. 64 MiB, 50 MB/s per connection: daemon, connections 1 (SHA256)",
    "2. 64 MiB, 50 MB/s per connection: daemon, connections 4 (SHA256)",
    "3. 100 small files (fake Civitai, 4 workers)",
    "4. GET /api/status under 4 downloads × 4 connections",
    "4. WebSocket status change (queued, cancelled) under the same load",
    "5. POST /api/batch, 200 entries, 0 WebSocket clients reading",
    "5. POST /api/batch, 200 entries, 20 WebSocket clients reading",
    "6. update check, 500 tracked models",
    "(this script itself, for reference)",
]
TARGETS = [
    "64 MiB verified, 1 connection ≤ 1.3× curl's unverified time",
    "64 MiB CPU-seconds per verified GiB ≤ curl's + 0.8 s (daemon, connections 1 (SHA256))",
    "64 MiB CPU-seconds per verified GiB ≤ curl's + 0.8 s (daemon, connections 4 (SHA256))",
    "64 MiB verified ≤ 1.25× max(curl to /dev/null, SHA256 of the file)"
    " (daemon, connections 1 (SHA256))",
    "64 MiB verified ≤ 1.25× max(curl to /dev/null, SHA256 of the file)"
    " (daemon, connections 4 (SHA256))",
    "64 MiB on loopback: connections 4 no slower than connections 1",
    "64 MiB peak RSS ≤ 200 MB (daemon, connections 1 and 4)",
    "capped server: connections 4 ≥ 3.5× the speed of connections 1",
    "GET /api/status p99 ≤ 50 ms under 4 downloads",
    "WebSocket status-change delivery p99 ≤ 100 ms under 4 downloads",
    "/api/batch of 200 answers in ≤ 2 s with 20 WebSocket clients",
]


def cells(table: str, label: str) -> list[str]:
    for line in table.splitlines():
        parts = [c.strip() for c in line.strip().strip("|").split("|")]
        if parts[0] == label:
            return parts
    raise AssertionError(f"no row {label!r} in:\n{table}")


def rss_mb(cell: str) -> float:
    m = re.fullmatch(r"(\d+) MB", cell)
    assert m, cell
    return float(m[1])


def test_quick_benchmark_prints_every_row_and_measures_each_tool_as_its_own_process(
    tmp_path: Path,
) -> None:
    out = tmp_path / "latest.md"
    env = {**os.environ, "BENCH_TMP": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    assert out.read_text().strip() == table.strip()
    assert re.search(r"^## Benchmark, \d{4}-\d\d-\d\d", table, re.M)
    for fact in (
        "CPU: ",
        "cores; RAM",
        "kernel ",
        "Python ",
        "curl ",
        "aria2 version",
        "load average",
    ):
        assert fact in table, fact
    for label in ROWS:
        cells(table, label)
    for target in TARGETS:
        assert re.search(rf"^- target {re.escape(target)}: (met|MISSED) \(.+\)$", table, re.M), (
            target
        )
    script = rss_mb(cells(table, "(this script itself, for reference)")[4])
    for tool in ROWS[:3]:
        own = rss_mb(cells(table, tool)[4])
        assert 0 < own < 30, f"{tool}: {own} MB (the script itself is {script} MB)"
    assert script > 30  # so a measurement that included the script could not pass the line above
