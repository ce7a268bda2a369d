"""The running daemon's address, kept in its home as `data/daemon.json` so the CLI finds it.

launch.py writes it (atomically) once the port is bound and removes it on a clean stop; a
`kill -9` or a crash leaves it behind, so a reader checks that its process still runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import safefs
from settings import local_url

NAME = "daemon.json"


@dataclass(frozen=True)
class DaemonRecord:
    pid: int
    port: int
    host: str
    url: str
    started: str  # ISO 8601 UTC


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_path(home: Path) -> Path:
    return home / "data" / NAME


def write(home: Path, host: str, port: int) -> DaemonRecord:
    """Record this process as the home's running daemon."""
    record = DaemonRecord(os.getpid(), port, host, local_url(host, port), _now())
    text = json.dumps(asdict(record), indent=2) + "\n"
    safefs.write_atomic(record_path(home), text.encode("utf-8"), None)
    return record


def remove(home: Path) -> None:
    """Forget the record at a clean stop, unless another process has written its own since."""
    record = read(home)
    if record is not None and record.pid == os.getpid():
        record_path(home).unlink(missing_ok=True)


def read(home: Path) -> DaemonRecord | None:
    """The record as written, or None when there is none or it cannot be read."""
    try:
        data = json.loads(record_path(home).read_text(encoding="utf-8"))
        return DaemonRecord(
            int(data["pid"]),
            int(data["port"]),
            str(data["host"]),
            str(data["url"]),
            data["started"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_running(pid: int) -> bool:
    """Whether a process with this id exists (a stale record's pid may have been reused, but the
    CLI then fails to connect and says so)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user (a service account)
    return True
