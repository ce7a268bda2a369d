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

APT_INSTALL = ["apt-get", "install", "-y", "-qq", "chromium"]
CHROMIUM_FIX = (
    "install it with `sudo apt-get install chromium` (python3 run_tests.py does it when run as "
    "root), or point CHROMIUM=/path/to/chromium at another Chromium-based browser"
)


def chromium_path() -> str | None:
    """The browser the GUI tests drive: $CHROMIUM, else `chromium` on the PATH."""
    chosen = os.environ.get("CHROMIUM")
    if chosen:
        return chosen if os.path.exists(chosen) else None
    return shutil.which("chromium")


@dataclass(frozen=True)
class ChromiumPlan:
    commands: list[list[str]]  # run in order; empty: nothing to run
    message: str


def chromium_plan(found: bool, is_root: bool, passwordless_sudo: bool, apt: bool) -> ChromiumPlan:
    """What run_tests.py does about Chromium, and the sentence it says about it."""
    if found:
        return ChromiumPlan([], "")
    if apt and (is_root or passwordless_sudo):
        sudo = [] if is_root else ["sudo", "-n"]
        return ChromiumPlan(
            [[*sudo, "apt-get", "update", "-qq"], [*sudo, *APT_INSTALL]],
            "installing chromium for the GUI tests (apt-get install chromium)",
        )
    why = "this user may not run apt-get" if apt else "there is no apt-get here"
    return ChromiumPlan(
        [], f"chromium is missing and {why}: the GUI tests will fail. To fix it, {CHROMIUM_FIX}."
    )


def has_passwordless_sudo() -> bool:
    if not shutil.which("sudo"):
        return False
    return subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0


def ensure_chromium() -> None:
    """Install Chromium where it is missing and we may; never stop the run over it."""
    if chromium_path():
        return
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    plan = chromium_plan(
        False, is_root, not is_root and has_passwordless_sudo(), bool(shutil.which("apt-get"))
    )
    say(plan.message)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in plan.commands:
        if subprocess.run(command, env=env).returncode != 0:
            say(
                f"`{' '.join(command)}` failed: the GUI tests will fail. To fix it, {CHROMIUM_FIX}."
            )
            return


def main(argv: list[str]) -> int:
    check_python()
    uv = find_uv()
    uv_sync(uv, dev=True)
    ensure_chromium()
    for step in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        say(" ".join(step))
        if subprocess.call([uv, "run", "--frozen", *step], cwd=REPO):
            return 1
    say("pytest")
    return subprocess.call([uv, "run", "--frozen", "pytest", *argv], cwd=REPO)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
