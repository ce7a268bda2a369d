"""A completed file reached the disk before it took its name: the daemon, run under strace, fsyncs
the `.part` after its last write and before it is linked (or renamed) into place, with each of
the three ways of writing a file (one stream, Range parts, a swap over an old version's name)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from run_tests import STRACE_FIX
from tests.conftest import assert_file_is, run_job, sha256_file

CALLS = "fsync,fdatasync,write,pwrite64,pwritev,pwritev2,link,linkat,rename,renameat,renameat2"


def strace() -> str:
    found = shutil.which("strace")
    assert found, f"this test runs the daemon under strace, which is missing: {STRACE_FIX}"
    return found


def events(trace: Path, part: str, final: str) -> list[str]:
    """What happened to `part`, in order: "write", "fsync" (each one that returned 0) and
    "placed" (a link or rename of `part` to `final`)."""
    seen: list[str] = []
    pending: dict[str, str] = {}  # pid → the file of its unfinished call
    for line in trace.read_text(errors="replace").splitlines():
        pid = line.split(" ", 1)[0]
        if "<unfinished ...>" in line:
            if m := re.search(r"(\w+)\(\d+<([^>]*)>", line):
                pending[pid] = m.group(2)
            continue
        if re.search(r"\b(link|linkat|rename|renameat2?)\(", line) and part in line:
            if final in line.split(part, 1)[1] and line.rstrip().endswith("= 0"):
                seen.append("placed")
            continue
        m = re.search(r"(?:<\.\.\. (\w+) resumed>|(\w+)\((\d+)<([^>]*)>).*= (-?\d+)", line)
        if not m:
            continue
        call = m.group(1) or m.group(2)
        path = pending.pop(pid, "") if m.group(1) else m.group(4)
        if path != part or int(m.group(5)) < 0:
            continue
        if call in ("fsync", "fdatasync"):
            seen.append("fsync")
        elif call.startswith(("write", "pwrite")):
            seen.append("write")
    return seen


@pytest.mark.parametrize(("connections", "size"), [(1, 3_000_000), (4, 70 * 1024 * 1024)])
def test_a_completed_file_is_fsynced_after_its_last_write_and_before_it_takes_its_name(
    civitai, daemon, tmp_path, connections, size
):
    data = os.urandom(size)
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    trace = tmp_path / "strace.log"
    wrap = [strace(), "-f", "-y", "-qq", "-o", str(trace), "-e", f"trace={CALLS}"]
    d = daemon(wrap=wrap, connections=connections, save_metadata=False)
    job = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, timeout=120)
    # A SIGTERM to strace would only detach it: stop the daemon itself; strace ends with it.
    os.kill(json.loads((d.home / "data" / "daemon.json").read_text())["pid"], signal.SIGTERM)
    assert d.proc.wait(20) == 0
    assert_file_is(job["path"], sha256_file_of(data, tmp_path))
    happened = events(trace, job["path"] + ".part", job["path"])
    assert "placed" in happened, f"no link or rename of the .part into place in {trace}"
    before = happened[: happened.index("placed")]
    assert "write" in before, f"no write of the .part was seen in {trace}"
    last_write = len(before) - 1 - before[::-1].index("write")
    assert "fsync" in before[last_write:], (
        "the .part was linked into place without an fsync after its last write: "
        + " ".join(before[-6:] + ["placed"])
    )


def sha256_file_of(data: bytes, tmp_path: Path) -> str:
    copy = tmp_path / "expected.bin"
    copy.write_bytes(data)
    return sha256_file(copy)
