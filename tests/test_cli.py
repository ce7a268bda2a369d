"""The command line finds the daemon of its home however it was started, and speaks job ids."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, assert_file_is, read_config, wait_job, write_config


def cli(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CIVITAI_DAEMON_URL", "CIVITAI_DAEMON_TOKEN", "CIVITAI_DAEMON_HOME")
    }
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "--home", str(home), *args],
        cwd=REPO,
        env=environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_on_port(home: Path, civitai, daemon_factory):
    """A daemon started with --port N, so config.json keeps active_port null."""
    write_config(home, civitai_base_url=civitai.base_url, active_port=None, workers=1)
    d = daemon_factory(home, "--port", str(free_port())).start()
    assert read_config(home)["active_port"] is None
    return d


def test_cli_finds_a_daemon_started_with_port_flag_through_its_home(home, civitai, daemon_factory):
    d = start_on_port(home, civitai, daemon_factory)
    record = json.loads((home / "data" / "daemon.json").read_text())
    assert record["pid"] == d.proc.pid and record["port"] == d.port
    assert record["host"] == "127.0.0.1" and record["url"] == d.base_url
    assert record["started"].endswith("Z")
    status = cli(home, "status")
    assert status.returncode == 0, status.stderr
    assert f"at {d.base_url}," in status.stdout and "0 queued" in status.stdout
    assert d.stop() == 0
    assert not (home / "data" / "daemon.json").exists()  # a clean stop removes it
    gone = cli(home, "status")
    assert gone.returncode == 3 and "No daemon has run with the home" in gone.stderr


def test_cli_url_flag_and_environment_variable_reach_a_daemon_the_home_does_not_name(
    home, tmp_path, civitai, daemon_factory
):
    d = start_on_port(home, civitai, daemon_factory)
    (home / "data" / "daemon.json").unlink()  # the home no longer says where it runs
    lost = cli(home, "status")
    assert lost.returncode == 3 and "--url" in lost.stderr
    by_flag = cli(home, "status", "--url", d.base_url)
    assert by_flag.returncode == 0 and f"at {d.base_url}," in by_flag.stdout
    by_env = cli(home, "status", env={"CIVITAI_DAEMON_URL": d.base_url})
    assert by_env.returncode == 0 and f"at {d.base_url}," in by_env.stdout
    # Another machine's CLI: no home of that daemon, the key from the environment.
    elsewhere = cli(
        tmp_path / "elsewhere",
        "--url",
        d.base_url,
        "status",
        env={"CIVITAI_DAEMON_TOKEN": d.token},
    )
    assert elsewhere.returncode == 0 and f"at {d.base_url}," in elsewhere.stdout
    wrong_key = cli(
        tmp_path / "elsewhere", "status", "--url", d.base_url, env={"CIVITAI_DAEMON_TOKEN": "x"}
    )
    # The daemon cannot prove it holds a key it does not hold: the CLI keeps that key to itself.
    assert wrong_key.returncode == 3, wrong_key.stderr
    assert f"No daemon answers at {d.base_url}" in wrong_key.stderr
    assert "or the key is not that daemon's" in wrong_key.stderr
    d.stop()


def test_cli_after_kill_9_names_the_stale_record_and_exits_3(home, civitai, daemon_factory):
    d = start_on_port(home, civitai, daemon_factory)
    pid = d.proc.pid
    d.kill()
    assert (home / "data" / "daemon.json").exists()  # nothing could remove it
    result = cli(home, "status")
    assert result.returncode == 3, result.stderr
    assert f"names process {pid}" in result.stderr and "no longer running" in result.stderr
    assert "killed or crashed" in result.stderr and "launch.py --home" in result.stderr
    # The next start replaces the stale record with its own.
    again = daemon_factory(home, "--port", str(free_port())).start()
    assert json.loads((home / "data" / "daemon.json").read_text())["pid"] == again.proc.pid
    assert cli(home, "status").returncode == 0
    again.stop()


def test_cli_add_file_id_downloads_that_file_of_the_version(home, civitai, daemon):
    main = civitai.file(b"m" * 4000, name="main.safetensors", primary=True)
    other = civitai.file(b"o" * 3000, name="other.safetensors", primary=False, type="Pruned Model")
    civitai.add_model(5, "Two files", "LORA", versions=[civitai.version(50, files=[main, other])])
    d = daemon(workers=1)
    added = cli(home, "add", "--version", "50", "--file-id", str(other.id), "--type", "lora")
    assert added.returncode == 0, added.stderr
    job_id = int(added.stdout.split()[1])
    with d.client() as c:
        job = wait_job(c, job_id)
    assert job["fileId"] == other.id and job["filename"] == "other.safetensors"
    assert_file_is(job["path"], hashlib.sha256(b"o" * 3000).hexdigest())
    d.stop()


def test_cli_completed_prints_the_job_id_that_retry_takes(home, civitai, daemon):
    civitai.add_simple(1, 10, b"a" * 2000, filename="a.safetensors")
    civitai.add_simple(2, 20, b"b" * 2000, filename="b.safetensors")
    d = daemon(workers=1)
    with d.client() as c:
        # A cancelled job first, so job ids and completed-row ids differ.
        civitai.default_rate = 1000
        slow = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"}).json()
        assert c.post(f"/api/jobs/{slow['id']}/cancel").json()["status"] == "cancelled"
        civitai.default_rate = None
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_job(c, job["id"])
    listed = json.loads(cli(home, "completed", "--json").stdout)["completed"]
    assert [r["job_id"] for r in listed] == [job["id"]] and listed[0]["id"] != job["id"]
    text = cli(home, "completed").stdout.splitlines()
    printed = int(text[2].split()[0])
    assert printed == job["id"]
    assert text[0].split()[0] == "JOB"
    # The printed id is the job's: the API knows it as this file's job, and retry refuses it
    # for being completed (not "no job N", nor another job retried).
    with d.client() as c:
        assert c.get(f"/api/jobs/{printed}").json()["filename"] == "a.safetensors"
    retried = cli(home, "retry", str(printed))
    assert retried.returncode == 1
    assert f"Job {printed} is completed; only failed or cancelled" in retried.stderr
    d.stop()


def test_stale_record_from_a_dead_process_is_not_trusted(tmp_path):
    """Unit: a record whose pid has ended is read but reported as not running."""
    from config import daemon_record

    home = tmp_path / "h"
    (home / "data").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "port": 8123, "host": "127.0.0.1", "url": "http://x", "started": "t"}
    (home / "data" / "daemon.json").write_text(json.dumps(record))
    read = daemon_record.read(home)
    assert read is not None and read.pid == dead.pid
    assert not daemon_record.is_running(read.pid)
    assert daemon_record.is_running(os.getpid())


def test_cli_never_sends_this_homes_key_to_a_url_on_another_machine(home, tmp_path):
    """--url to another machine needs that daemon's key in CIVITAI_DAEMON_TOKEN; the home's own
    admin key is not sent (a mistyped or hostile address would receive it)."""
    from tests.conftest import write_config

    write_config(home, api_token="home-admin-key-do-not-send")
    for url in ("http://192.0.2.7:8137", "https://models.example.net"):
        result = cli(home, "status", "--url", url)
        assert result.returncode == 1, result.stderr
        assert "is not on this machine" in result.stderr and "CIVITAI_DAEMON_TOKEN" in result.stderr
    import cli as cli_module

    assert cli_module.is_loopback("http://127.0.0.1:8137") and cli_module.is_loopback(
        "http://[::1]:8137"
    )
    assert cli_module.is_loopback("http://localhost:8137")
    assert not cli_module.is_loopback("http://127.0.0.1.example.net:8137")


def test_cli_shows_control_characters_from_the_daemon_as_question_marks():
    """A name or an error that holds a terminal escape sequence cannot drive the terminal."""
    import cli as cli_module

    shown = cli_module.table([["evil\x1b]0;owned\x07.safetensors", "a\nb"]], ["NAME", "X"])
    assert "\x1b" not in shown and "\x07" not in shown
    assert "evil?]0;owned?.safetensors" in shown and "a?b" in shown
    assert cli_module.printable("line 1\nline\x1b[2J 2", lines=True) == "line 1\nline?[2J 2"
