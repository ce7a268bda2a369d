"""Set up the daemon on a machine with only Python 3.11+, and run it as a service where it can.

    python3 install.py             # uv, the runtime, the home; as root a service, else start
    python3 install.py --dry-run   # print every step and the rendered unit, change nothing
    python3 install.py --uninstall # stop and remove the service; keep the home and its data
Options: --home DIR (default: /var/lib/civitai-daemon for the service, else this folder),
--user NAME (the service's user), --service (insist on the service), --no-service, --no-start.
Running it again is safe: each step checks what is already there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent
TOOLS = REPO / ".tools"
MIN_PYTHON = (3, 11)
EXIT_USAGE = 2
UNIT_NAME = "civitai-daemon.service"
UNIT_DIR = Path("/etc/systemd/system")
TEMPLATE = REPO / "systemd" / UNIT_NAME
# The service's home: outside the checkout, so that the unit can let the daemon write its home
# and never its own code or venv (ProtectSystem=strict keeps everything else read-only).
SERVICE_HOME = Path("/var/lib/civitai-daemon")
HOME_FILES = ("config.json", "manifest.json")


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def check_python() -> None:
    if sys.version_info < MIN_PYTHON:
        found = ".".join(map(str, sys.version_info[:3]))
        sys.exit(
            f"Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer is needed; this is {found}. "
            f"Install a newer Python (e.g. from python.org or your package manager) and run again."
        )


def find_uv(dry_run: bool = False) -> str:
    """uv on PATH, else a private copy in .tools/, installed there with pip if missing."""
    found = shutil.which("uv")
    if found:
        return found
    bindir = TOOLS / ("Scripts" if os.name == "nt" else "bin")
    private = bindir / ("uv.exe" if os.name == "nt" else "uv")
    if private.exists() or dry_run:
        if dry_run and not private.exists():
            say(f"would install uv into {TOOLS} with pip")
        return str(private)
    say("uv not found; installing it into .tools/ with pip")
    try:
        venv.create(TOOLS, with_pip=True)
        python = bindir / ("python.exe" if os.name == "nt" else "python")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "uv"], check=True)
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
        scripts = subprocess.check_output(
            [
                sys.executable,
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts', 'posix_user'))",
            ],
            text=True,
        ).strip()
        return shutil.which("uv") or str(Path(scripts) / "uv")


def sync_command(uv: str, dev: bool) -> list[str]:
    """`uv sync`: the runtime only for a user's install; with the dev group for run_tests.py."""
    frozen = ["--frozen"] if (REPO / "uv.lock").exists() else []
    # Bytecode compiled once here, not by every start: where PYTHONDONTWRITEBYTECODE is set (or
    # the venv is read-only to the service) Python would compile FastAPI & co. at each start.
    return [uv, "sync", *frozen, "--compile-bytecode", *([] if dev else ["--no-dev"])]


def uv_sync(uv: str, dev: bool = False) -> None:
    say("installing the dependencies" + (" and the test tools" if dev else "") + " with uv sync")
    subprocess.run(sync_command(uv, dev), cwd=REPO, check=True)


def venv_python() -> Path:
    if os.name == "nt":
        return REPO / ".venv" / "Scripts" / "python.exe"
    return REPO / ".venv" / "bin" / "python"


def resolve_home(arg: str | None, service: bool = False) -> Path:
    """--home, else $CIVITAI_DAEMON_HOME, else SERVICE_HOME for the service, else the checkout."""
    chosen = arg or os.environ.get("CIVITAI_DAEMON_HOME") or (SERVICE_HOME if service else REPO)
    return Path(chosen).expanduser().resolve()


def service_home_problem(home: Path, chosen: bool) -> str:
    """Why the service cannot use `home`, or "": it may not be or hold the checkout (the unit
    would let the daemon write its code), and an old home in the checkout is moved first."""
    old = [n for n in HOME_FILES if (REPO / n).exists()]
    move = (
        f" The checkout holds a home ({', '.join(old)}): move it first (README, Moving the "
        "service's home):\n" + "\n".join(f"  {line}" for line in move_commands(SERVICE_HOME))
    )
    if home == REPO or REPO.is_relative_to(home):
        return (
            f"the service's home {home} would hold the checkout {REPO}, and the service may not "
            f"write its own code: use a home outside it (--home {SERVICE_HOME}, the default)."
            + (move if old else "")
        )
    if not chosen and old and not (home / "config.json").exists():
        return (
            f"the checkout {REPO} holds a home ({', '.join(old)}) from before the service's "
            f"home moved to {home}. Move it first (README, Moving the service's home):\n"
            + "\n".join(f"  {line}" for line in move_commands(home))
        )
    return ""


def move_commands(home: Path) -> list[str]:
    """The commands that move the checkout's home to `home` (stop the service first)."""
    old = f"{REPO}/data/"
    return [
        "sudo systemctl stop civitai-daemon",
        f"sudo mkdir -p {home}/data {home}/logs",
        f"cd {REPO} && sudo mv config.json manifest.json {home}/",
        f"sudo mv data/* {home}/data/ && sudo mv logs/* {home}/logs/",
        "for t in completed jobs file_hashes; do sudo .venv/bin/sqlite-utils "
        f"{home}/data/completed.db \"update $t set path = '{home}/data/' || "
        f"substr(path, {len(old) + 1}) where path like '{old}%'\"; done",
        "sudo python3 install.py --user civitai",
    ]


def create_home(home: Path, dry_run: bool) -> None:
    """The home with its default files; what is there already is kept."""
    if dry_run:
        say(
            f"would create the home {home} (config.json, manifest.json, data/, logs/) where missing"
        )
        return
    say(f"preparing the home {home}")
    # launch.py --check creates what is missing and validates config.json, then exits.
    result = subprocess.run(
        [str(venv_python()), str(REPO / "launch.py"), "--home", str(home), "--check"], cwd=REPO
    )
    if result.returncode != 0:
        sys.exit("Fix config.json as the message above says, then run install.py again.")


def download_dir(home: Path) -> Path:
    try:
        value = json.loads((home / "config.json").read_text()).get("download_dir") or "data/models"
    except (OSError, ValueError):
        value = "data/models"
    p = Path(value).expanduser()
    return p if p.is_absolute() else home / p


def render_unit(home: Path, user: str | None, python: Path) -> str:
    writable = [str(home)]
    models = download_dir(home)
    if not str(models).startswith(str(home) + os.sep):
        writable.append(str(models))
    in_tmp = [p for p in writable if p.startswith(("/tmp/", "/var/tmp/"))]
    return TEMPLATE.read_text().format(
        repo=REPO,
        home=home,
        python=python,
        user_line=f"User={user}\n" if user else "",
        rw_paths=" ".join(writable),
        private_tmp="no" if in_tmp else "yes",
        private_tmp_why=(
            f"PrivateTmp=no: {in_tmp[0]} is under /tmp, which a private /tmp would hide from the "
            f"daemon (it would see an empty folder, and lose it at each restart)."
            if in_tmp
            else "PrivateTmp=yes: the daemon gets a /tmp of its own."
        ),
    )


SEARCH, WRITE = 0o1, 0o2  # the x and w bits of one class (owner, group, other)


def allowed(st: os.stat_result, uid: int, gids: set[int], bit: int) -> bool:
    """Whether uid (with gids) has `bit` on a file of this stat, as the kernel decides."""
    if uid == 0:
        return bit != SEARCH or not stat.S_ISREG(st.st_mode) or bool(st.st_mode & 0o111)
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in gids:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def chain(path: Path) -> list[Path]:
    """`path` and every link it leads through, to the file at the end."""
    out = [Path(os.path.abspath(path))]
    while out[-1].is_symlink() and len(out) < 40:
        out.append(Path(os.path.abspath(out[-1].parent / os.readlink(out[-1]))))
    return out


def blocked_dir(path: Path, uid: int, gids: set[int]) -> Path | None:
    """The first folder on the way to `path` (as written and resolved) that uid cannot enter."""
    for way in (path.parent, Path(os.path.realpath(path.parent))):
        for folder in [*reversed(way.parents), way]:
            if not allowed(folder.stat(), uid, gids, SEARCH):
                return folder
    return None


def mode_of(path: Path) -> str:
    st = path.stat()
    return f"mode {stat.S_IMODE(st.st_mode):o}, owner uid {st.st_uid}"


def service_user_problem(
    user: str, uid: int, gids: set[int], python: Path, repo: Path, home: Path
) -> str:
    """Why `user` could not run the service (its interpreter, launch.py, the home), or ""."""
    for step in chain(python):
        folder = blocked_dir(step, uid, gids)
        if folder:
            return (
                f"the service user {user} cannot run {python}: it leads to {chain(python)[-1]}, "
                f"and {user} cannot enter {folder} ({mode_of(folder)}). Create the venv with a "
                f"Python {user} can reach: rm -rf {repo / '.venv'} && UV_PYTHON=/usr/bin/python3 "
                f"python3 install.py --user {user} (or make {folder} searchable: chmod o+x "
                f"{folder})"
            )
    if not allowed(chain(python)[-1].stat(), uid, gids, SEARCH):
        return f"the service user {user} may not execute {chain(python)[-1]}"
    # The home itself is chowned to the user by install_service: only the way to it must be open.
    for place, what in ((repo / "launch.py", f"the checkout {repo}"), (home, f"the home {home}")):
        folder = blocked_dir(place, uid, gids)
        if folder:
            return (
                f"the service user {user} cannot reach {what}: it cannot enter "
                f"{folder} ({mode_of(folder)}). Move it to a place {user} can reach (e.g. "
                f"/srv/civitai-daemon, with --home /srv/civitai-daemon/home), or chmod o+x {folder}"
            )
    return ""


def check_service_user(user: str, python: Path, home: Path) -> str:
    """service_user_problem for a real account; a missing account is a problem too."""
    import pwd  # not on Windows, where there is no service to install

    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return (
            f"there is no user {user}. Create it with: useradd --system --shell "
            f"/usr/sbin/nologin {user}"
        )
    gids = set(os.getgrouplist(user, account.pw_gid))
    return service_user_problem(user, account.pw_uid, gids, python, REPO, home)


@dataclass
class Plan:
    service: bool
    reason: str


def service_plan(args: argparse.Namespace, is_root: bool, has_systemd: bool, linux: bool) -> Plan:
    """Whether to install the systemd service, and the sentence that says why (not)."""
    if args.no_service:
        return Plan(False, "--no-service was given")
    if not linux:
        return Plan(False, "this is not Linux (see the README for Windows: NSSM or Task Scheduler)")
    if not has_systemd:
        return Plan(False, "systemd is not running on this machine")
    if not is_root:
        return Plan(False, "installing a service needs root: run `sudo python3 install.py`")
    return Plan(True, "running as root with systemd")


def has_systemd() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def run(cmd: list[str], dry_run: bool, check: bool = True) -> int:
    say(("would run: " if dry_run else "running: ") + " ".join(cmd))
    if dry_run:
        return 0
    return subprocess.run(cmd, check=check).returncode


def install_service(home: Path, user: str | None, dry_run: bool) -> None:
    unit = render_unit(home, user, venv_python())
    target = UNIT_DIR / UNIT_NAME
    say(f"{'would write' if dry_run else 'writing'} {target}:")
    print(unit, flush=True)
    if not dry_run:
        target.write_text(unit)
        if user:
            shutil.chown(home, user=user)
            for path in home.rglob("*"):
                shutil.chown(path, user=user)
    run(["systemctl", "daemon-reload"], dry_run)
    run(["systemctl", "enable", "--now", UNIT_NAME], dry_run)
    if not dry_run:
        subprocess.run(["systemctl", "--no-pager", "status", UNIT_NAME], check=False)
        say("the service is installed; follow it with: journalctl -u civitai-daemon -f")


def uninstall_service(dry_run: bool) -> int:
    target = UNIT_DIR / UNIT_NAME
    run(["systemctl", "disable", "--now", UNIT_NAME], dry_run, check=False)
    say(f"{'would remove' if dry_run else 'removing'} {target}")
    if not dry_run:
        target.unlink(missing_ok=True)
    run(["systemctl", "daemon-reload"], dry_run, check=False)
    say("the service is removed; the home, its config, models and database are kept")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--home",
        help=f"folder for config, manifest, data and logs (default: {SERVICE_HOME} for the "
        "service, else this folder)",
    )
    parser.add_argument("--user", help="run the service as this (non-root) user")
    parser.add_argument(
        "--service", action="store_true", help="install the systemd service or fail"
    )
    parser.add_argument("--no-service", action="store_true", help="never install the service")
    parser.add_argument("--no-start", action="store_true", help="set up, but do not start")
    parser.add_argument("--dry-run", action="store_true", help="print every step, change nothing")
    parser.add_argument("--uninstall", action="store_true", help="stop and remove the service")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_python()
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if args.uninstall:
        if not (is_root or args.dry_run):
            sys.exit("Removing the service needs root: run `sudo python3 install.py --uninstall`.")
        return uninstall_service(args.dry_run)

    plan = service_plan(args, is_root, has_systemd(), sys.platform.startswith("linux"))
    if args.service and not plan.service:
        if args.dry_run:
            say(f"(a real run would stop here: {plan.reason})")
            plan = Plan(True, "--service with --dry-run: showing the plan")
        else:
            sys.exit(f"Cannot install the service: {plan.reason}.")
    home = resolve_home(args.home, service=plan.service)
    if plan.service:
        chosen = bool(args.home or os.environ.get("CIVITAI_DAEMON_HOME"))
        problem = service_home_problem(home, chosen)
        if problem and args.dry_run:
            say(f"(a real run would stop here: {problem})")
        elif problem:
            print(f"error: cannot install the service: {problem}", file=sys.stderr)
            return EXIT_USAGE
    uv = find_uv(args.dry_run)
    if args.dry_run:
        say(f"would run: {' '.join(sync_command(uv, dev=False))} (in {REPO})")
    else:
        uv_sync(uv)
    create_home(home, args.dry_run)

    if plan.service:
        problem = check_service_user(args.user, venv_python(), home) if args.user else ""
        if problem and args.dry_run:
            say(f"(a real run would stop here: {problem})")
        elif problem:
            print(f"error: cannot install the service: {problem}.", file=sys.stderr)
            return EXIT_USAGE
        install_service(home, args.user, args.dry_run)
        return 0
    say(f"skipped the systemd service: {plan.reason}")
    say("to install it later: sudo python3 install.py" + (f" --home {home}" if args.home else ""))
    if args.dry_run:
        say("the unit that would be installed:")
        print(render_unit(home, args.user, venv_python()), flush=True)
    launch = [str(venv_python()), str(REPO / "launch.py"), "--home", str(home)]
    if args.no_start or args.dry_run:
        say("start it with: " + " ".join(launch))
        return 0
    say("starting the daemon in the foreground (Ctrl-C stops it; jobs and downloads are kept)")
    return subprocess.call(launch, cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
