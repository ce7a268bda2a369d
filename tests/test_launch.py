"""Starting the daemon as a user does: home, port rules, the GUI line, a clean stop."""

from __future__ import annotations

import json
import signal
import socket

import httpx
import pytest

from tests.conftest import read_config, write_config


def test_first_start_creates_home_picks_port_in_range_and_writes_it_back(home, daemon_factory):
    fresh = home / "new" / "nested"
    d = daemon_factory(fresh).start()
    port = d.port
    assert 8100 <= port <= 8200 and port not in (8000, 8188)
    assert d.gui_line == f"GUI: http://127.0.0.1:{port}/gui"
    config = read_config(fresh)
    assert config["active_port"] == port
    assert config["api_token"] and len(config["api_token"]) >= 32
    assert (fresh / "manifest.json").read_text().strip() == "[]"
    assert (fresh / "data").is_dir() and (fresh / "logs").is_dir()
    assert oct((fresh / "config.json").stat().st_mode & 0o777) == "0o600"
    assert httpx.get(d.url("/api/health")).json() == {"status": "ok"}
    assert d.stop(signal.SIGTERM) == 0


def test_written_port_keeps_every_other_key_and_value(home, daemon_factory):
    write_config(home, workers=3, throttle=1000, my_note="kept", active_port=None)
    d = daemon_factory(home).start()
    config = read_config(home)
    assert config["active_port"] == d.port
    assert config["workers"] == 3 and config["throttle"] == 1000 and config["my_note"] == "kept"
    d.stop()


def test_configured_port_is_reused_on_the_next_start(home, daemon_factory):
    first = daemon_factory(home).start()
    port = first.port
    assert first.stop() == 0
    second = daemon_factory(home).start()
    assert second.port == port
    second.stop()


def test_busy_configured_port_is_a_clear_error_with_exit_2(home, daemon_factory):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    busy = blocker.getsockname()[1]
    try:
        write_config(home, active_port=busy)
        result = daemon_factory(home).run_to_exit()
    finally:
        blocker.close()
    assert result.returncode == 2
    assert f"Port {busy}" in result.stderr and "already in use" in result.stderr
    assert "--port" in result.stderr  # says how to fix it
    assert read_config(home)["active_port"] == busy  # never silently changed


def test_a_port_the_daemon_picked_and_finds_taken_is_picked_again_aloud(home, daemon_factory):
    first = daemon_factory(home).start()
    picked = first.port
    assert first.stop() == 0
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", picked))
    blocker.listen()
    try:
        second = daemon_factory(home).start()
        assert second.port != picked and 8100 <= second.port <= 8200
        assert read_config(home)["active_port"] == second.port
        said = second.stderr_text()
        assert f"port {picked}, which this daemon picked" in said
        assert f"listening on {second.port} instead" in said
        second.stop()
    finally:
        blocker.close()


def test_a_port_a_person_set_is_never_picked_again_even_after_a_pick(home, daemon_factory):
    first = daemon_factory(home).start()
    assert first.stop() == 0
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    busy = blocker.getsockname()[1]
    try:
        write_config(home, active_port=busy)  # by hand, after the daemon had picked one
        result = daemon_factory(home).run_to_exit()
    finally:
        blocker.close()
    assert result.returncode == 2 and f"Port {busy}" in result.stderr
    assert read_config(home)["active_port"] == busy


def test_port_flag_overrides_config_and_is_not_written_back(home, daemon_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    write_config(home, active_port=None)
    d = daemon_factory(home, "--port", str(free)).start()
    assert d.port == free
    assert httpx.get(d.url("/api/health")).status_code == 200
    d.stop()
    assert read_config(home)["active_port"] is None


def test_home_from_environment_variable(tmp_path, daemon_factory):
    env_home = tmp_path / "from-env"
    d = daemon_factory(env_home, env={"CIVITAI_DAEMON_HOME": str(env_home)}, home_flag=False)
    d.start()
    assert (env_home / "config.json").exists()
    assert read_config(env_home)["active_port"] == d.port
    assert d.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_exit_0(home, daemon_factory, sig):
    d = daemon_factory(home).start()
    assert d.stop(sig, timeout=10) == 0
    log = (home / "logs" / "download.log").read_text()
    assert "daemon stopped" in log


def test_host_flag_binds_that_address(home, daemon_factory):
    d = daemon_factory(home, "--host", "127.0.0.3").start()
    assert d.gui_line.startswith("GUI: http://127.0.0.3:")
    assert httpx.get(f"http://127.0.0.3:{d.port}/api/health").status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{d.port}/api/health", timeout=1)
    d.stop()
    assert json.loads((home / "config.json").read_text())["host"] == "127.0.0.1"
