"""Benchmarks, side by side with curl and aria2c on the same machine, in one run.

    .venv/bin/python bench/run.py [--rounds 5] [--big] [--only 1,2,3,4,5,6] [--quick] [--drop-caches]

1. one large file: curl -o (no verification), aria2c -x1 / -x4 --checksum, daemon with
   connections 1 and 4 (SHA256), and the machine's limits: curl -o /dev/null and openssl's SHA256
   of the file; interleaved round by round; ratios to curl and to the limits per round
2. a server capping each connection (fileserver.py --rate): daemon connections 4 vs 1 vs aria2c
3. many small files through the fake Civitai: jobs per second, end to end
4. responsiveness while 4 large downloads run: /api/status, WebSocket status-change delivery
5. /api/batch of 2000 entries with 0 and 200 WebSocket clients reading
6. update checks for 5000 tracked models: requests made, wall time
Prints one Markdown table and a line per target; also writes bench/results/latest.md.
Needs curl, aria2c, openssl and GNU time: apt-get install curl aria2 openssl time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import responsiveness  # noqa: E402
from bench.daemon_process import Daemon  # noqa: E402
from bench.fileserver import FileServer  # noqa: E402
from bench.measure import (  # noqa: E402
    GIB,
    MIB,
    PageCache,
    Report,
    Sample,
    machine,
    median,
    need_gnu_time,
    p99,
    run_timed,
    self_rss_mb,
    spread,
)
from bench.queue_scenarios import scenario_batch, scenario_small, scenario_updates  # noqa: E402

RESULTS = REPO / "bench" / "results"
HOW_TOOL = "own process: GNU time %M, %U+%S"
HOW_DAEMON = "daemon process: /proc VmHWM, CPU of all threads over the job; wall POST → WS"


def make_file(path: Path, size: int) -> str:
    """A file of `size` pseudo-random bytes; returns its SHA256 (cached beside it)."""
    cache = path.with_suffix(".sha256")
    if path.exists() and path.stat().st_size == size and cache.exists():
        return cache.read_text().strip()
    block = os.urandom(min(size, 64 * MIB))
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


Tool = Callable[[], Sample]


def interleave(tools: dict[str, Tool], rounds: int) -> dict[str, list[Sample]]:
    """Round by round, every tool once, the order rotated each round."""
    names = list(tools)
    samples: dict[str, list[Sample]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(tools[name]())
    return samples


def ratios(samples: dict[str, list[Sample]], a: str, b: str) -> list[float]:
    """Per round: wall of `a` / wall of `b`."""
    return [x.wall / y.wall for x, y in zip(samples[a], samples[b], strict=True)]


def tool_runner(cache: PageCache, target: Path | None, sources: list[Path], cmd: list[str]) -> Tool:
    def run() -> Sample:
        cache.before(target, sources)
        sample = run_timed(cmd)
        sample.extra["fsync"] = cache.after(target) if target is not None else 0.0
        return sample

    return run


def daemon_runner(
    cache: PageCache, sources: list[Path], url: str, sha: str, connections: int
) -> Tool:
    def run() -> Sample:
        with Daemon(connections=connections, workers=1) as d:
            d.open_feed()
            cache.before(None, sources)
            return d.fetch({"url": url, "model_type": "bench", "sha256": sha}, cache)

    return run


def aria2c(out: Path, name: str, url: str, sha: str, conns: int) -> list[str]:
    return [
        "aria2c",
        "-q",
        f"-x{conns}",
        f"-s{conns}",
        "-k1M",
        "--allow-overwrite=true",
        "--file-allocation=none",
        f"--checksum=sha-256={sha}",
        "-d",
        str(out),
        "-o",
        name,
        url,
    ]


LARGE = {
    "curl": "curl -s -o (no verification)",
    "null": "curl -s -o /dev/null (the network's limit)",
    "sha": "openssl dgst -sha256 of the cached file (the hash's limit)",
    "aria1": "aria2c -x1 -s1 --checksum=sha-256",
    "aria4": "aria2c -x4 -s4 --checksum=sha-256",
    "d1": "daemon, connections 1 (SHA256)",
    "d4": "daemon, connections 4 (SHA256)",
}


def scenario_large(
    work: Path, size: int, rounds: int, cache: PageCache, report: Report
) -> dict[str, list[Sample]]:
    name = f"big-{size // MIB}.bin"
    source = work / "files" / name
    sha = make_file(source, size)
    out = work / "out"
    out.mkdir(exist_ok=True)
    server = FileServer(work / "files").start()
    url = server.url(name)
    try:
        tools = {
            "curl": tool_runner(
                cache, out / name, [source], ["curl", "-s", "-o", str(out / name), url]
            ),
            "null": tool_runner(cache, None, [source], ["curl", "-s", "-o", os.devnull, url]),
            "sha": tool_runner(cache, None, [source], ["openssl", "dgst", "-sha256", str(source)]),
            "aria1": tool_runner(cache, out / name, [source], aria2c(out, name, url, sha, 1)),
            "aria4": tool_runner(cache, out / name, [source], aria2c(out, name, url, sha, 4)),
            "d1": daemon_runner(cache, [source], url, sha, 1),
            "d4": daemon_runner(cache, [source], url, sha, 4),
        }
        samples = interleave(tools, rounds)
    finally:
        server.stop()
    pairs = {"curl": None, "aria1": "d1", "aria4": "d4", "d1": "aria1", "d4": "aria4"}
    for key, label in LARGE.items():
        s = samples[key]
        other = pairs.get(key)
        if key in ("null", "sha"):
            vs = f"{spread(ratios(samples, key, 'curl'))}× curl; a limit for the daemon's time"
        elif other is None:
            fsync = median([x.extra["fsync"] for x in s])
            vs = f"the reference; an fsync of its file afterwards took {fsync:.2f} s more"
        else:
            vs = (
                f"{spread(ratios(samples, key, 'curl'))}× curl; "
                f"{spread(ratios(samples, key, other))}× {LARGE[other]}"
            )
        transfer_row(report, f"1. {size // MIB} MiB: {label}", key, s, size, vs)
    return samples


def transfer_row(report: Report, label: str, key: str, s: list, size: int, compared: str) -> None:
    """One table row for a tool's runs of a file transfer: medians (and spread) of its rounds."""
    report.row(
        label,
        spread([x.wall for x in s]) + " s",
        f"{size / median([x.wall for x in s]) / MIB:.0f} MiB/s",
        f"{median([x.cpu for x in s]):.2f} s",
        f"{max(x.rss_mb for x in s):.0f} MB",
        compared,
        HOW_DAEMON if key.startswith("d") else HOW_TOOL,
    )


def scenario_capped(
    work: Path, size: int, rounds: int, cap: int, cache: PageCache, report: Report
) -> list[float]:
    name = f"capped-{size // MIB}.bin"
    source = work / "files" / name
    sha = make_file(source, size)
    out = work / "out"
    out.mkdir(exist_ok=True)
    server = FileServer(work / "files", rate=cap).start()
    url = server.url(name)
    try:
        tools = {
            "aria4": tool_runner(cache, out / name, [source], aria2c(out, name, url, sha, 4)),
            "d1": daemon_runner(cache, [source], url, sha, 1),
            "d4": daemon_runner(cache, [source], url, sha, 4),
        }
        samples = interleave(tools, rounds)
    finally:
        server.stop()
    speedup = [1 / r for r in ratios(samples, "d4", "d1")]
    for key in ("aria4", "d1", "d4"):
        s = samples[key]
        up = spread([1 / r for r in ratios(samples, key, "d1")])
        compared = {
            "aria4": f"{up}× the speed of daemon connections 1",
            "d1": "the reference for the speed-up",
            "d4": f"{up}× the speed of connections 1; "
            f"{spread(ratios(samples, key, 'aria4'))}× aria2c -x4's time",
        }[key]
        label = f"2. {size // MIB} MiB, {cap / 1e6:.0f} MB/s per connection: {LARGE[key]}"
        transfer_row(report, label, key, s, size, compared)
    return speedup


def scenario_load(work: Path, size: int, calls: int, report: Report) -> responsiveness.LoadResult:
    name = f"big-{size // MIB}.bin"
    sha = make_file(work / "files" / name, size)
    make_file(work / "files" / "tiny.bin", 1000)
    server = FileServer(work / "files").start()
    try:
        result = responsiveness.under_load(server, name, sha, calls)
    finally:
        server.stop()
    full = sum(1 for b in result.busy if b >= responsiveness.LOAD_JOBS) / len(result.busy)
    report.row(
        "4. GET /api/status under 4 downloads × 4 connections",
        f"p50 {median(result.status_ms):.1f} ms",
        f"p99 {p99(result.status_ms):.1f} ms",
        "",
        "",
        f"{len(result.status_ms)} calls; 4 downloads running at {full:.0%} of them "
        f"(fewest {min(result.busy)}); {result.downloads} downloads of {size // MIB} MiB in all",
        "perf_counter around each call, one client",
    )
    report.row(
        "4. WebSocket status change (queued, cancelled) under the same load",
        f"p50 {median(result.ws_ms):.1f} ms",
        f"p99 {p99(result.ws_ms):.1f} ms",
        "",
        "",
        f"{len(result.ws_ms)} changes; from the call's start: p50 {median(result.ws_call_ms):.1f} ms, "
        f"p99 {p99(result.ws_call_ms):.1f} ms",
        "API call's return → `job` message on a WS client (0 if it came first)",
    )
    return result


def to_limit(samples: dict[str, list[Sample]], key: str) -> list[float]:
    """Per round: wall of `key` / max(curl to /dev/null, SHA256 of the file), the limit when
    the download and the hash overlap perfectly."""
    return [
        x.wall / max(n.wall, h.wall)
        for x, n, h in zip(samples[key], samples["null"], samples["sha"], strict=True)
    ]


def large_targets(report: Report, label: str, samples: dict[str, list[Sample]], size: int) -> None:
    gib = size / GIB
    d1 = ratios(samples, "d1", "curl")
    report.target(
        f"{label} verified, 1 connection ≤ 1.3× curl's unverified time",
        median(d1) <= 1.3,
        f"{spread(d1)}×; connections 4: {spread(ratios(samples, 'd4', 'curl'))}×",
    )
    for key in ("d1", "d4"):
        limit = to_limit(samples, key)
        report.target(
            f"{label} verified ≤ 1.25× max(curl to /dev/null, SHA256 of the file) ({LARGE[key]})",
            median(limit) <= 1.25,
            f"{spread(limit)}×",
        )
    four = ratios(samples, "d4", "d1")
    report.target(
        f"{label} on loopback: connections 4 no slower than connections 1",
        median(four) <= 1.0,
        f"{spread(four)}× the time of connections 1",
    )
    for key in ("d1", "d4"):
        extra = [(d.cpu - c.cpu) / gib for d, c in zip(samples[key], samples["curl"], strict=True)]
        report.target(
            f"{label} CPU-seconds per verified GiB ≤ curl's + 0.8 s ({LARGE[key]})",
            median(extra) <= 0.8,
            f"curl's {spread(extra, '{:+.2f}')} s; daemon {median([d.cpu for d in samples[key]]) / gib:.2f} "
            f"s/GiB, curl {median([c.cpu for c in samples['curl']]) / gib:.2f} s/GiB",
        )
    rss = {k: max(x.rss_mb for x in samples[k]) for k in LARGE}
    report.target(
        f"{label} peak RSS ≤ 200 MB (daemon, connections 1 and 4)",
        max(rss["d1"], rss["d4"]) <= 200,
        ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="the large file (1, 4)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (1, 2)")
    parser.add_argument("--big", action="store_true", help="also a 4 GiB file, --big-rounds")
    parser.add_argument("--big-rounds", type=int, default=1)
    parser.add_argument("--capped-mib", type=int, default=256)
    parser.add_argument("--cap-mb", type=float, default=20, help="MB/s per connection (2)")
    parser.add_argument("--small", type=int, default=1000, help="small files (3)")
    parser.add_argument("--status-calls", type=int, default=500, help="(4)")
    parser.add_argument("--batch", type=int, default=2000, help="batch entries (5)")
    parser.add_argument("--clients", type=int, default=200, help="WebSocket clients (5)")
    parser.add_argument("--updates", type=int, default=5000, help="tracked models (6)")
    parser.add_argument("--only", default="1,2,3,4,5,6")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.md", help="also written here")
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 rounds (a test)")
    parser.add_argument(
        "--drop-caches",
        action="store_true",
        help="also drop the whole page cache before each run (root; affects the whole machine)",
    )
    args = parser.parse_args()
    if args.quick:
        # the daemon splits only files of 64 MiB or more, so the capped file stays at 64
        args.size_mib, args.rounds, args.capped_mib, args.cap_mb = 64, 2, 64, 50
        args.small, args.status_calls, args.batch, args.clients, args.updates = (
            100,
            60,
            200,
            20,
            500,
        )
        args.big = False
    for tool in ("curl", "aria2c", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed: apt-get install curl aria2 openssl")
    need_gnu_time()
    only = set(args.only.split(","))
    work = Path(os.environ.get("BENCH_TMP", tempfile.gettempdir())) / "civitai-bench"
    (work / "files").mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    started = time.time()
    cache = PageCache(args.drop_caches)
    report = Report()
    size = args.size_mib * MIB
    if "1" in only:
        report.notes.append(f"1: {os.getloadavg()[0]:.2f}")
        samples = scenario_large(work, size, args.rounds, cache, report)
        large_targets(report, f"{args.size_mib} MiB", samples, size)
        if args.big:
            big = scenario_large(work, 4096 * MIB, args.big_rounds, cache, report)
            large_targets(report, "4 GiB", big, 4096 * MIB)
    if "2" in only:
        report.notes.append(f"2: {os.getloadavg()[0]:.2f}")
        cap = int(args.cap_mb * 1_000_000)
        speedup = scenario_capped(work, args.capped_mib * MIB, args.rounds, cap, cache, report)
        report.target(
            "capped server: connections 4 ≥ 3.5× the speed of connections 1",
            median(speedup) >= 3.5,
            f"{spread(speedup)}×",
        )
    if "3" in only:
        report.notes.append(f"3: {os.getloadavg()[0]:.2f}")
        rate = scenario_small(args.small, report)
        report.target("≥ 50 small jobs/s (earlier issue)", rate >= 50, f"{rate:.0f} jobs/s")
    if "4" in only:
        report.notes.append(f"4: {os.getloadavg()[0]:.2f}")
        load = scenario_load(work, size, args.status_calls, report)
        report.target(
            "GET /api/status p99 ≤ 50 ms under 4 downloads",
            p99(load.status_ms) <= 50,
            f"p99 {p99(load.status_ms):.1f} ms",
        )
        report.target(
            "WebSocket status-change delivery p99 ≤ 100 ms under 4 downloads",
            p99(load.ws_ms) <= 100,
            f"p99 {p99(load.ws_ms):.1f} ms",
        )
    if "5" in only:
        report.notes.append(f"5: {os.getloadavg()[0]:.2f}")
        results = scenario_batch(args.batch, args.clients, report)
        crowded = results[-1]
        report.target(
            f"/api/batch of {args.batch} answers in ≤ 2 s with {args.clients} WebSocket clients",
            crowded.answer_s <= 2,
            f"{crowded.answer_s:.2f} s; without clients {results[0].answer_s:.2f} s",
        )
    if "6" in only:
        report.notes.append(f"6: {os.getloadavg()[0]:.2f}")
        requests = scenario_updates(args.updates, report)
        limit = max(1, args.updates // 100)
        report.target(
            f"{args.updates} tracked models in ≤ {limit} requests (earlier issue)",
            requests <= limit,
            f"{requests} requests",
        )
    report.row(
        "(this script itself, for reference)",
        f"{time.time() - started:.0f} s",
        "",
        "",
        f"{self_rss_mb():.0f} MB",
        "what a wait4 of its children would have wrongly added to theirs",
        "getrusage(RUSAGE_SELF)",
    )
    print(render(args, report, work, cache, load_start))


def render(
    args: argparse.Namespace, report: Report, work: Path, cache: PageCache, load_start: tuple
) -> str:
    header = [
        "scenario",
        "wall",
        "rate",
        "CPU",
        "peak RSS",
        "compared (median of rounds, min–max)",
        "measured by",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in report.rows]
    load_end = os.getloadavg()
    options = (
        f"rounds {args.rounds} (tools interleaved, order rotated each round), large file "
        f"{args.size_mib} MiB{' + 4096 MiB × ' + str(args.big_rounds) if args.big else ''}, capped "
        f"{args.capped_mib} MiB at {args.cap_mb:g} MB/s per connection, {args.small} small files, "
        f"{args.status_calls} status calls, batch {args.batch} with {args.clients} clients, "
        f"{args.updates} tracked models, scenarios {args.only}"
    )
    text = "\n".join(
        [
            f"## Benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}",
            "",
            *(f"- {m}" for m in machine(work)),
            f"- load average (1, 5, 15 min) at start {_load(load_start)}, at end {_load(load_end)}",
            f"- command: `bench/run.py {' '.join(sys.argv[1:])}`; {options}",
            f"- page cache: {cache.describe()}",
            f"- 1-minute load average as each scenario began: {', '.join(report.notes)}",
            "- walls: perf_counter in this script around each run (the daemon's: from its POST to "
            "the `completed` message on its WebSocket; its start-up is not counted); CPU per tool: "
            "its own user+system (daemon: whole process, all threads, over the job only)",
            "",
            *lines,
            "",
            *report.targets,
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return text


def _load(avg: tuple) -> str:
    return ", ".join(f"{x:.2f}" for x in avg)


if __name__ == "__main__":
    main()
