"""The live feed: auth, snapshot, ordered job messages, updates, slow and many clients."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import wait_for, wait_job

ORDER = ["queued", "downloading", "verifying", "completed"]


def ws_url(d, token: str | None = None) -> str:
    base = d.base_url.replace("http://", "ws://") + "/ws/downloads"
    return f"{base}?token={token}" if token else base


def messages_until(ws, predicate, timeout: float = 20) -> list[dict]:
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        got.append(msg)
        if predicate(msg):
            return got
    raise AssertionError(f"no matching message in {timeout}s; got {got[-5:]}")


@pytest.mark.parametrize("token", [None, "wrong-key"])
def test_without_auth_the_socket_closes_with_4401(civitai, daemon, token):
    d = daemon()
    with connect(ws_url(d, token)) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4401
    d.stop()


def test_snapshot_then_every_status_change_in_order(civitai, daemon):
    civitai.add_simple(1, 10, b"x" * 3_000_000, filename="a.safetensors")
    civitai.add_simple(2, 20, b"y" * 3_000_000, filename="b.safetensors")
    civitai.default_rate = 6_000_000
    d = daemon(workers=1)
    with d.client() as c:
        first = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        with connect(ws_url(d, d.token)) as ws:
            snapshot = json.loads(ws.recv(timeout=5))
            assert snapshot["type"] == "snapshot"
            assert [j["id"] for j in snapshot["jobs"]] == [first["id"]]
            second = c.post(
                "/api/download", json={"modelVersionId": 20, "model_type": "lora"}
            ).json()
            got = messages_until(
                ws,
                lambda m: (
                    m.get("job", {}).get("id") == second["id"] and m["job"]["status"] == "completed"
                ),
            )
    for job_id in (first["id"], second["id"]):
        statuses = [
            m["job"]["status"] for m in got if m["type"] == "job" and m["job"]["id"] == job_id
        ]
        changes = [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]
        assert changes == sorted(changes, key=ORDER.index) and changes[-1] == "completed"
    second_statuses = [m["job"]["status"] for m in got if m["job"]["id"] == second["id"]]
    assert second_statuses[0] == "queued"
    progress = [
        m["job"]
        for m in got
        if m["job"]["id"] == second["id"] and m["job"]["status"] == "downloading"
    ]
    assert len(progress) >= 2 and progress[-1]["bytes_done"] >= progress[0]["bytes_done"]
    # At most about 4 progress messages a second: 3 MB at 6 MB/s is half a second.
    assert len(progress) <= 8
    d.stop()


def test_cookie_session_opens_the_feed(civitai, daemon):
    import httpx

    d = daemon()
    login = httpx.post(d.url("/gui/login"), data={"key": d.token})
    cookie = login.cookies["civitai_session"]
    with connect(ws_url(d), additional_headers={"Cookie": f"civitai_session={cookie}"}) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "snapshot"
    d.stop()


def test_foreign_origin_is_refused_on_the_socket(civitai, daemon):
    d = daemon()
    from websockets.exceptions import InvalidStatus

    with (
        pytest.raises(InvalidStatus),
        connect(ws_url(d, d.token), origin="https://evil.example.com"),
    ):
        pass
    with connect(ws_url(d, d.token), origin=d.base_url) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "snapshot"
    d.stop()


def test_update_messages_reach_the_feed(civitai, daemon, home):
    civitai.add_simple(1, 10, b"old")
    (home / "manifest.json").write_text(json.dumps([{"modelId": 1, "model_type": "lora"}]))
    d = daemon()
    with d.client() as c:
        from tests.conftest import wait_for

        wait_for(lambda: c.get("/api/jobs?status=completed").json()["total"] == 1, 20)
        civitai.publish_version(1, civitai.version(11, [b"new"]))
        with connect(ws_url(d, d.token)) as ws:
            ws.recv(timeout=5)
            c.post("/api/updates/check")
            got = messages_until(ws, lambda m: m["type"] == "update")
    assert got[-1]["update"]["new_version_id"] == 11 and got[-1]["update"]["modelId"] == 1
    d.stop()


def test_a_client_that_never_reads_slows_nothing_and_many_clients_all_hear(civitai, daemon):
    size = 40 * 1024 * 1024
    civitai.add_simple(1, 10, bytes(size), filename="big.safetensors")
    d = daemon(connections=1)
    # A client that connects and then never reads: its socket buffers fill up.
    stuck = socket.create_connection(("127.0.0.1", d.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(
        (
            f"GET /ws/downloads?token={d.token} HTTP/1.1\r\nHost: 127.0.0.1:{d.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    with contextlib.ExitStack() as stack:
        listeners = [stack.enter_context(connect(ws_url(d, d.token))) for _ in range(10)]
        for ws in listeners:
            assert json.loads(ws.recv(timeout=5))["type"] == "snapshot"
        with d.client() as c:
            started = time.monotonic()
            job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
            wait_job(c, job["id"], timeout=60)
            elapsed = time.monotonic() - started
            assert c.get("/api/health").status_code == 200
        for ws in listeners:
            messages_until(ws, lambda m: m.get("job", {}).get("status") == "completed", timeout=10)
    stuck.close()
    assert elapsed < 15
    d.stop()


class RawFeed:
    """A WebSocket client on a bare socket with a small receive window, that reads only when
    asked: while it does not, the daemon's socket buffers fill up and its messages wait."""

    def __init__(self, d) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        self.sock.connect(("127.0.0.1", d.port))
        self.sock.sendall(
            (
                f"GET /ws/downloads?token={d.token} HTTP/1.1\r\nHost: 127.0.0.1:{d.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the daemon closed the connection")
        return chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def next(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame (the server's frames are never masked). A ping
        is answered as soon as it is read, as a browser does: the server's keepalive closes a
        socket whose pings go unanswered (1011), which is not what this client is testing."""
        b0, b1 = self._take(2)
        size = b1 & 0x7F
        if size == 126:
            size = int.from_bytes(self._take(2), "big")
        elif size == 127:
            size = int.from_bytes(self._take(8), "big")
        opcode, payload = b0 & 0x0F, self._take(size)
        if opcode == 9:
            self._send(10, payload)
        return opcode, payload

    def _send(self, opcode: int, payload: bytes) -> None:
        """One frame from the client: short (under 126 bytes, as control frames are), masked."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        self.sock.close()


def test_a_slow_client_still_gets_every_status_change(civitai, daemon):
    """A client that stops reading while 400 status changes happen gets all of them later,
    in order: progress may be dropped for it, status changes never."""
    jobs = 100
    for n in range(jobs):
        # Long names make each message ~60 kB: the daemon's socket buffers (a few MB) fill
        # early, and more status changes wait than the 256 a client's queue holds before its
        # progress messages are dropped. Few jobs, so all is read well within the server's
        # keepalive (a ping every 20 s, answered once the client reads).
        f = civitai.file(n.to_bytes(2, "big") * 1000, name=f"m{n}.safetensors")
        civitai.add_model(
            100 + n, f"Model {n} " + "x" * 60_000, "LORA", [civitai.version(1000 + n, [f])]
        )
    d = daemon(workers=2)
    feed = RawFeed(d)
    try:
        opcode, snapshot = feed.next()
        assert opcode == 1 and json.loads(snapshot)["type"] == "snapshot"
        with d.client() as c:
            batch = [{"modelVersionId": 1000 + n, "model_type": "lora"} for n in range(jobs)]
            ids = {j["id"] for j in c.post("/api/batch", json=batch).json()["jobs"]}
            completed = lambda: c.get("/api/jobs?status=completed").json()["total"] == jobs  # noqa: E731
            wait_for(completed, 60, 0.2, "every job to complete")
        statuses: dict[int, list[str]] = {i: [] for i in ids}
        done: set[int] = set()
        feed.sock.settimeout(5)  # all was sent long ago: 5 s of silence means nothing is left
        while done != ids:
            try:
                opcode, payload = feed.next()
            except TimeoutError:
                break
            assert opcode in (1, 9), (opcode, payload[2:].decode(errors="replace"))
            msg = json.loads(payload) if opcode == 1 else {}
            if msg.get("type") == "job" and msg["job"]["id"] in ids:
                seen = statuses[msg["job"]["id"]]
                if not seen or seen[-1] != msg["job"]["status"]:
                    seen.append(msg["job"]["status"])
                if msg["job"]["status"] == "completed":
                    done.add(msg["job"]["id"])
    finally:
        feed.close()
    lost = {i: s for i, s in statuses.items() if s != ORDER}
    assert not lost, f"{len(lost)} of {jobs} jobs lost status changes: {list(lost.items())[:3]}"
    d.stop()
