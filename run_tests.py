"""Run every check the way CI does: ruff lint, ruff format check, then pytest.

python3 run_tests.py [pytest args...]
"""

from __future__ import annotations

import subprocess
import sys

from install import REPO, check_python, find_uv, say, uv_sync


def main(argv: list[str]) -> int:
    check_python()
    uv = find_uv()
    uv_sync(uv)
    for step in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        say(" ".join(step))
        if subprocess.call([uv, "run", "--frozen", *step], cwd=REPO):
            return 1
    say("pytest")
    return subprocess.call([uv, "run", "--frozen", "pytest", *argv], cwd=REPO)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
