"""Run every check the way CI does: ruff lint, ruff format check, then pytest.

python3 run_tests.py [pytest args...]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from install import REPO, check_python, find_uv, say, uv_sync

NGINX = Path("/usr/sbin/nginx")


def ensure_nginx() -> None:
    """tests/test_proxy.py puts Debian's nginx in front of the daemon: install it where it is
    missing and this is root with apt; else say the one command (the test fails without it)."""
    if NGINX.exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        say(f"{NGINX} is missing; tests/test_proxy.py will fail: sudo apt-get install nginx")
        return
    say(f"{NGINX} is missing (tests/test_proxy.py needs it): apt-get install nginx")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.call(["apt-get", "update", "-qq"], env=env)
    subprocess.call(["apt-get", "install", "-y", "-qq", "nginx"], env=env)


def main(argv: list[str]) -> int:
    check_python()
    uv = find_uv()
    uv_sync(uv)
    for step in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        say(" ".join(step))
        if subprocess.call([uv, "run", "--frozen", *step], cwd=REPO):
            return 1
    ensure_nginx()
    say("pytest")
    return subprocess.call([uv, "run", "--frozen", "pytest", *argv], cwd=REPO)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
