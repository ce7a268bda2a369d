"""A real nginx (Debian's /usr/sbin/nginx) in front of the daemon, with TLS on a high port,
configured with the README's own `server` block so the README cannot drift from what is tested.

Unprivileged: run as root, the test drops nginx to `nobody` before exec; its prefix (config,
certificate, logs, temp files) is a folder of its own that user owns.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
README = Path(__file__).resolve().parent.parent / "README.md"
SERVER_NAME = "models.example.net"  # the README's; the browser maps it to 127.0.0.1
README_PORT = "443"
README_UPSTREAM = "127.0.0.1:8137"
README_CERT = f"/etc/letsencrypt/live/{SERVER_NAME}/fullchain.pem"
README_KEY = f"/etc/letsencrypt/live/{SERVER_NAME}/privkey.pem"


def readme_nginx_blocks() -> list[str]:
    """Every ```nginx fenced block of the README, as written."""
    return re.findall(r"^```nginx\n(.*?)^```$", README.read_text(), re.M | re.S)


def readme_block(location: str) -> str:
    """The README's nginx block that serves `location` (`/` or `/civitai/`)."""
    found = [b for b in readme_nginx_blocks() if f"location {location} {{" in b]
    assert len(found) == 1, f"README.md should have one ```nginx block with `location {location}`"
    return found[0]


def substitute(block: str, port: int, upstream: int, cert: Path, key: Path) -> str:
    """Only the port, the upstream port and the certificate paths change."""
    for old, count in ((f"listen {README_PORT} ", 1), (README_UPSTREAM, 1)):
        assert block.count(old) == count, f"the README block no longer has {old!r} once:\n{block}"
    assert README_CERT in block and README_KEY in block, block
    return (
        block.replace(f"listen {README_PORT} ", f"listen {port} ")
        .replace(README_UPSTREAM, f"127.0.0.1:{upstream}")
        .replace(README_CERT, str(cert))
        .replace(README_KEY, str(key))
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """`with Nginx(readme_block("/"), upstream=8137) as n: n.url("/gui")`."""

    def __init__(self, server_block: str, upstream: int) -> None:
        assert Path(NGINX).exists(), f"{NGINX} is missing: apt-get install nginx"
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="nginx-test-"))
        self.cert, self.key = self.prefix / "cert.pem", self.prefix / "key.pem"
        self._make_certificate()
        server = substitute(server_block, self.port, upstream, self.cert, self.key)
        (self.prefix / "nginx.conf").write_text(self._conf(server))
        self.proc: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        return f"https://{SERVER_NAME}:{self.port}{path}"

    def _make_certificate(self) -> None:
        """A self-signed certificate for the README's server name (`openssl req`)."""
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                *("-subj", f"/CN={SERVER_NAME}", "-addext", f"subjectAltName=DNS:{SERVER_NAME}"),
                *("-keyout", str(self.key), "-out", str(self.cert)),
            ],
            check=True,
            capture_output=True,
        )

    def _conf(self, server: str) -> str:
        temp = "\n".join(
            f"    {kind}_temp_path {self.prefix / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            "worker_processes 1;\nevents { worker_connections 256; }\nhttp {\n"
            f"    access_log {self.prefix / 'access.log'};\n{temp}\n{server}\n}}\n"
        )

    def _drop_privileges(self) -> None:
        nobody = pwd.getpwnam("nobody")
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    def start(self, timeout: float = 20) -> Nginx:
        root = os.geteuid() == 0
        if root:
            nobody = pwd.getpwnam("nobody")
            for p in [self.prefix, *self.prefix.iterdir()]:
                os.chown(p, nobody.pw_uid, nobody.pw_gid)
        globals_ = f"daemon off; pid {self.prefix / 'nginx.pid'}; error_log {self.error_log};"
        self.proc = subprocess.Popen(
            [NGINX, "-e", str(self.error_log), "-p", str(self.prefix)]
            + ["-c", str(self.prefix / "nginx.conf"), "-g", globals_],
            preexec_fn=self._drop_privileges if root else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited {self.proc.returncode}: {self.errors()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nginx did not listen on {self.port} in {timeout} s: {self.errors()}")

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def access_log(self) -> str:
        return (self.prefix / "access.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
