"""The byte path of a file of several parts: pieces fetched in file order across connections,
the bytes ahead of the hash frontier held in a bounded window in memory, so the hasher never
reads the file back; a slow connection's piece is split so the others go on."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.conftest import assert_file_is, wait_for, wait_job
from tests.test_downloads import MB, blob, sha


def read_bytes(pid: int) -> int:
    """Bytes the process has made the kernel fetch from storage (/proc/PID/io read_bytes)."""
    text = Path(f"/proc/{pid}/io").read_text()
    return int(re.search(r"^read_bytes: (\d+)$", text, re.M)[1])


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB$", text, re.M)[1]) / 1024


def starts(ranges: list[str | None]) -> list[int]:
    return [int(re.fullmatch(r"bytes=(\d+)-\d*", r)[1]) for r in ranges if r]


def test_four_connections_hash_every_byte_from_memory_never_reading_the_file_back(civitai, daemon):
    """The parts are pieces taken in file order, so the hasher takes each from memory; it once
    read back from disk the three quarters of the file the other connections had fetched."""
    data = blob(96 * MB)
    civitai.add_simple(1, 10, data, filename="big.safetensors")
    d = daemon(connections=4, workers=1)
    before = read_bytes(d.proc.pid)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "checkpoint"})
        done = wait_job(c, job.json()["id"], timeout=120)
    read = read_bytes(d.proc.pid) - before
    assert read < 4 * MB, f"the daemon read {read} bytes from disk for a 96 MiB download"
    assert done["attempts"] == 0, done["error"]
    assert_file_is(done["path"], sha(data))
    pieces = civitai.requests_to("cdn", "/file")
    assert len(pieces) > 4  # several pieces per connection, each asked for once
    asked = starts([r.range for r in pieces])
    assert len(asked) == len(set(asked))
    d.stop()


def test_a_slow_connection_at_the_frontier_has_its_piece_split_and_memory_stays_bounded(
    civitai, daemon
):
    """The first piece comes at 0.5 MB/s while the others come at full speed: once the window
    ahead of it is full, another connection takes the upper half of what is left of it (a
    Range request inside the first piece), again while the window stays full; the file is
    whole and the daemon's peak RSS stays under 200 MB."""
    data = blob(96 * MB)
    civitai.add_simple(1, 10, data, filename="big.safetensors")
    civitai.fault("cdn", rate=512 * 1024)  # the first request: the first piece
    d = daemon(connections=4, workers=1)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "checkpoint"})
        done = wait_job(c, job.json()["id"], timeout=120)
    assert done["attempts"] == 0, done["error"]
    assert_file_is(done["path"], sha(data))
    ranges = [r.range for r in civitai.requests_to("cdn", "/file")]
    first_end = int(ranges[0].rsplit("-", 1)[1])
    stolen = [s for s in starts(ranges) if 0 < s <= first_end]
    assert stolen, f"no connection took over part of the slow first piece: {ranges}"
    assert peak_rss_mb(d.proc.pid) <= 200
    d.stop()


def test_the_bytes_held_ahead_of_a_stalled_frontier_stay_within_the_window(tmp_path, monkeypatch):
    """The first piece is held back (a stalled connection); three others fetch what the window
    lets them (8 MiB ahead of the hash frontier here) and then wait, holding at most that in
    memory; once the first piece comes, everything is hashed from memory."""
    import hashlib
    import threading

    from engine import pieces as pieces_mod
    from engine.throttle import Throttle
    from engine.transfer import BUFFER_SIZE, Part, pump
    from engine.writer import FileWriter
    from tests.test_transfer import _Body

    monkeypatch.setattr(pieces_mod, "STEAL_WAIT", 3600.0)  # the window alone bounds them here
    data = os.urandom(32 * MB)
    parts = [Part(i, i * 2 * MB, (i + 1) * 2 * MB - 1) for i in range(16)]
    stop = threading.Event()
    writer = FileWriter(tmp_path / "m.part", parts, "test", stop)
    writer.pieces = pieces_mod.Pieces(parts, window=8 * MB, connections=3)
    writer.open(len(data), fresh=True)
    kw = {"throttle": Throttle(0), "stop": stop, "timeout": 60, "check_first": lambda _: None}
    state = ["start"] * 3
    errors_seen: list[BaseException] = []

    def lane(n: int) -> None:
        try:
            while True:
                state[n] = "asking"
                part = writer.pieces.next_part(stop)
                if part is None:
                    state[n] = "done"
                    return
                state[n] = "pumping"
                pump(_Body(data[part.start : part.end + 1]), part, writer, **kw)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors_seen.append(exc)
            state[n] = "failed"

    front = writer.pieces.next_part(stop)
    assert front is parts[0]
    lanes = [threading.Thread(target=lane, args=(n,)) for n in range(3)]
    try:
        for t in lanes:
            t.start()
        wait_for(
            lambda: len(writer._held) >= 6 and all(s in ("asking", "done") for s in state),
            30,
            what="the other connections to fill the window and wait",
        )
        ahead = writer.held_most
        assert ahead * BUFFER_SIZE <= 8 * MB, f"{ahead} MiB held ahead of a stalled frontier"
        pump(_Body(data[: 2 * MB]), front, writer, **kw)
        for t in lanes:
            t.join(60)
        assert not errors_seen, errors_seen
        digest = writer.finish()
    finally:
        stop.set()
        for t in lanes:
            t.join(10)
        writer.close()
        writer.shutdown()
    assert digest == hashlib.sha256(data).hexdigest()
    assert writer.read_back == 0
    assert writer.held_most * BUFFER_SIZE <= 8 * MB
