"""Install and operate: install.py, the systemd unit, setup.sh, and the CLI."""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import install
import run_tests
from tests.conftest import (
    REPO,
    DaemonProcess,
    git,
    read_config,
    skip_unless_ci,
    snapshot_checkout,
    wait_job,
    write_config,
)


def checkout_env() -> dict[str, str]:
    """A person's shell: uv on the PATH where run_tests.py put it, no home chosen."""
    env = {k: v for k, v in os.environ.items() if k != "CIVITAI_DAEMON_HOME"}
    env["PATH"] = f"{Path(install.find_uv()).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_install(
    *args: str, checkout: Path = REPO, timeout: float = 300
) -> subprocess.CompletedProcess:
    """install.py as a person runs it; anything but --dry-run only in a checkout of tmp_path
    (a real run syncs the checkout's .venv to the runtime only: this one's would lose pytest)."""
    assert checkout != REPO or "--dry-run" in args or "--help" in args
    return subprocess.run(
        [sys.executable, str(checkout / "install.py"), *args],
        cwd=checkout,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh clone of this checkout after `python3 install.py --no-start`."""
    checkout = snapshot_checkout(tmp_path_factory.mktemp("clone") / "civitai-daemon")
    result = run_install("--no-start", checkout=checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    return checkout


def importable(python: Path, module: str) -> bool:
    probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


def test_dry_run_prints_every_step_and_the_unit_and_changes_nothing(tmp_path):
    home = tmp_path / "fresh-home"
    result = run_install("--dry-run", "--service", "--home", str(home), "--user", "civitai")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "would run:" in out and "sync --frozen --compile-bytecode --no-dev" in out
    assert f"would create the home {home}" in out
    assert f"would write /etc/systemd/system/{install.UNIT_NAME}" in out
    assert f"ExecStart={REPO}/.venv/bin/python {REPO}/launch.py --home {home}" in out
    assert f"Environment=CIVITAI_DAEMON_HOME={home}" in out and "User=civitai" in out
    assert f"ReadWritePaths={home}" in out
    assert "would run: systemctl enable --now civitai-daemon.service" in out
    assert not home.exists()


def test_rendered_unit_is_valid_and_hardened(tmp_path):
    unit_text = install.render_unit(tmp_path / "home", "civitai", install.venv_python())
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(unit_text)
    service = unit["Service"]
    assert service["Restart"] == "on-failure" and service["User"] == "civitai"
    assert service["RestartPreventExitStatus"] == "2"  # a bad config.json never restarts forever
    assert service["PrivateTmp"] == "no"  # tmp_path is under /tmp: said why, in the unit
    assert f"# PrivateTmp=no: {tmp_path / 'home'} is under /tmp, which a private /tmp" in unit_text
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == str(tmp_path / "home")
    assert int(service["TimeoutStopSec"]) > 10  # the daemon's own graceful stop takes at most 10 s
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"  # systemctl reload: live settings
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    systemd_verify(unit_text, tmp_path)


def systemd_verify(unit_text: str, folder: Path) -> None:
    """`systemd-analyze verify` passes the unit; never a skip (run_tests.py installs it)."""
    tool = shutil.which("systemd-analyze")
    assert tool, f"systemd-analyze is missing: {run_tests.SYSTEMD_ANALYZE_FIX}"
    path = folder / install.UNIT_NAME
    path.write_text(unit_text)
    verify = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr


def overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def test_the_service_writes_its_home_in_var_lib_and_never_its_code_or_venv(tmp_path):
    result = run_install("--dry-run", "--service", "--user", "civitai")
    assert result.returncode == 0, result.stderr
    unit_text = result.stdout.split(f"{install.UNIT_NAME}:\n", 1)[1].split("==> ", 1)[0]
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(unit_text)
    service = unit["Service"]
    home = Path("/var/lib/civitai-daemon")
    assert service["ExecStart"].endswith(f"launch.py --home {home}")
    assert f"Environment=CIVITAI_DAEMON_HOME={home}" in unit_text
    writable = [Path(p) for p in service["ReadWritePaths"].split()]
    assert writable == [home], writable
    code = [REPO, REPO / ".venv", REPO / "launch.py", install.venv_python()]
    for path in writable:
        for part in code:
            assert not overlaps(path, part), f"the service may write {part} through {path}"
    assert service["ProtectSystem"] == "strict"  # everything else read-only
    systemd_verify(unit_text, tmp_path)


def test_the_service_refuses_a_home_that_holds_its_code(tmp_path, monkeypatch):
    said = install.service_home_problem(REPO, chosen=True)
    assert "may not write its own code" in said and f"--home {install.SERVICE_HOME}" in said
    assert "may not write its own code" in install.service_home_problem(REPO.parent, True)
    result = run_install("--dry-run", "--service", "--home", str(REPO))
    assert "a real run would stop here: the service's home" in result.stdout, result.stdout
    # A checkout that was the home before: the move comes first, with its commands.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "config.json").write_text("{}")
    monkeypatch.setattr(install, "REPO", checkout)
    new = tmp_path / "var-lib"
    said = install.service_home_problem(new, chosen=False)
    assert f"holds a home (config.json) from before the service's home moved to {new}" in said
    assert f"sudo mv config.json manifest.json {new}/" in said
    assert install.service_home_problem(new, chosen=True) == ""  # --home given: as asked
    said = install.service_home_problem(checkout, chosen=True)  # --home the old home itself
    assert "may not write its own code" in said and "move it first" in said
    assert f"sudo mv config.json manifest.json {install.SERVICE_HOME}/" in said


def test_a_download_dir_outside_the_home_is_writable_too(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"download_dir": "/srv/models"}))
    unit = install.render_unit(home, None, install.venv_python())
    assert f"ReadWritePaths={home} /srv/models" in unit and "User=" not in unit


@pytest.mark.parametrize(
    "root,systemd,linux,flags,service,reason",
    [
        (True, True, True, {}, True, "running as root with systemd"),
        (False, True, True, {}, False, "needs root"),
        (True, False, True, {}, False, "systemd is not running"),
        (True, True, False, {}, False, "not Linux"),
        (True, True, True, {"no_service": True}, False, "--no-service"),
    ],
)
def test_service_plan_says_why(root, systemd, linux, flags, service, reason):
    args = argparse.Namespace(no_service=flags.get("no_service", False))
    plan = install.service_plan(args, root, systemd, linux)
    assert plan.service is service and reason in plan.reason


def test_install_without_systemd_skips_the_service_and_is_safe_to_rerun(installed, tmp_path):
    home = tmp_path / "home"
    first = run_install("--no-start", "--home", str(home), checkout=installed)
    assert first.returncode == 0, first.stderr
    assert "skipped the systemd service" in first.stdout
    assert "to install it later: sudo python3 install.py" in first.stdout
    assert "start it with:" in first.stdout
    assert (home / "config.json").exists() and (home / "manifest.json").exists()
    (home / "config.json").write_text(json.dumps({**read_config(home), "workers": 3}))
    again = run_install("--no-start", "--home", str(home), checkout=installed)
    assert again.returncode == 0 and read_config(home)["workers"] == 3


def test_install_gives_the_runtime_only_and_run_tests_adds_the_test_tools(installed):
    python = installed / ".venv" / "bin" / "python"
    assert importable(python, "fastapi") and importable(python, "sqlite_utils")
    assert (installed / ".venv" / "bin" / "sqlite-utils").exists()  # the README's example uses it
    for tool in ("pytest", "ruff", "playwright", "schemathesis"):
        assert not importable(python, tool), f"install.py installed the dev tool {tool}"
        assert not (installed / ".venv" / "bin" / tool).exists()
    # run_tests.py: sync with the dev group, ruff on the clone, then pytest (here only --version).
    tests = subprocess.run(
        [sys.executable, str(installed / "run_tests.py"), "--version"],
        cwd=installed,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "==> ruff check ." in tests.stdout and "pytest" in tests.stdout + tests.stderr
    assert all(importable(python, tool) for tool in ("pytest", "ruff", "playwright"))


def test_install_refuses_a_bad_config_with_the_reason(installed, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text('{"workers": "lots"}')
    result = run_install("--no-start", "--home", str(home), checkout=installed)
    assert result.returncode != 0
    assert "'workers'" in result.stderr and "Fix config.json" in result.stderr


def test_uninstall_dry_run_shows_the_plan_and_keeps_data():
    result = run_install("--uninstall", "--dry-run")
    assert result.returncode == 0
    out = result.stdout
    assert "would run: systemctl disable --now civitai-daemon.service" in out
    assert "would remove /etc/systemd/system/civitai-daemon.service" in out
    assert "home, its config, models and database are kept" in out


def test_setup_sh_reports_each_step(installed, tmp_path):
    home = tmp_path / "home"
    result = subprocess.run(
        ["bash", str(installed / "setup.sh"), "--no-start", "--home", str(home)],
        cwd=installed,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for step in ("[1/3] Looking for Python", "[2/3]", "[3/3] Running install.py"):
        assert step in result.stdout
    assert (home / "config.json").exists()


def cli(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "--home", str(home), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_against_a_running_daemon(civitai, daemon, home):
    civitai.add_simple(1, 10, b"x" * 5000, filename="small.safetensors")
    civitai.add_simple(2, 20, b"y" * 3_000_000, filename="slow.safetensors")
    d = daemon(workers=1)
    status = cli(home, "status")
    assert status.returncode == 0 and "0 queued" in status.stdout and d.base_url in status.stdout
    added = cli(home, "add", "--version", "10", "--type", "lora")
    assert added.returncode == 0 and "small.safetensors" in added.stdout
    job_id = int(added.stdout.split()[1])
    with d.client() as c:
        wait_job(c, job_id)
    listed = cli(home, "list")
    assert "completed" in listed.stdout and "small.safetensors" in listed.stdout
    as_json = json.loads(cli(home, "list", "--status", "completed", "--json").stdout)
    assert [j["id"] for j in as_json["jobs"]] == [job_id]
    civitai.default_rate = 200_000
    slow = cli(home, "add", "https://civitai.com/models/2", "--type", "lora", "--json")
    slow_id = json.loads(slow.stdout)["id"]
    cancelled = cli(home, "cancel", str(slow_id))
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    again = cli(home, "cancel", str(slow_id))
    assert again.returncode == 1 and "only active jobs can be cancelled" in again.stderr
    assert "small.safetensors" in cli(home, "completed").stdout
    assert "No updates found yet" in cli(home, "updates").stdout
    assert "Checked 0 model(s)" in cli(home, "updates", "--check").stdout
    assert "0 file(s)" in cli(home, "scan").stdout
    d.stop()
    gone = cli(home, "status")
    assert gone.returncode == 3 and "not running" in gone.stderr


def test_cli_with_no_daemon_ever_started(tmp_path):
    result = cli(tmp_path / "empty", "status")
    assert result.returncode == 3 and "No daemon has run" in result.stderr
    assert ".venv/bin/python launch.py --home" in result.stderr  # no uv on the PATH needed


def test_root_path_serves_the_gui_under_a_reverse_proxy_sub_path(civitai, daemon):
    import httpx

    d = daemon(root_path="/civitai", trusted_hosts=["models.example.net"])
    proxy = {"Host": "models.example.net", "X-Forwarded-Proto": "https"}
    # nginx strips the prefix (proxy_pass with a trailing slash): the daemon sees /gui.
    page = httpx.get(d.url("/gui"), headers=proxy)
    assert page.status_code == 200
    assert 'href="/civitai/static/bootstrap/css/bootstrap.min.css"' in page.text
    assert 'action="/civitai/gui/login"' in page.text
    css = httpx.get(d.url("/static/bootstrap/css/bootstrap.min.css"), headers=proxy)
    assert css.status_code == 200 and "Bootstrap" in css.text[:200]
    login = httpx.post(d.url("/gui/login"), data={"key": d.token}, headers=proxy)
    assert login.status_code == 303 and login.headers["location"] == "/civitai/gui"
    assert "Path=/civitai" in login.headers["set-cookie"]
    session = {
        "civitai_session": login.cookies["civitai_session"]
    }  # the browser sends it to /civitai/
    gui = httpx.get(d.url("/gui"), headers=proxy, cookies=session)
    assert 'data-root="/civitai"' in gui.text
    assert httpx.get(d.url("/api/health"), headers=proxy).json() == {"status": "ok"}
    d.stop()


# run_tests.py and Chromium -------------------------------------------------------------------


@pytest.mark.parametrize(
    "found,root,sudo,apt,commands,said",
    [
        (True, False, False, False, [], ""),
        (
            False,
            True,
            False,
            True,
            [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]],
            "installing chromium for the GUI tests (apt-get install chromium)",
        ),
        (
            False,
            False,
            True,
            True,
            [
                ["sudo", "-n", "apt-get", "update", "-qq"],
                ["sudo", "-n", "apt-get", "install", "-y", "-qq", "chromium"],
            ],
            "installing chromium for the GUI tests (apt-get install chromium)",
        ),
        (False, False, False, True, [], "this user may not run apt-get"),
        (False, True, False, False, [], "there is no apt-get here"),
    ],
)
def test_run_tests_installs_chromium_only_where_it_may_and_else_says_the_fix(
    found, root, sudo, apt, commands, said
):
    plan = run_tests.chromium_plan(found, root, sudo, apt)
    assert plan.commands == commands and said in plan.message
    if not commands and not found:  # it goes on; the GUI tests will fail, saying how to fix it
        assert "the GUI tests will fail" in plan.message
        assert "sudo apt-get install chromium" in plan.message
        assert "CHROMIUM=/path/to/chromium" in plan.message


def test_without_chromium_the_gui_tests_fail_never_skip_with_the_fix(tmp_path):
    missing = tmp_path / "no-such-chromium"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_gui.py::test_login_rejects_a_wrong_key_and_accepts_the_right_one",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO,
        env={**os.environ, "CHROMIUM": str(missing)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout and "skipped" not in result.stdout
    assert f"{missing} is missing" in result.stdout
    assert "sudo apt-get install chromium" in result.stdout
    assert "CHROMIUM=/path/to/chromium" in result.stdout


# ./civitai and a first start ------------------------------------------------------------------


def test_civitai_launcher_shows_the_status_table_of_a_running_daemon(civitai, daemon, home):
    civitai.add_simple(2, 20, b"y" * 3_000_000, filename="slow.safetensors")
    civitai.default_rate = 100_000
    d = daemon(workers=1)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"}).json()
        wait_job(c, job["id"], statuses=("downloading",))
    status = subprocess.run(
        [str(REPO / "civitai"), "status", "--home", str(home)],
        cwd=home,  # anywhere: the launcher finds its own checkout
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"Daemon 0.1.0 at {d.base_url}") and "1 active" in lines[0]
    assert lines[1].split() == ["ID", "STATUS", "TYPE", "FILE", "DONE", "SIZE", "ERROR"]
    assert lines[3].split()[:4] == [str(job["id"]), "downloading", "lora", "slow.safetensors"]
    d.stop()


def test_civitai_launcher_without_a_venv_says_to_run_install_first(tmp_path):
    launcher = tmp_path / "civitai"
    shutil.copy2(REPO / "civitai", launcher)
    result = subprocess.run([str(launcher), "status"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stdout == ""
    assert "Run python3 install.py first" in result.stderr
    assert str(tmp_path / ".venv" / "bin" / "python") in result.stderr


def test_after_install_and_a_first_start_the_checkout_is_clean_and_holds_no_secret(installed):
    class CheckoutDaemon(DaemonProcess):  # the clone's own venv and launch.py, its default home
        @property
        def command(self) -> list[str]:
            return [str(installed / ".venv" / "bin" / "python"), str(installed / "launch.py")]

    d = CheckoutDaemon(installed)
    d.env.pop("CIVITAI_DAEMON_HOME", None)
    d.start(timeout=60)
    status = subprocess.run(
        [str(installed / "civitai"), "status"],
        cwd=installed,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert d.stop() == 0
    assert status.returncode == 0 and f"at {d.base_url}" in status.stdout, status.stderr
    token = read_config(installed)["api_token"]
    assert token and len(token) >= 20
    assert git(installed, "status", "--porcelain", "--untracked-files=all") == ""
    tracked = git(installed, "ls-files", "-z").split("\0")
    holding = [n for n in filter(None, tracked) if token.encode() in (installed / n).read_bytes()]
    assert holding == [], f"the generated api_token is in tracked files {holding}"
    assert "config.json" not in tracked and "manifest.json" not in tracked


# The service's user -----------------------------------------------------------------------------

OTHER_UID = 54321  # owns nothing here: what a fresh service account is to root's files


@pytest.fixture
def layout():
    """A checkout whose venv links to an interpreter in a folder of its own (like ~/.pyenv), and a
    home, all under a folder of /tmp that everyone may enter (tmp_path's pytest-of-root is 700)."""
    base = Path(tempfile.mkdtemp(prefix="civitai-reach-"))
    base.chmod(0o755)
    interpreter = base / "pyenv" / "versions" / "3.11" / "bin" / "python3.11"
    interpreter.parent.mkdir(parents=True)
    interpreter.write_text("#!/bin/sh\necho ran\n")
    interpreter.chmod(0o755)
    (interpreter.parent / "python3").symlink_to("python3.11")
    venv_bin = base / "repo" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(interpreter.parent / "python3")
    (base / "repo" / "launch.py").write_text("")
    (base / "home").mkdir()
    for folder in [p for p in base.rglob("*") if p.is_dir() and not p.is_symlink()]:
        folder.chmod(0o755)
    yield base
    shutil.rmtree(base)


def problem(layout: Path, gids: frozenset[int] = frozenset({OTHER_UID})) -> str:
    python = layout / "repo" / ".venv" / "bin" / "python"
    return install.service_user_problem(
        "civitai", OTHER_UID, set(gids), python, layout / "repo", layout / "home"
    )


def test_a_service_user_who_can_reach_everything_passes(layout):
    assert problem(layout) == ""


def test_an_interpreter_in_a_folder_of_mode_700_is_refused_with_the_fix(layout):
    (layout / "pyenv").chmod(0o700)  # /root/.pyenv
    said = problem(layout)
    assert f"cannot enter {layout / 'pyenv'} (mode 700, owner uid 0)" in said
    assert "leads to " + str(layout / "pyenv" / "versions" / "3.11" / "bin" / "python3.11") in said
    assert "UV_PYTHON=/usr/bin/python3 python3 install.py --user civitai" in said
    assert f"rm -rf {layout / 'repo' / '.venv'}" in said


def test_group_members_may_enter_a_folder_of_mode_750(layout):
    folder = layout / "pyenv"
    os.chown(folder, 0, OTHER_UID)
    folder.chmod(0o750)
    assert problem(layout) == ""
    assert "cannot enter" in problem(layout, gids=frozenset({1}))


def test_an_interpreter_the_user_may_not_execute_is_refused(layout):
    (layout / "pyenv" / "versions" / "3.11" / "bin" / "python3.11").chmod(0o744)
    assert "may not execute" in problem(layout)


def test_a_home_the_user_cannot_reach_is_refused_with_the_fix(layout):
    home = layout / "home"
    layout.chmod(0o700)  # everything under it: the venv is refused first
    assert "cannot run" in problem(layout)
    layout.chmod(0o755)
    home.chmod(0o700)  # only the home (install.py chowns it to the user; its parent must be open)
    assert problem(layout) == ""  # the home itself is given to the user by install.py
    home.chmod(0o755)
    inner = layout / "private" / "home"
    inner.mkdir(parents=True)
    (layout / "private").chmod(0o700)
    python = layout / "repo" / ".venv" / "bin" / "python"
    said = install.service_user_problem(
        "civitai", OTHER_UID, {OTHER_UID}, python, layout / "repo", inner
    )
    assert f"cannot reach the home {inner}" in said and f"chmod o+x {layout / 'private'}" in said


def test_the_check_agrees_with_the_kernel_for_a_real_user(layout):
    """A real account and runuser: the check refuses exactly what the kernel refuses."""
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        skip_unless_ci("needs root with useradd and runuser to create a real service user")
    name = f"civt{os.getpid() % 100000}"
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    try:
        python = layout / "repo" / ".venv" / "bin" / "python"
        for mode in (0o755, 0o700):
            (layout / "pyenv").chmod(mode)
            ran = subprocess.run(
                ["runuser", "-u", name, "--", str(python)], capture_output=True, text=True
            )
            verdict = install.check_service_user(name, python, layout / "home")
            assert (ran.returncode == 0) == (verdict == ""), (mode, ran, verdict)
            assert (ran.stdout == "ran\n") == (mode == 0o755)
        assert "there is no user civitai-nobody-here" in install.check_service_user(
            "civitai-nobody-here", python, layout / "home"
        )
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_the_moved_home_keeps_its_library(civitai, daemon_factory, tmp_path, monkeypatch):
    """The README's commands (less sudo and systemctl) move a home out of a checkout."""
    old = tmp_path / "opt" / "civitai-daemon"
    old.mkdir(parents=True)
    (old / ".venv").symlink_to(REPO / ".venv")  # its sqlite-utils
    civitai.add_simple(1, 10, b"m" * 5000, filename="kept.safetensors")
    write_config(old, civitai_base_url=civitai.base_url)
    d = daemon_factory(old).start()
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_job(c, job["id"])
    assert d.stop() == 0
    new = tmp_path / "var" / "lib" / "civitai-daemon"
    monkeypatch.setattr(install, "REPO", old)
    commands = install.move_commands(new)
    assert commands[0] == "sudo systemctl stop civitai-daemon"
    assert commands[-1] == "sudo python3 install.py --user civitai"
    script = "set -e\n" + "\n".join(c.replace("sudo ", "") for c in commands[1:-1])
    moved = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert moved.returncode == 0, moved.stderr
    assert not (old / "config.json").exists() and not (old / "data" / "completed.db").exists()
    d = daemon_factory(new).start()
    with d.client() as c:
        rows = c.get("/api/completed").json()["completed"]
    assert [r["path"] for r in rows] == [str(new / "data" / "models" / "lora" / "kept.safetensors")]
    assert Path(rows[0]["path"]).read_bytes() == b"m" * 5000
    assert d.stop() == 0
