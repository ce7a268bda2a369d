"""The running daemon's address, kept in its home as `data/daemon.json` so the CLI finds it.

launch.py writes it (atomically) once the port is bound and removes it on a clean stop; a
`kill -9` or a crash leaves it behind, so a reader checks that its process still runs.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import safefs
from config.settings import local_url

NAME = "daemon.json"
MAX_SIZE = 64 * 1024
POSIX = os.name == "posix"


class Untrusted(Exception):
    """daemon.json is there, but someone other than its owner could have written it, or it names
    an address off this machine; the message says which."""


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
    # 0600 whatever the umask: the CLI refuses a record others could have written (002 umasks).
    safefs.write_atomic(record_path(home), text.encode("utf-8"), 0o600)
    return record


def remove(home: Path) -> None:
    """Forget the record at a clean stop, unless another process has written its own since."""
    record = read(home)
    if record is not None and record.pid == os.getpid():
        record_path(home).unlink(missing_ok=True)


def read(home: Path) -> DaemonRecord | None:
    """The record as written, or None when there is none or it cannot be read."""
    try:
        return parse(record_path(home).read_bytes())
    except OSError:
        return None


def parse(text: bytes) -> DaemonRecord | None:
    """The record in `text`, or None when it is not one."""
    try:
        data = json.loads(text)
        return DaemonRecord(
            int(data["pid"]),
            int(data["port"]),
            str(data["host"]),
            str(data["url"]),
            data["started"],
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def is_loopback(url: str) -> bool:
    """Whether `url` names this machine (localhost, 127.0.0.0/8, ::1)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_checked(home: Path, owners: set[int]) -> DaemonRecord | None:
    """The record, only from a regular file (not a link) owned by one of `owners` that only its
    owner may write, naming an address on this machine; None when there is no (readable) record;
    Untrusted when it is there but fails a check."""
    path = record_path(home)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Untrusted(f"{path} is a symbolic link") from None
        raise Untrusted(f"{path} cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise Untrusted(f"{path} is not a regular file")
        if POSIX and st.st_uid not in owners:
            raise Untrusted(f"{path} is owned by user {st.st_uid}, not by you or the home's owner")
        if POSIX and st.st_mode & 0o022:
            mode = oct(st.st_mode & 0o777)[2:]
            raise Untrusted(f"{path} is writable by other users (mode {mode})")
        record = parse(f.read(MAX_SIZE))
    if record is not None and not is_loopback(record.url):
        raise Untrusted(f"{path} names {record.url}, not a loopback address")
    return record


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
