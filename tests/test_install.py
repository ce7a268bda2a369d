"""Install and operate: install.py, the systemd unit, setup.sh, and the CLI."""

from __future__ import annotations

import argparse
import configparser
import json
import shutil
import subprocess
import sys

import pytest

import install
from tests.conftest import REPO, read_config, wait_job


def run_install(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "install.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_dry_run_prints_every_step_and_the_unit_and_changes_nothing(tmp_path):
    home = tmp_path / "fresh-home"
    result = run_install("--dry-run", "--service", "--home", str(home), "--user", "civitai")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "would run:" in out and "sync --frozen" in out
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
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == str(tmp_path / "home")
    assert int(service["TimeoutStopSec"]) > 10  # the daemon's own graceful stop takes at most 10 s
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"  # systemctl reload: live settings
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    tool = shutil.which("systemd-analyze")
    if tool:  # the issue asks for this check where the tool exists
        path = tmp_path / install.UNIT_NAME
        path.write_text(unit_text)
        verify = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr


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


def test_install_without_systemd_skips_the_service_and_is_safe_to_rerun(tmp_path):
    home = tmp_path / "home"
    first = run_install("--no-start", "--home", str(home))
    assert first.returncode == 0, first.stderr
    assert "skipped the systemd service" in first.stdout
    assert "to install it later: sudo python3 install.py" in first.stdout
    assert "start it with:" in first.stdout
    assert (home / "config.json").exists() and (home / "manifest.json").exists()
    (home / "config.json").write_text(json.dumps({**read_config(home), "workers": 3}))
    again = run_install("--no-start", "--home", str(home))
    assert again.returncode == 0 and read_config(home)["workers"] == 3


def test_install_refuses_a_bad_config_with_the_reason(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text('{"workers": "lots"}')
    result = run_install("--no-start", "--home", str(home))
    assert result.returncode != 0
    assert "'workers'" in result.stderr and "Fix config.json" in result.stderr


def test_uninstall_dry_run_shows_the_plan_and_keeps_data():
    result = run_install("--uninstall", "--dry-run")
    assert result.returncode == 0
    out = result.stdout
    assert "would run: systemctl disable --now civitai-daemon.service" in out
    assert "would remove /etc/systemd/system/civitai-daemon.service" in out
    assert "home, its config, models and database are kept" in out


def test_setup_sh_reports_each_step(tmp_path):
    home = tmp_path / "home"
    result = subprocess.run(
        ["bash", str(REPO / "setup.sh"), "--no-start", "--home", str(home)],
        cwd=REPO,
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
