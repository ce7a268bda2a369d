"""Set up and start the daemon on a machine with only Python 3.11+ (SPEC §1).

python3 install.py            # uv (installed if missing), dependencies, home, then start
python3 install.py --no-start # set up only
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent
TOOLS = REPO / ".tools"
MIN_PYTHON = (3, 11)


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def check_python() -> None:
    if sys.version_info < MIN_PYTHON:
        found = ".".join(map(str, sys.version_info[:3]))
        sys.exit(f"Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer is needed; this is {found}.")


def find_uv() -> str:
    """uv on PATH, else a private copy in .tools/, installed there with pip if missing."""
    found = shutil.which("uv")
    if found:
        return found
    bindir = TOOLS / ("Scripts" if os.name == "nt" else "bin")
    private = bindir / ("uv.exe" if os.name == "nt" else "uv")
    if private.exists():
        return str(private)
    say("uv not found; installing it into .tools/ with pip")
    try:
        venv.create(TOOLS, with_pip=True)
        subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", "uv"], check=True)
        return str(private)
    except (OSError, subprocess.CalledProcessError):
        # No venv module (Debian without python3-venv): fall back to a user install.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--user",
                "--break-system-packages",
                "uv",
            ],
            check=True,
        )
        user_bin = Path(
            subprocess.check_output(
                [
                    sys.executable,
                    "-c",
                    "import sysconfig; print(sysconfig.get_path('scripts', 'posix_user'))",
                ],
                text=True,
            ).strip()
        )
        return shutil.which("uv") or str(user_bin / "uv")


def uv_sync(uv: str) -> None:
    say("installing dependencies with uv sync")
    subprocess.run(
        [uv, "sync", "--frozen" if (REPO / "uv.lock").exists() else "-q"], cwd=REPO, check=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--home", help="folder for config, manifest, data and logs")
    parser.add_argument("--no-start", action="store_true", help="set up, but do not start")
    args = parser.parse_args(argv)
    check_python()
    uv = find_uv()
    uv_sync(uv)
    home_args = ["--home", args.home] if args.home else []
    if args.no_start:
        say("set up; start with: uv run launch.py" + (f" --home {args.home}" if args.home else ""))
        return 0
    say("starting the daemon (Ctrl-C stops it)")
    return subprocess.call([uv, "run", "--frozen", "launch.py", *home_args], cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
