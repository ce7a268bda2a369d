"""The byte path on its own threads: stopping, progress hand-over, HTTPS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

import errors
from engine.transfer import run_together
from tests.conftest import assert_file_is, run_async, wait_for, wait_job
from tests.fake_civitai import FakeCivitai
from tests.test_downloads import MB, blob, sha


def test_cancel_stops_every_connection_of_the_job_within_a_second(civitai, daemon, home):
    data = blob(72 * MB)  # above 64 MiB: four parts, four connections
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    civitai.default_rate = 1 * MB  # per connection: the transfer is mid-way at the cancel
    d = daemon(connections=4)
    part = home / "data/models/lora/m.safetensors.part"
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: civitai.open_connections["cdn"] == 4, what="four CDN connections")
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["bytes_done"] > 0)
        cancelled = c.post(f"/api/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        wait_for(
            lambda: civitai.open_connections["cdn"] == 0,
            timeout=1.0,
            interval=0.01,
            what="the CDN connections to close after the cancel",
        )
        sent = civitai.bytes_sent
        time.sleep(0.5)  # nothing to await: bytes that do NOT flow
        assert civitai.bytes_sent == sent
        assert not part.exists()
        assert c.get(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"
    d.stop()


def test_sigterm_mid_transfer_exits_0_and_the_next_start_resumes_exactly(civitai, daemon, home):
    data = blob(80 * MB)
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    civitai.default_rate = 2 * MB
    d = daemon(connections=4)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["bytes_done"] > 8 * MB)
    started = time.monotonic()
    assert d.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - started < 10
    assert civitai.open_connections["cdn"] == 0 or wait_for(
        lambda: civitai.open_connections["cdn"] == 0, timeout=1.0, what="connections closed"
    )
    sent_before = civitai.bytes_sent
    civitai.default_rate = None
    d.start()
    with d.client() as c:
        done = wait_job(c, job["id"], timeout=60)
    assert done["sha256"] == sha(data)
    assert_file_is(home / "data/models/lora/m.safetensors", sha(data))
    # The resume asks only for what was not committed: at most a quarter second per
    # connection (2 MB/s x 4 connections x 0.25 s = 2 MB) is fetched twice.
    assert civitai.bytes_sent - len(data) <= 3 * MB, (civitai.bytes_sent, sent_before)
    d.stop()


def test_progress_reaches_the_feed_at_most_about_4_times_a_second_per_job(civitai, daemon):
    civitai.add_simple(1, 10, blob(6 * MB, 1), filename="a.safetensors")
    civitai.add_simple(2, 20, blob(6 * MB, 2), filename="b.safetensors")
    civitai.default_rate = 2 * MB  # three seconds each, side by side
    d = daemon(workers=2, connections=1)
    url = d.base_url.replace("http://", "ws://") + f"/ws/downloads?token={d.token}"
    progress: dict[int, list[float]] = {}
    done: set[int] = set()
    with d.client() as c, connect(url) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "snapshot"
        ids = [
            c.post("/api/download", json={"modelVersionId": v, "model_type": "lora"}).json()["id"]
            for v in (10, 20)
        ]
        deadline = time.monotonic() + 60
        while done != set(ids) and time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=deadline - time.monotonic()))
            job = msg.get("job") or {}
            if job.get("status") == "downloading" and job.get("bytes_done"):
                progress.setdefault(job["id"], []).append(time.monotonic())
            elif job.get("status") == "completed":
                done.add(job["id"])
    assert done == set(ids)
    for job_id in ids:
        times = progress[job_id]
        span = times[-1] - times[0]
        # Steady progress while the bytes flow, but coalesced: never one message per chunk.
        assert len(times) >= 4, times
        assert len(times) <= 4 * span + 2, (len(times), span)
    d.stop()


# HTTPS ------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the fake CDN's addresses, made with the openssl CLI."""
    cert, key = tmp_path / "cdn-cert.pem", tmp_path / "cdn-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=fake-cdn",
            "-addext", "subjectAltName=IP:127.0.0.2,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_civitai(certificate) -> FakeCivitai:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with FakeCivitai(tls=context) as fake:
        yield fake


def test_a_download_over_https_from_a_server_the_daemon_is_told_to_trust(
    tls_civitai, certificate, daemon_factory, home
):
    data = blob(3 * MB)
    tls_civitai.add_simple(1, 10, data, filename="m.safetensors")
    url = tls_civitai.signed_url(tls_civitai.models[1].versions[0].files[0])
    assert url.startswith("https://")
    home.joinpath("config.json").write_text(
        json.dumps({"civitai_base_url": tls_civitai.base_url, "allowed_hosts": ["127.0.0.2"]})
    )
    d = daemon_factory(home, env={"SSL_CERT_FILE": str(certificate[0])}).start()
    with d.client() as c:
        job = c.post("/api/download", json={"url": url, "model_type": "lora"}).json()
        done = wait_job(c, job["id"])
    assert done["sha256"] == sha(data)
    assert_file_is(done["path"], sha(data))
    d.stop()


def test_a_certificate_the_daemon_does_not_trust_fails_the_job_at_once_saying_so(
    tls_civitai, daemon_factory, home
):
    tls_civitai.add_simple(1, 10, blob(MB), filename="m.safetensors")
    url = tls_civitai.signed_url(tls_civitai.models[1].versions[0].files[0])
    home.joinpath("config.json").write_text(
        json.dumps(
            {"civitai_base_url": tls_civitai.base_url, "allowed_hosts": ["127.0.0.2"], "retries": 5}
        )
    )
    d = daemon_factory(home, env={"SSL_CERT_FILE": ""}).start()
    with d.client() as c:
        job = c.post("/api/download", json={"url": url, "model_type": "lora"}).json()
        failed = wait_job(c, job["id"], statuses=("failed",))
    assert failed["error"].startswith("The certificate of 127.0.0.2 is not trusted (")
    assert "SSL_CERT_FILE" in failed["error"]
    assert failed["attempts"] == 0  # no retry can fix it
    assert not Path(home / "data/models/lora/m.safetensors").exists()
    d.stop()


def thread_nices(pid: int) -> dict[int, int]:
    """Each thread of a process and its nice value, from /proc (field 19 of its stat)."""
    nices = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        nices[int(task.name)] = int(fields[16])
    return nices


def test_the_byte_path_yields_the_cpu_to_the_api_at_nice_10(civitai, daemon):
    data = blob(72 * MB)  # four parts: four transfer threads, a writer, a hasher, an fsync thread
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    civitai.default_rate = 1 * MB
    d = daemon(connections=4)
    pid = d.proc.pid
    before = thread_nices(pid)
    assert set(before.values()) == {0}, before  # nothing runs below the daemon's priority idle
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: civitai.open_connections["cdn"] == 4, what="four CDN connections")
        during = wait_for(
            lambda: (n := thread_nices(pid)) and list(n.values()).count(10) >= 6 and n,
            what="the transfer, writer and hasher threads at nice 10",
        )
        assert during[pid] == 0  # the main thread (the API's event loop) keeps its priority
        assert all(nice in (0, 10) for nice in during.values()), during
        c.post(f"/api/jobs/{job['id']}/cancel")


def test_civitai_itself_over_https_is_trusted_through_ssl_cert_file_too(
    certificate, daemon_factory, home
):
    """A private CA (a TLS-inspecting proxy, say) in front of Civitai's API and its CDN alike."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    data = blob(2 * MB)
    with FakeCivitai(tls=context, tls_api=True) as fake:
        fake.add_simple(1, 10, data, filename="m.safetensors")
        assert fake.base_url.startswith("https://")
        home.joinpath("config.json").write_text(
            json.dumps({"civitai_base_url": fake.base_url, "retries": 2})
        )
        d = daemon_factory(home, env={"SSL_CERT_FILE": str(certificate[0])}).start()
        with d.client() as c:
            job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
            assert job.status_code == 202, job.text
            assert job.json()["filename"] == "m.safetensors"  # resolved over https at once
            done = wait_job(c, job.json()["id"])
        assert_file_is(done["path"], sha(data))
        d.stop()


async def failing_part() -> None:
    raise errors.NetworkError("the connection broke")


async def part_slow_to_stop(
    stopped: list[str], delay: float, stopping: asyncio.Event | None = None
) -> None:
    """A part that takes `delay` seconds to stop once cancelled (a transfer thread ending)."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        if stopping is not None:
            stopping.set()
        await asyncio.sleep(delay)
        stopped.append("slow")
        raise


def test_a_cancel_while_the_parts_stop_after_an_error_still_cancels():
    """One part fails; while another takes its time to stop (a transfer thread ending), the job
    is cancelled: the cancel wins, and only once every part has stopped."""
    stopped: list[str] = []

    async def scenario() -> str:
        stopping = asyncio.Event()
        parts = [failing_part(), part_slow_to_stop(stopped, 0.2, stopping)]
        task = asyncio.create_task(run_together(parts))
        await stopping.wait()  # the failure is in; the other part is stopping
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        except BaseException as exc:  # noqa: BLE001 - what the old TaskGroup let through
            return f"raised {type(exc).__name__}"
        return "returned"

    assert run_async(scenario()) == "cancelled"
    assert stopped == ["slow"]


def test_a_part_error_is_raised_once_the_other_parts_have_stopped():
    stopped: list[str] = []

    async def scenario() -> BaseException | None:
        try:
            await run_together([failing_part(), part_slow_to_stop(stopped, 0)])
        except BaseExceptionGroup as group:
            return group.exceptions[0]
        return None

    assert isinstance(run_async(scenario()), errors.NetworkError)
    assert stopped == ["slow"]


def test_a_stop_ends_the_hashers_catch_up_of_a_resumed_prefix_at_once(tmp_path):
    """A resume hashes what is already on disk; a cancel or stop must not wait for that."""
    from engine.transfer import Part
    from engine.writer import FileWriter

    path = tmp_path / "m.part"
    path.write_bytes(b"x" * (32 * MB))
    stop = threading.Event()
    for stopped, expected in ((True, 0), (False, 32 * MB)):
        part = Part(0, 0, 64 * MB - 1, done=32 * MB, written=32 * MB)
        writer = FileWriter(path, [part], "test", stop)
        writer.fd = os.open(path, os.O_RDONLY)
        (stop.set if stopped else stop.clear)()
        writer._catch_up()
        os.close(writer.fd)
        assert writer.hashed == expected


def test_a_low_cap_shared_by_many_downloads_is_not_taken_for_stalled_links(civitai, daemon):
    """9,000 B/s for ten downloads at once leaves each about 900 B/s, below the lowest speed a
    link may keep for `timeout` seconds: that is the throttle's doing, not a stall to retry."""
    data = {i: blob(12_000, seed=i) for i in range(10)}
    for i, content in data.items():
        civitai.add_simple(100 + i, 200 + i, content, filename=f"m{i}.safetensors")
    d = daemon(workers=10, throttle=9000, timeout=2)
    with d.client() as c:
        ids = [
            c.post("/api/download", json={"modelVersionId": 200 + i, "model_type": "lora"}).json()[
                "id"
            ]
            for i in data
        ]
        ends = [wait_job(c, job_id, timeout=60) for job_id in ids]
    assert [e["attempts"] for e in ends] == [0] * 10, [e["error"] for e in ends]
    for i, end in zip(data, ends, strict=True):
        assert_file_is(end["path"], sha(data[i]))
    assert "stalled" not in d.stderr_text()
    d.stop()


class _Body:
    """A response body of known bytes, read in socket-sized pieces (the pump's side of HTTP)."""

    def __init__(self, data: bytes, piece: int = 256 * 1024) -> None:
        self.data, self.at, self.piece = memoryview(data), 0, piece

    def readinto(self, view: memoryview) -> int:
        n = min(len(view), self.piece, len(self.data) - self.at)
        view[:n] = self.data[self.at : self.at + n]
        self.at += n
        return n


def _pump_file(path: Path, data: bytes, start: int, parts: int = 1) -> tuple[str, int, int]:
    """Write data[start:] into `path` through the byte path: the SHA256, the bytes written past
    the page cache, and the bytes the hasher read back from the file."""
    from engine.throttle import Throttle
    from engine.transfer import Part, pump
    from engine.writer import FileWriter

    part = Part(0, 0, len(data) - 1, done=start, written=start)
    others = [Part(i, len(data) + i, len(data) + i) for i in range(1, parts)]
    writer = FileWriter(path, [part, *others], "test", threading.Event())
    writer.open(None, fresh=start == 0)
    try:
        body = _Body(data[start:])
        pump(
            body,
            part,
            writer,
            throttle=Throttle(0),
            stop=threading.Event(),
            timeout=60,
            check_first=lambda _: None,
        )
        writer.parts = [part]  # only the one part holds bytes
        digest = writer.finish()
    finally:
        writer.close()
        writer.shutdown()
    return digest, writer.direct_bytes, writer.read_back


def test_one_stream_is_written_past_the_page_cache_and_hashed_from_memory(tmp_path):
    """O_DIRECT for aligned whole buffers, the cache for the tail; the file reads back exactly,
    and the hasher reads nothing back but a resumed prefix (it once re-read most of the file).
    A resume from an unaligned offset goes through the cache."""
    import hashlib

    from engine import writer

    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    try:
        os.close(os.open(probe, os.O_WRONLY | writer.O_DIRECT))
    except (OSError, AttributeError):
        pytest.fail(f"{tmp_path} must support O_DIRECT for this test (ext4, xfs, btrfs do)")
    data = os.urandom(3 * MB + 1000)
    path = tmp_path / "m.part"
    digest, direct, read_back = _pump_file(path, data, 0)
    assert digest == hashlib.sha256(data).hexdigest()
    assert path.read_bytes() == data
    assert direct == 3 * MB  # the 1000-byte tail went through the cache
    assert read_back == 0

    path.write_bytes(data[:12345])  # a resume mid-block: every write is unaligned
    digest, direct, read_back = _pump_file(path, data, 12345)
    assert (digest, direct) == (hashlib.sha256(data).hexdigest(), 0)
    # only the prefix: the first buffer, which came while it was still unhashed, waited for it
    assert read_back == 12345
    assert path.read_bytes() == data

    path.unlink()
    digest, direct, _ = _pump_file(path, data, 0, parts=2)
    assert direct == 3 * MB  # a file of several parts too
    assert path.read_bytes()[: len(data)] == data


def test_the_parts_of_a_file_start_on_block_boundaries_and_cover_it_exactly():
    """Every part starts aligned, so each can be written past the page cache (O_DIRECT); the
    parts are pieces small enough that every connection has one within the window."""
    from engine.transfer import DIRECT_ALIGN, WINDOW, piece_size, split

    for size in (64 * MB, 64 * MB + 1, 1_000_000_007, 4 * 1024 * MB - 3):
        for connections in (2, 3, 4, 8):
            parts = split(size, connections)
            assert parts[0].start == 0 and parts[-1].end == size - 1
            assert all(a.end + 1 == b.start for a, b in zip(parts, parts[1:], strict=False))
            assert all(p.start % DIRECT_ALIGN == 0 for p in parts), (size, connections)
            sizes = [p.end + 1 - p.start for p in parts]
            assert max(sizes) <= piece_size(connections)
            assert piece_size(connections) * connections < WINDOW
            assert min(sizes[:-1]) >= 2 * MB  # smaller toward the end, never tiny
            assert sizes[:-1] == sorted(sizes[:-1], reverse=True)
    first = split(1_000_000_007, 4)[0]
    parts = split(1_000_000_007, 4, first_end=first.end)
    assert all(p.start % DIRECT_ALIGN == 0 for p in parts)
    assert parts[-1].end == 1_000_000_006


def test_a_file_of_two_parts_is_hashed_from_memory_when_the_second_arrives_first(tmp_path):
    """The second part arrives first (as when its connection is faster); the hasher holds its
    buffers until the first has come and hashes both from memory: nothing is read back (it once
    read the second part back from the file)."""
    import hashlib

    from engine.throttle import Throttle
    from engine.transfer import Part, pump
    from engine.writer import FileWriter

    data = os.urandom(6 * MB + 777)
    mid = 3 * MB
    parts = [Part(0, 0, mid - 1), Part(1, mid, len(data) - 1)]
    path = tmp_path / "m.part"
    writer = FileWriter(path, parts, "test", threading.Event())
    writer.open(len(data), fresh=True)
    try:
        for part in (parts[1], parts[0]):
            body = _Body(data[part.start : part.end + 1])
            kw = {"throttle": Throttle(0), "stop": threading.Event(), "timeout": 60}
            pump(body, part, writer, **kw, check_first=lambda _: None)
        digest = writer.finish()
    finally:
        writer.close()
        writer.shutdown()
    assert digest == hashlib.sha256(data).hexdigest()
    assert path.read_bytes() == data
    assert writer.read_back == 0
    assert writer.held_most == 5  # the second part's 4 buffers, and the first one of the first
    assert writer.direct_bytes == 6 * MB  # all but the tail
