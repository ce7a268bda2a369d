"""How the benchmark measures: each tool as its own process, the page cache, the machine.

Every external tool runs under GNU `/usr/bin/time -f %M,%e,%U,%S` (written to a file of its own),
so its peak RSS and CPU are those of the tool alone, never of this script. The daemon is read
from /proc: CPU of the whole process (every thread, plus reaped children) and VmHWM.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
GIB = 1024 * MIB
TIME = "/usr/bin/time"


@dataclass
class Sample:
    """One run of one tool."""

    wall: float  # seconds, perf_counter around the whole run
    cpu: float  # user + system seconds of the tool's own process
    rss_mb: float  # peak resident set of the tool's own process, MB (MiB)
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    rows: list[list[str]] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, *cells: str) -> None:
        self.rows.append(list(cells))

    def target(self, text: str, met: bool, value: str) -> None:
        self.targets.append(f"- target {text}: {'met' if met else 'MISSED'} ({value})")


def need_gnu_time() -> None:
    if not Path(TIME).is_file():
        sys.exit(
            f"{TIME} (GNU time) is needed to measure each tool as its own process: "
            "apt-get install time"
        )


def run_timed(cmd: list[str]) -> Sample:
    """Run `cmd` under GNU time; its own peak RSS (%M, KiB) and CPU (%U + %S)."""
    with tempfile.NamedTemporaryFile("r", prefix="bench-time-", suffix=".txt") as report:
        started = time.perf_counter()
        proc = subprocess.run(
            [TIME, "-o", report.name, "-f", "%M,%e,%U,%S", *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-500:]!r}")
        last = report.read().strip().splitlines()[-1]
    rss_kib, _elapsed, user, system = (float(x) for x in last.split(","))
    return Sample(wall=wall, cpu=user + system, rss_mb=rss_kib / 1024)


def proc_cpu(pid: int) -> float:
    """CPU seconds of a whole process so far: every thread (utime, stime) and reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


def proc_hwm_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of a process, MB (MiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def self_rss_mb() -> float:
    """This script's own peak RSS: what a parent-including measurement would have reported."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PageCache:
    """Keep runs independent: each output is written to a fresh file, and after the run it is
    fsynced (not timed), dropped from the page cache with posix_fadvise(DONTNEED) and unlinked,
    so no tool pays for the previous tool's writeback. The source file stays cached for all.
    With `drop_all`, also `echo 1 > /proc/sys/vm/drop_caches` (root only; affects the whole
    machine) before each run, then the source is read back into the cache."""

    def __init__(self, drop_all: bool) -> None:
        self.drop_all = drop_all
        self.global_drop = "not used (pass --drop-caches)"
        if drop_all:
            try:
                Path("/proc/sys/vm/drop_caches").write_text("1\n")
                self.global_drop = "used before each run (root)"
            except OSError as exc:
                self.drop_all = False
                self.global_drop = f"refused ({exc.strerror}); fadvise only"

    def describe(self) -> str:
        return (
            "each output a fresh file; after each run fsync (untimed) + "
            f"posix_fadvise(DONTNEED) + unlink; global drop_caches: {self.global_drop}; "
            "source files stay in the page cache for every tool alike"
        )

    def before(self, target: Path | None, sources: list[Path]) -> None:
        if target is not None:
            target.unlink(missing_ok=True)
        if self.drop_all:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("1\n")
            for src in sources:
                warm(src)

    @staticmethod
    def after(target: Path) -> float:
        """fsync, drop and unlink the output; returns the seconds the fsync took."""
        if not target.exists():
            return 0.0
        fd = os.open(target, os.O_RDONLY)
        try:
            started = time.perf_counter()
            os.fsync(fd)
            took = time.perf_counter() - started
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        target.unlink()
        return took


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(8 * MIB):
            pass


def median(values: list[float]) -> float:
    return statistics.median(values)


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """'median (min–max)' of per-round values."""
    m = fmt.format(median(values))
    if len(values) == 1:
        return m
    return f"{m} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "missing"
    return out.splitlines()[0] if out else "unknown"


def _disk_of(path: Path) -> str:
    """Device, filesystem and whether it spins, for the folder the files live in."""
    best = ("?", "?", "")
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mnt, fs = line.split()[:3]
        if (resolved == mnt or resolved.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
            best[2]
        ):
            best = (dev, fs, mnt)
    dev, fs, _ = best
    kind = ""
    name = re.sub(r"^/dev/", "", dev)
    rotational = Path(f"/sys/class/block/{name}/queue/rotational")
    if not rotational.exists():
        rotational = Path(f"/sys/class/block/{re.sub(r'p?[0-9]+$', '', name)}/queue/rotational")
    if rotational.exists():
        kind = ", rotational" if rotational.read_text().strip() == "1" else ", non-rotational"
    return f"{dev} ({fs}{kind})"


def machine(work: Path) -> list[str]:
    """Lines describing where the run happened."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    ram = f"{int(mem[1]) / 1024 / 1024:.1f} GiB" if mem else "?"
    aria = _first_line(["aria2c", "--version"])
    curl = " ".join(_first_line(["curl", "--version"]).split()[:2])
    return [
        f"CPU: {model[1] if model else platform.processor()}, {os.cpu_count()} cores; RAM {ram}",
        f"kernel {platform.release()}; work dir {work} on {_disk_of(work)}",
        f"Python {sys.version.split()[0]}; {curl}; {aria}",
        f"GNU time at {shutil.which('time') or TIME}",
    ]
