"""A fast loopback file server for the benchmarks: Range, ETag, sendfile, optional per-connection cap.

python bench/fileserver.py DIR [--port N] [--rate BYTES_PER_S]
"""

from __future__ import annotations

import argparse
import re
import socket
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit


class FileServer:
    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, rate: int | None = None):
        self.root = root
        self.rate = (
            rate  # bytes/s per connection (as CDNs cap each stream); None = as fast as possible
        )
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(256)
        self.host, self.port = self.sock.getsockname()[:2]
        self.stopping = False
        self.bytes_sent = 0
        self.requests = 0
        self.lock = threading.Lock()

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"

    def start(self) -> FileServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping = True
        self.sock.close()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        try:
            while not self.stopping:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
                }
                with self.lock:
                    self.requests += 1
                if not self._respond(conn, method, target, headers):
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _respond(
        self, conn: socket.socket, method: str, target: str, headers: dict[str, str]
    ) -> bool:
        path = self.root / unquote(urlsplit(target).path).lstrip("/")
        if not path.is_file() or self.root not in path.resolve().parents:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return True
        size = path.stat().st_size
        etag = f'"{size:x}-{int(path.stat().st_mtime):x}"'
        start, end, status = 0, size - 1, "200 OK"
        extra = ""
        rng = headers.get("range")
        if rng and headers.get("if-range", etag) == etag:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
            if m:
                start = int(m[1])
                if start >= size:
                    conn.sendall(
                        f"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\n\r\n".encode()
                    )
                    return True
                end = min(int(m[2]), size - 1) if m[2] else size - 1
                status = "206 Partial Content"
                extra = f"Content-Range: bytes {start}-{end}/{size}\r\n"
        length = end - start + 1
        conn.sendall(
            (
                f"HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\n"
                f"Accept-Ranges: bytes\r\nETag: {etag}\r\n{extra}"
                f'Content-Disposition: attachment; filename="{path.name}"\r\n\r\n'
            ).encode()
        )
        if method == "HEAD":
            return True
        with open(path, "rb") as f:
            if self.rate is None:
                sent = conn.sendfile(f, offset=start, count=length)
            else:
                sent = self._send_capped(conn, f, start, length)
        with self.lock:
            self.bytes_sent += sent
        return sent == length

    def _send_capped(self, conn: socket.socket, f, start: int, length: int) -> int:
        assert self.rate
        chunk = max(16384, self.rate // 50)
        sent, began = 0, time.monotonic()
        while sent < length and not self.stopping:
            n = conn.sendfile(f, offset=start + sent, count=min(chunk, length - sent))
            if n == 0:
                break
            sent += n
            ahead = sent / self.rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
        return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--rate", type=int)
    args = parser.parse_args()
    server = FileServer(Path(args.root).resolve(), port=args.port, rate=args.rate).start()
    print(f"serving {args.root} at http://127.0.0.1:{server.port}/", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
