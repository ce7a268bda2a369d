"""Run every check the way CI does: ruff lint, ruff format check, then pytest.

python3 run_tests.py [pytest args...]

It installs what the checks need: uv and the dev tools (`uv sync` with the dev group) and, for
the GUI tests, Debian's Chromium where it is missing and this user may run apt-get. Where it may
not, it goes on: the GUI tests then fail with the command that fixes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from install import REPO, check_python, find_uv, say, uv_sync

CHROMIUM_FIX = (
    "install it with `sudo apt-get install chromium` (python3 run_tests.py does it when run as "
    "root), or point CHROMIUM=/path/to/chromium at another Chromium-based browser"
)
NGINX = "/usr/sbin/nginx"
NO_TESTS = 5  # pytest's exit code when nothing was selected (e.g. -k matching no timing test)


def apt_fix(package: str) -> str:
    return (
        f"install it with `sudo apt-get install {package}` (python3 run_tests.py does it as root)"
    )


NGINX_FIX, STRACE_FIX, SYSTEMD_ANALYZE_FIX = apt_fix("nginx"), apt_fix("strace"), apt_fix("systemd")
# Debian's packages some tests drive, besides Chromium: (installed?, package, the tests needing it).
SYSTEM_TOOLS = (
    (lambda: os.path.exists(NGINX), "nginx", "tests/test_proxy.py"),
    (lambda: shutil.which("strace"), "strace", "tests/test_fsync.py"),
    (lambda: shutil.which("systemd-analyze"), "systemd", "tests/test_install.py (the unit)"),
    (lambda: shutil.which("curl"), "curl", "tests/test_bench.py (the yardsticks)"),
    (lambda: shutil.which("aria2c"), "aria2", "tests/test_bench.py (the yardsticks)"),
)


def chromium_path() -> str | None:
    """The browser the GUI tests drive: $CHROMIUM, else `chromium` on the PATH."""
    chosen = os.environ.get("CHROMIUM")
    if chosen:
        return chosen if os.path.exists(chosen) else None
    return shutil.which("chromium")


@dataclass(frozen=True)
class InstallPlan:
    commands: list[list[str]]  # run in order; empty: nothing to run
    message: str


def apt_plan(
    package: str, needed_by: str, fix: str, is_root: bool, passwordless_sudo: bool, apt: bool
) -> InstallPlan:
    """What run_tests.py does about a missing Debian package, and the sentence it says."""
    if apt and (is_root or passwordless_sudo):
        sudo = [] if is_root else ["sudo", "-n"]
        return InstallPlan(
            [
                [*sudo, "apt-get", "update", "-qq"],
                [*sudo, "apt-get", "install", "-y", "-qq", package],
            ],
            f"installing {package} for {needed_by} (apt-get install {package})",
        )
    why = "this user may not run apt-get" if apt else "there is no apt-get here"
    return InstallPlan(
        [], f"{package} is missing and {why}: {needed_by} will fail. To fix it, {fix}."
    )


def chromium_plan(found: bool, is_root: bool, passwordless_sudo: bool, apt: bool) -> InstallPlan:
    if found:
        return InstallPlan([], "")
    return apt_plan("chromium", "the GUI tests", CHROMIUM_FIX, is_root, passwordless_sudo, apt)


def has_passwordless_sudo() -> bool:
    if not shutil.which("sudo"):
        return False
    return subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0


def ensure_system_tools() -> None:
    """Install Chromium (the GUI tests) and SYSTEM_TOOLS where they are missing and we may;
    never stop the run over it: the tests that need them fail, naming the fix."""
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    apt = bool(shutil.which("apt-get"))
    sudo = not is_root and has_passwordless_sudo()
    plans = [] if chromium_path() else [chromium_plan(False, is_root, sudo, apt)]
    for installed, package, needed_by in SYSTEM_TOOLS:
        if not installed():
            plans.append(apt_plan(package, needed_by, apt_fix(package), is_root, sudo, apt))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for plan in plans:
        say(plan.message)
        for command in plan.commands:
            if subprocess.run(command, env=env).returncode != 0:
                say(f"`{' '.join(command)}` failed; the tests needing it will fail saying so.")
                break


def main(argv: list[str]) -> int:
    check_python()
    uv = find_uv()
    uv_sync(uv, dev=True)
    ensure_system_tools()
    for step in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        say(" ".join(step))
        if subprocess.call([uv, "run", "--frozen", *step], cwd=REPO):
            return 1
    # The project's own modules as bytecode too (the venv's are, by uv sync): each of the
    # suite's hundreds of daemon starts would otherwise compile them again where
    # PYTHONDONTWRITEBYTECODE is set.
    compile_own = ["python", "-m", "compileall", "-q", "-x", r"/\.", "."]  # not .venv & co.
    subprocess.call([uv, "run", "--frozen", *compile_own], cwd=REPO, stdout=subprocess.DEVNULL)
    pytest = [uv, "run", "--frozen", "pytest"]
    workers = parallel(argv)
    if not workers or "-m" in argv:  # the caller chose how: one run as asked
        say("pytest")
        return subprocess.call([*pytest, *workers, *argv], cwd=REPO)
    # The timing tests (marked `alone`) run after the parallel part, with the machine to
    # themselves: a 100 ms bound means the daemon's answer, not four workers sharing two cores.
    say(f"pytest on {workers[1]} workers, then the tests marked alone one at a time")
    # The slowest tests are named at the end, so a run that grew slower says where.
    slowest = ["--durations=30", "--durations-min=5"]
    shared = subprocess.call([*pytest, *workers, *slowest, "-m", "not alone", *argv], cwd=REPO)
    alone = subprocess.call([*pytest, "-m", "alone", *argv], cwd=REPO)
    ran = [code for code in (shared, alone) if code != NO_TESTS]
    return next((code for code in ran if code), 0) if ran else NO_TESTS


def parallel(argv: list[str]) -> list[str]:
    """pytest-xdist on every core, tests handed out as workers free up (each worker starts one
    Chromium for its GUI tests); unless the arguments choose otherwise (-n 0 runs in-process)."""
    chosen = any(
        a in ("-n", "--numprocesses") or a.startswith(("-n", "--numprocesses=")) for a in argv
    )
    if chosen or "no:xdist" in argv:
        return []
    return ["-n", str(workers()), "--dist", "worksteal"]


def workers() -> int:
    """Two pytest workers per core: a test spends most of its time waiting on a daemon, a fake
    server or a browser (one worker per core kept the 2-core machine about half busy: 18 CPU-
    minutes in a 17-minute run)."""
    return 2 * max(1, os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
