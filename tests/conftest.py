"""Shared fixtures: the fake Civitai, a home in tmp_path, and the daemon as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.browser import launch
from tests.fake_civitai import FakeCivitai
from tests.fake_hf import FakeHub
from tests.s3_server import SeaweedS3

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@pytest.fixture
def civitai() -> Iterator[FakeCivitai]:
    with FakeCivitai() as fake:
        yield fake


@pytest.fixture
def hf() -> Iterator[FakeHub]:
    """A fake Hugging Face Hub and its CDN (tests/fake_hf.py) over real HTTP."""
    with FakeHub() as fake:
        yield fake


@pytest.fixture(scope="session")
def s3() -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS, tests/s3_server.py), one per test process: each test keeps
    to a prefix of its own."""
    with SeaweedS3() as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    """One Chromium per test process (each xdist worker launches it once), for every GUI test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies, no storage) and a page in it, 1280×860."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    context.close()


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on a thread of its own: a GUI test earlier in this worker leaves the Playwright
    sync API's loop running on the main thread, where asyncio.run refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main).result()


@contextlib.contextmanager
def loop_thread() -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """One event loop for a whole test, on a thread of its own (see run_async): `run(coro)`."""
    with ThreadPoolExecutor(1) as pool:
        runner = asyncio.Runner()
        try:
            yield lambda coro: pool.submit(runner.run, coro).result()
        finally:
            pool.submit(runner.close).result()


def idle_fraction(seconds: float = 1.0) -> float:
    """The share of all cores' time that was idle over the next `seconds` (/proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    idle0, all0 = sample()
    time.sleep(seconds)
    idle1, all1 = sample()
    return (idle1 - idle0) / max(1, all1 - all0)


@pytest.fixture
def quiet_machine() -> float:
    """For the tests marked `alone`: wait (up to a minute) until the machine is idle, as right
    after the parallel part the processes it started may still be ending; the idle share seen."""
    deadline = time.monotonic() + 60
    idle = idle_fraction()
    while idle < 0.9 and time.monotonic() < deadline:
        idle = idle_fraction()
    return idle


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
        wrap: list[str] | None = None,
    ):
        self.home = home
        self.home_flag = home_flag
        self.args = args or []
        self.wrap = wrap or []  # a command the daemon runs under (Tmpfs.wrap: a namespace)
        self.env = {k: v for k, v in os.environ.items() if k != "CIVITAI_TOKEN"}
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.preexec = None  # runs in the child before exec (resource limits)
        self.gui_line = ""

    @property
    def command(self) -> list[str]:
        home = ["--home", str(self.home)] if self.home_flag else []
        return [*self.wrap, sys.executable, str(REPO / "launch.py"), *home, *self.args]

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

    def make(
        home: Path,
        *args: str,
        env: dict | None = None,
        home_flag: bool = True,
        wrap: list[str] | None = None,
    ):
        d = DaemonProcess(home, list(args), env, home_flag, wrap)
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

    def start(wrap: list[str] | None = None, **config: object) -> DaemonProcess:
        # No library scan at start unless a test asks (auto_scan=True): a test that puts files
        # in place before starting scans them when it means to. No hard link for a download
        # already on disk either (link_duplicates=True asks): a test downloading the same bytes
        # twice means two downloads.
        values = {"civitai_base_url": civitai.base_url, "retries": 5, "timeout": 10}
        values.update(auto_scan=False, link_duplicates=False)
        values.update(config)
        write_config(home, **values)
        return daemon_factory(home, wrap=wrap).start()

    return start


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def assert_file_is(path: str | Path, expected_sha: str) -> None:
    """The file a person would open, read back from disk, holds exactly the expected bytes
    (not merely what the daemon says it wrote)."""
    p = Path(path)
    assert p.is_file() and not p.is_symlink(), f"{p} is not a regular file"
    actual = sha256_file(p)
    assert actual == expected_sha.lower(), f"{p} read back: sha256 {actual}, want {expected_sha}"


def skip_unless_ci(reason: str) -> None:
    """Skip here; in CI (CI set) a skip would hide a failure, so it is one."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, where this test may not be skipped)")
    pytest.skip(reason)


class Tmpfs:
    """A small tmpfs at `path`: mounted here where this process may (root); else mounted inside
    a user+mount namespace (`unshare -rm`) that the daemon is started in, through `wrap`.
    TEST_TMPFS_VIA_UNSHARE=1 takes the namespace path even where mount would work."""

    def __init__(self, path: Path, options: str) -> None:
        self.path = path
        self.options = options
        self.wrap: list[str] = []
        self.mounted = False

    def mount(self) -> Tmpfs:
        self.path.mkdir(parents=True, exist_ok=True)
        why = "TEST_TMPFS_VIA_UNSHARE is set"
        mount = shutil.which("mount")
        if mount and not os.environ.get("TEST_TMPFS_VIA_UNSHARE"):
            r = subprocess.run(
                [mount, "-t", "tmpfs", "-o", self.options, "tmpfs", str(self.path)],
                capture_output=True,
                text=True,
            )
            if r.returncode == 0:
                self.mounted = True
                return self
            why = r.stderr.strip()
        elif not mount:
            why = "no mount command"
        unshare = shutil.which("unshare")
        script = 'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && exec "$@"'
        wrap = [unshare or "unshare", "-rm", "sh", "-c", script, "sh", self.options, str(self.path)]
        if unshare:
            probe = subprocess.run([*wrap, "true"], capture_output=True, text=True)
            if probe.returncode == 0:
                self.wrap = wrap
                return self
            why += f"; unshare -rm: {probe.stderr.strip()}"
        skip_unless_ci(f"cannot mount a tmpfs at {self.path}: {why}")
        return self

    def seen_from_here(self, d: DaemonProcess) -> Path:
        """The mounted folder as this test process reaches it (through the daemon's namespace
        when the mount lives there)."""
        if self.mounted or d.proc is None:
            return self.path
        return Path(f"/proc/{d.proc.pid}/root") / self.path.relative_to("/")

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.mounted = False


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator:
    """`tmpfs("name", "size=8m")`: a Tmpfs under tmp_path, unmounted after the test."""
    made: list[Tmpfs] = []

    def make(name: str, options: str) -> Tmpfs:
        t = Tmpfs(tmp_path / name, options)
        made.append(t)
        return t.mount()

    yield make
    for t in made:
        t.unmount()


def snapshot_checkout(dest: Path) -> Path:
    """This working tree as its next commit would hold it, as a fresh git repository at `dest`:
    what a person gets from `git clone` (uncommitted changes included, ignored files left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.exists() or source.is_symlink():  # a deletion not yet committed is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "snapshot of the working tree")
    return dest


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` (with a committer identity, as on a fresh machine) and return stdout."""
    identity = ["-c", "user.name=tests", "-c", "user.email=tests@example.invalid"]
    done = subprocess.run(
        ["git", *identity, *args], cwd=repo, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"git {' '.join(args)} in {repo}: {done.stderr}"
    return done.stdout
