"""A program on a port that is not the daemon: it records every byte it receives and answers each
HTTP request as its test says (real sockets, so the CLI is tested as it really connects)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

RESET = b"<reset>"  # answer: close the connection with a TCP reset instead of answering
CLOSE = b""  # answer: close the connection without a word
CUT = b"<cut>"  # at the end of an answer: close the connection once it is sent

Answer = Callable[[str, str, bytes], bytes]  # (method, target, request bytes) -> the reply


def reply(status: int, body: bytes | str, content_type: str = "application/json") -> bytes:
    body = body.encode() if isinstance(body, str) else body
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class StandIn:
    """Listens on `host`:`port` (0: a free port) until closed; `received` holds every byte."""

    def __init__(self, answer: Answer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.answer = answer
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.requests: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def seen(self) -> bytes:
        with self._lock:
            return bytes(self.received)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket, buffered: bytes) -> tuple[bytes, bytes] | None:
        data = buffered
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            with self._lock:
                self.received += chunk
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            with self._lock:
                self.received += chunk
            rest += chunk
        return head + b"\r\n\r\n" + rest[:length], rest[length:]

    def _serve(self, conn: socket.socket) -> None:
        buffered = b""
        with conn:
            while True:
                try:
                    got = self._read_request(conn, buffered)
                except OSError:
                    return
                if got is None:
                    return
                request, buffered = got
                method, target = request.split(b" ", 2)[:2]
                self.requests.append(f"{method.decode()} {target.decode()}")
                out = self.answer(method.decode(), target.decode(), request)
                if out == RESET:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if out == CLOSE:
                    return
                try:
                    conn.sendall(out.removesuffix(CUT))
                except OSError:
                    return
                if out.endswith(CUT):
                    return
