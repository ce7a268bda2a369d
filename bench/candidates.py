"""Candidate byte paths for one file, each reading + SHA256 + pwrite to a fresh file, vs curl.

    python bench/candidates.py [--size-mib 1024] [--rounds 3] [--only a,b,c]

Each candidate runs in a process of its own (wall and CPU from wait4), against bench/fileserver.py
run as another process; the rounds interleave the candidates so that load drifts hit them alike.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MIB = 1024 * 1024
BUF = MIB


def stdlib_inline(url: str, out: str) -> str:
    """(b) http.client, one thread: readinto a preallocated 1 MiB buffer, hash, pwrite."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", u.path)
    resp = conn.getresponse()
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    sha = hashlib.sha256()
    buf = bytearray(BUF)
    view = memoryview(buf)
    offset = 0
    while True:
        n = resp.readinto(view)
        if not n:
            break
        chunk = view[:n]
        sha.update(chunk)
        w = 0
        while w < n:
            w += os.pwrite(fd, chunk[w:], offset + w)
        offset += n
    os.fsync(fd)
    os.close(fd)
    return sha.hexdigest()


def stdlib_pipelined(url: str, out: str, slots: int = 4) -> str:
    """(d1) http.client reader thread + a hashing/writing thread, over a ring of 1 MiB buffers."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", u.path)
    resp = conn.getresponse()
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    sha = hashlib.sha256()
    free: queue.Queue[memoryview] = queue.Queue()
    full: queue.Queue[tuple[memoryview, int, int] | None] = queue.Queue()
    for _ in range(slots):
        free.put(memoryview(bytearray(BUF)))

    def writer() -> None:
        while (item := full.get()) is not None:
            view, n, offset = item
            chunk = view[:n]
            sha.update(chunk)
            w = 0
            while w < n:
                w += os.pwrite(fd, chunk[w:], offset + w)
            free.put(view)

    t = threading.Thread(target=writer)
    t.start()
    offset = 0
    while True:
        view = free.get()
        n = resp.readinto(view)
        if not n:
            break
        full.put((view, n, offset))
        offset += n
    full.put(None)
    t.join()
    os.fsync(fd)
    os.close(fd)
    return sha.hexdigest()


def httpx_sync(url: str, out: str) -> str:
    """(c) httpx's sync client, iter_raw (httpcore reads 64 KiB at a time), hash, pwrite."""
    import httpx

    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    sha = hashlib.sha256()
    offset = 0
    with httpx.Client(timeout=30) as client, client.stream("GET", url) as r:
        for chunk in r.iter_raw(BUF):
            sha.update(chunk)
            os.pwrite(fd, chunk, offset)
            offset += len(chunk)
    os.fsync(fd)
    os.close(fd)
    return sha.hexdigest()


def pycurl_write(url: str, out: str) -> str:
    """(d2) pycurl (libcurl), WRITEFUNCTION hashing and pwriting each block it hands over."""
    import pycurl

    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    sha = hashlib.sha256()
    state = {"offset": 0}

    def write(data: bytes) -> None:
        sha.update(data)
        os.pwrite(fd, data, state["offset"])
        state["offset"] += len(data)

    c = pycurl.Curl()
    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.BUFFERSIZE, 512 * 1024)
    c.setopt(pycurl.WRITEFUNCTION, write)
    c.perform()
    c.close()
    os.fsync(fd)
    os.close(fd)
    return sha.hexdigest()


CANDIDATES = {
    "b": ("stdlib http.client readinto, 1 thread", stdlib_inline, None),
    "c": ("httpx sync iter_raw", httpx_sync, None),
    "d1": ("stdlib readinto + hash/write thread", stdlib_pipelined, None),
    "d2": ("pycurl WRITEFUNCTION", pycurl_write, os.environ.get("PYCURL_PYTHON")),
}


def run(cmd: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out = proc.stdout.read().decode().strip()
    err = proc.stderr.read().decode()
    if status:
        raise RuntimeError(f"{cmd} failed: {err[-800:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "out": out}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default="curl,a,b,c,d1,d2")
    p.add_argument("--one", nargs=3, metavar=("KEY", "URL", "OUT"))
    args = p.parse_args()
    if args.one:
        key, url, out = args.one
        print(CANDIDATES[key][1](url, out))
        return

    from bench.run import daemon_fetch, make_file

    work = Path(os.environ.get("BENCH_TMP") or tempfile.gettempdir()) / "bench-candidates"
    (work / "files").mkdir(parents=True, exist_ok=True)
    name = f"big-{args.size_mib}.bin"
    sha = make_file(work / "files" / name, args.size_mib * MIB)
    server = subprocess.Popen(
        [sys.executable, str(REPO / "bench/fileserver.py"), str(work / "files"), "--port", "8097"],
        stdout=subprocess.PIPE,
    )
    server.stdout.readline()
    url = f"http://127.0.0.1:8097/{name}"
    out = work / "out.bin"
    keys = args.only.split(",")
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in keys}
    try:
        for r in range(args.rounds):
            for key in keys:
                out.unlink(missing_ok=True)
                if key == "curl":
                    s = run(["curl", "-s", "-o", str(out), url])
                elif key == "a":
                    s = daemon_fetch(url, sha, 1)
                else:
                    py = CANDIDATES[key][2] or sys.executable
                    s = run([py, __file__, "--one", key, url, str(out)])
                    assert s["out"] == sha, (key, s["out"])
                samples[key].append(s)
                print(f"round {r} {key}: wall {s['wall']:.2f} s, cpu {s['cpu']:.2f} s", flush=True)
    finally:
        server.terminate()
        out.unlink(missing_ok=True)
    curl = {k: statistics.median(s[k] for s in samples["curl"]) for k in ("wall", "cpu")}
    print("\n| candidate | wall (median) | CPU (median) | wall ratio vs curl | CPU - curl's |")
    print("|---|---|---|---|---|")
    for key in keys:
        w = statistics.median(s["wall"] for s in samples[key])
        c = statistics.median(s["cpu"] for s in samples[key])
        label = (
            "curl -s -o"
            if key == "curl"
            else ("daemon today" if key == "a" else CANDIDATES[key][0])
        )
        ratios = [s["wall"] / samples["curl"][i]["wall"] for i, s in enumerate(samples[key])]
        print(
            f"| {key}: {label} | {w:.2f} s | {c:.2f} s | {statistics.median(ratios):.2f}× "
            f"(per round {', '.join(f'{x:.2f}' for x in ratios)}) | {c - curl['cpu']:+.2f} s |"
        )


if __name__ == "__main__":
    main()
