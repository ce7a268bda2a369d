"""Shared fixtures: the fake Civitai, a home in tmp_path, and the daemon as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_civitai import FakeCivitai

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def civitai() -> Iterator[FakeCivitai]:
    with FakeCivitai() as fake:
        yield fake


def write_config(home: Path, **values: object) -> None:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(values)
    path.write_text(json.dumps(data, indent=2))


def read_config(home: Path) -> dict:
    return json.loads((home / "config.json").read_text())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh home with no config: the daemon writes its defaults."""
    h = tmp_path / "home"
    h.mkdir()
    return h


class DaemonProcess:
    """launch.py in a subprocess, the way a user runs it."""

    def __init__(
        self,
        home: Path,
        args: list[str] | None = None,
        env: dict | None = None,
        home_flag: bool = True,
    ):
        self.home = home
        self.home_flag = home_flag
        self.args = args or []
        self.env = {k: v for k, v in os.environ.items() if k != "CIVITAI_TOKEN"}
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.preexec = None  # runs in the child before exec (resource limits)
        self.gui_line = ""

    @property
    def command(self) -> list[str]:
        home = ["--home", str(self.home)] if self.home_flag else []
        return [sys.executable, str(REPO / "launch.py"), *home, *self.args]

    def start(self, wait: bool = True, timeout: float = 20) -> DaemonProcess:
        err = self._stderr_file()
        self.proc = subprocess.Popen(
            self.command,
            cwd=REPO,
            env=self.env,
            preexec_fn=self.preexec,
            stdout=subprocess.PIPE,
            # A file, not a pipe: a pipe nobody reads fills up and blocks the daemon's logging.
            stderr=err,
            text=True,
        )
        err.close()  # the child has its own copy
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        """Wait for the `GUI: …` line and a healthy API, both within `timeout` seconds."""
        assert self.proc and self.proc.stdout
        deadline = time.monotonic() + timeout
        first: list[str] = []
        # readline() has no timeout: read in a thread so a daemon that hangs cannot hang the test.
        reader = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()))
        reader.daemon = True
        reader.start()
        reader.join(timeout)
        if not first:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"the daemon printed no first line within {timeout:g} s (killed)\n"
                f"stderr: {self.stderr_text()}"
            )
        self.gui_line = first[0].strip()
        assert self.gui_line.startswith("GUI: "), self.fail_text()
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url("/api/health"), timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"daemon did not become ready: {self.fail_text()}")

    @property
    def port(self) -> int:
        return int(self.gui_line.rsplit(":", 1)[1].split("/")[0])

    @property
    def base_url(self) -> str:
        return self.gui_line.removeprefix("GUI: ").removesuffix("/gui")

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def token(self) -> str:
        return read_config(self.home)["api_token"]

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )

    def _stderr_file(self):
        self.stderr_path = self.home.parent / f"daemon-stderr-{time.monotonic_ns()}.log"
        self.home.parent.mkdir(parents=True, exist_ok=True)
        return open(self.stderr_path, "w")

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def fail_text(self) -> str:
        if self.proc and self.proc.poll() is not None:
            out = self.proc.stdout.read() if self.proc.stdout else ""
            return f"exit {self.proc.returncode}\nstdout: {out}\nstderr: {self.stderr_text()}"
        return "still running"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def run_to_exit(self, timeout: float = 20) -> subprocess.CompletedProcess:
        """For starts that are expected to fail: run and collect the output."""
        return subprocess.run(
            self.command,
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def daemon_factory() -> Iterator:
    started: list[DaemonProcess] = []

    def make(home: Path, *args: str, env: dict | None = None, home_flag: bool = True):
        d = DaemonProcess(home, list(args), env, home_flag)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        if d.proc:
            for stream in (d.proc.stdout,):
                if stream:
                    stream.close()


def wait_for(predicate, timeout: float = 20, interval: float = 0.05, what: str = "condition"):
    """Poll until `predicate()` returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_job(client: httpx.Client, job_id: int, statuses=("completed",), timeout: float = 30):
    """Wait until the job reaches one of `statuses`; fail early if it ends in another."""
    final = {"completed", "failed", "cancelled"}
    seen = {}

    def check():
        job = client.get(f"/api/jobs/{job_id}").json()
        seen["job"] = job
        if job["status"] in statuses:
            return job
        if job["status"] in final:
            raise AssertionError(f"job {job_id} ended {job['status']}: {job.get('error')}")
        return None

    try:
        return wait_for(check, timeout, what=f"job {job_id} to be {statuses}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen {seen.get('job')}") from None


def run_job(d: DaemonProcess, request: dict, statuses=("completed",), timeout: float = 30):
    """Queue one download on the daemon and wait until it reaches one of `statuses`."""
    with d.client() as c:
        job = c.post("/api/download", json=request)
        assert job.status_code == 202, job.text
        return wait_job(c, job.json()["id"], statuses, timeout)


@pytest.fixture
def daemon(home: Path, civitai: FakeCivitai, daemon_factory):
    """Start the daemon against the fake Civitai: `d = daemon(workers=1, ...)`."""

    def start(**config: object) -> DaemonProcess:
        values = {"civitai_base_url": civitai.base_url, "retries": 5, "timeout": 10}
        values.update(config)
        write_config(home, **values)
        return daemon_factory(home).start()

    return start
