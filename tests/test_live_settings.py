"""Settings that apply while the daemon runs: GET/PATCH /api/settings and SIGHUP (SPEC §3, §14)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import threading
import time
from datetime import datetime
from urllib.parse import urlsplit

import httpx

from config.settings import CONFIG_KEYS
from tests.conftest import (
    assert_file_is,
    read_config,
    run_job,
    wait_for,
    wait_job,
    write_config,
)
from tests.fake_civitai import TOKEN
from tests.receiver import Receiver

MB = 1_000_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def job_of(c: httpx.Client, job_id: int) -> dict:
    return c.get(f"/api/jobs/{job_id}").json()


def log_text(home) -> str:
    return (home / "logs" / "download.log").read_text(errors="replace")


def test_settings_are_for_the_admin_key_only_and_never_show_a_secret(civitai, daemon):
    d = daemon(
        viewer_token="viewer-key-0123456789",
        webhook_secret="hook-secret-0123456789",
        civitai_token="civitai-secret-0123456789",
        notify=[{"type": "telegram", "bot_token": "bot-secret-0123456789", "chat_id": 42}],
    )
    anonymous = httpx.get(d.url("/api/settings"))
    assert anonymous.status_code == 401 and "valid API key" in anonymous.json()["detail"]
    viewer = {"Authorization": "Bearer viewer-key-0123456789"}
    for method in ("GET", "PATCH"):
        r = httpx.request(method, d.url("/api/settings"), headers=viewer, json={"throttle": 1})
        assert r.status_code == 403, r.text
        assert r.json() == {"detail": r.json()["detail"]} and "viewer key" in r.json()["detail"]
    with d.client() as c:
        r = c.get("/api/settings")
    assert r.status_code == 200, r.text
    for secret in ("viewer-key", "hook-secret", "civitai-secret", "bot-secret", d.token):
        assert secret not in r.text
    view = r.json()
    assert set(view["settings"]) == set(CONFIG_KEYS) == set(view["keys"])
    for key in ("civitai_token", "api_token", "viewer_token", "webhook_secret"):
        assert view["settings"][key] == {"set": True} and view["keys"][key]["secret"], key
    assert view["settings"]["notify"][0]["bot_token"] == {"set": True}
    assert view["settings"]["notify"][0]["chat_id"] == 42
    assert view["settings"]["workers"] == 2 and view["settings"]["timeout"] == 10
    for key in ("host", "active_port", "download_dir"):
        assert view["keys"][key]["applies"] == "at next start" and view["keys"][key]["why"]
    for key in ("throttle", "workers", "civitai_token", "update_check", "notify"):
        assert view["keys"][key]["applies"] == "live", key
    assert view["keys"]["civitai_token"]["source"] == "config"
    assert view["settings"]["active_port"] == d.port
    assert view["restart_needed"] == [] and view["problem"] is None
    d.stop()


def test_a_bad_value_is_refused_naming_key_value_and_allowed_and_nothing_is_written(
    civitai, daemon, home
):
    d = daemon()
    before = (home / "config.json").read_bytes()
    with d.client() as c:
        cases = [
            (
                {"throttle": 1000, "workers": 0},
                ["'workers'", "has value 0", "greater than or equal to 1"],
            ),
            ({"log_level": "LOUD"}, ["'log_level'", '"LOUD"', "'DEBUG', 'INFO', 'WARNING'"]),
            ({"update_check": {"hour": 25}}, ["'update_check.hour'", "has value 25"]),
            ({"wokers": 3}, ["Unknown setting 'wokers'", "workers"]),
            ({"civitai_token": 123}, ["'civitai_token' is a secret", "null to clear"]),
            ({"api_token": None}, ["'api_token' cannot be cleared"]),
            ([1, 2], ["JSON object"]),
        ]
        for body, words in cases:
            r = c.patch("/api/settings", json=body)
            assert r.status_code == 422, (body, r.text)
            assert list(r.json()) == ["detail"], r.text
            detail = r.json()["detail"]
            for word in words:
                assert word in detail, (body, detail)
        assert c.get("/api/settings").json()["settings"]["throttle"] == 0
    assert (home / "config.json").read_bytes() == before
    d.stop()


def test_a_patch_writes_config_json_keeping_other_keys_and_says_what_waits_for_a_restart(
    civitai, daemon, home
):
    write_config(home, custom_note={"kept": [1, 2]})
    d = daemon()
    with d.client() as c:
        r = c.patch("/api/settings", json={"throttle": 5 * MB, "host": "0.0.0.0", "retries": 7})
        assert r.status_code == 200, r.text
        view = r.json()
        assert view["changed"] == ["retries", "throttle"]
        assert view["restart_needed"] == ["host"]
        assert view["settings"]["host"] == "127.0.0.1"  # still bound where it started
        assert view["keys"]["host"]["next_start"] == "0.0.0.0"
        assert view["settings"]["throttle"] == 5 * MB and view["settings"]["retries"] == 7
        assert c.get("/api/settings").json()["restart_needed"] == ["host"]
        assert c.get("/api/health").status_code == 200  # the Host check still knows 127.0.0.1
    data = read_config(home)
    assert data["throttle"] == 5 * MB and data["retries"] == 7 and data["host"] == "0.0.0.0"
    assert data["custom_note"] == {"kept": [1, 2]}
    assert data["civitai_base_url"] == civitai.base_url and data["api_token"] == d.token
    assert stat.S_IMODE((home / "config.json").stat().st_mode) == 0o600
    assert [p.name for p in home.iterdir() if p.name.startswith(".config")] == []
    d.stop()


def test_a_civitai_token_set_by_patch_is_used_by_the_retry_of_the_failed_job(civitai, daemon, home):
    data = os.urandom(300_000)
    civitai.add_simple(1, 10, data, login_required=True)
    d = daemon(civitai_token="wrong-token-0123456789")
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    assert "refused the API token" in failed["error"], failed["error"]
    with d.client() as c:
        r = c.patch("/api/settings", json={"civitai_token": TOKEN})
        assert r.status_code == 200, r.text
        assert r.json()["changed"] == ["civitai_token"]
        assert r.json()["settings"]["civitai_token"] == {"set": True} and TOKEN not in r.text
        assert c.post(f"/api/jobs/{failed['id']}/retry").json()["status"] == "queued"
        done = wait_job(c, failed["id"])
    assert_file_is(done["path"], sha(data))
    sent = civitai.requests_to("api", "/api/download")[-1].headers["authorization"]
    assert sent == f"Bearer {TOKEN}"
    assert read_config(home)["civitai_token"] == TOKEN
    d.stop()
    for log in (home / "logs").iterdir():
        assert TOKEN not in log.read_text()


def test_civitai_token_from_the_environment_is_shown_and_a_patch_of_it_is_refused(
    civitai, home, daemon_factory
):
    write_config(home, civitai_base_url=civitai.base_url)
    d = daemon_factory(home, env={"CIVITAI_TOKEN": "from-the-environment"}).start()
    before = (home / "config.json").read_bytes()
    with d.client() as c:
        view = c.get("/api/settings").json()
        assert view["keys"]["civitai_token"]["source"] == "environment"
        assert view["settings"]["civitai_token"] == {"set": True}
        r = c.patch("/api/settings", json={"civitai_token": "another"})
        assert r.status_code == 409, r.text
        assert "CIVITAI_TOKEN is set in the daemon's environment" in r.json()["detail"]
        assert "from-the-environment" not in r.text
    assert (home / "config.json").read_bytes() == before
    d.stop()


def test_a_changed_api_or_viewer_key_ends_the_sessions_issued_for_the_old_one(civitai, daemon):
    d = daemon(viewer_token="viewer-key-0123456789")
    old = d.token
    browsers = {}
    for role, key in (("admin", old), ("viewer", "viewer-key-0123456789")):
        b = httpx.Client(base_url=d.base_url, timeout=10)
        r = b.post("/gui/login", data={"key": key})
        assert r.status_code == 303 and "civitai_session" in b.cookies, r.text
        assert b.get("/api/status").status_code == 200
        browsers[role] = b
    with httpx.Client(base_url=d.base_url, headers={"X-API-Key": old}, timeout=10) as c:
        r = c.patch("/api/settings", json={"viewer_token": "viewer-key-NEW-0123456789"})
        assert r.status_code == 200, r.text
        assert browsers["viewer"].get("/api/status").status_code == 401
        assert browsers["admin"].get("/api/status").status_code == 200  # its key is unchanged
        r = c.patch("/api/settings", json={"api_token": "admin-key-NEW-0123456789"})
        assert r.status_code == 200, r.text
        assert c.get("/api/status").status_code == 401  # the old key itself is refused now
    assert browsers["admin"].get("/api/status").status_code == 401
    assert 'id="key"' in browsers["admin"].get("/gui").text  # the login form again
    new = httpx.get(d.url("/api/status"), headers={"X-API-Key": "admin-key-NEW-0123456789"})
    assert new.status_code == 200
    assert read_config(d.home)["api_token"] == "admin-key-NEW-0123456789"
    for b in browsers.values():
        b.close()
    d.stop()


def test_more_workers_start_queued_jobs_and_fewer_never_stop_a_running_one(civitai, daemon):
    blobs = {10: os.urandom(4 * MB), 20: os.urandom(2 * MB), 30: os.urandom(100_000)}
    for version, data in blobs.items():
        civitai.add_simple(version, version, data, filename=f"w{version}.safetensors")
    civitai.default_rate = 400_000  # per connection: 10 s for the first file, 5 s for the second
    d = daemon(workers=1)
    with d.client() as c:
        ids = {}
        for version in (10, 20):
            r = c.post("/api/download", json={"modelVersionId": version, "model_type": "lora"})
            ids[version] = r.json()["id"]
        wait_for(lambda: job_of(c, ids[10])["status"] == "downloading", what="first downloading")
        assert job_of(c, ids[20])["status"] == "queued"
        assert c.patch("/api/settings", json={"workers": 2}).status_code == 200
        wait_for(lambda: job_of(c, ids[20])["status"] == "downloading", what="second to start")
        assert job_of(c, ids[10])["status"] == "downloading"
        assert c.get("/api/status").json()["workers"] == 2
        r = c.patch("/api/settings", json={"workers": 1})
        assert r.status_code == 200 and c.get("/api/status").json()["workers"] == 1
        r = c.post("/api/download", json={"modelVersionId": 30, "model_type": "lora"})
        ids[30] = r.json()["id"]
        samples = []

        def all_done() -> bool:
            states = {v: job_of(c, i)["status"] for v, i in ids.items()}
            samples.append(states)
            assert "failed" not in states.values(), states
            return all(s == "completed" for s in states.values())

        wait_for(all_done, timeout=60, interval=0.1, what="all three to complete")
        # Fewer workers: the two running downloads went on to the end, and the third waited
        # for both; the window in which a second worker would have taken it was seen.
        assert not [s for s in samples if s[30] != "queued" and "downloading" in (s[10], s[20])]
        assert [s for s in samples if s[20] == "completed" and s[10] == "downloading"], samples
        for version, job_id in ids.items():
            job = job_of(c, job_id)
            assert job["attempts"] <= 1, job  # never restarted
            assert_file_is(job["path"], sha(blobs[version]))
    d.stop()


def test_a_lifted_throttle_speeds_up_the_download_already_running(civitai, daemon):
    data = os.urandom(3 * MB)
    civitai.add_simple(1, 10, data)
    d = daemon(throttle=50_000)  # 60 s for this file
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: job_of(c, job["id"])["bytes_done"] > 0, what="bytes to flow")
        assert job_of(c, job["id"])["bytes_done"] < 2 * MB
        assert c.patch("/api/settings", json={"throttle": 0}).status_code == 200
        done = wait_job(c, job["id"], timeout=25)  # well before the 60 s the old cap needed
    assert_file_is(done["path"], sha(data))
    d.stop()


def test_a_new_update_check_time_reschedules_the_daily_check(civitai, daemon):
    d = daemon(update_check={"enabled": True, "hour": 4, "minute": 0})
    with d.client() as c:
        first = datetime.fromisoformat(c.get("/api/updates").json()["next_check"])
        assert (first.hour, first.minute) == (4, 0)
        r = c.patch(
            "/api/settings", json={"update_check": {"enabled": True, "hour": 13, "minute": 37}}
        )
        assert r.status_code == 200 and r.json()["changed"] == ["update_check"]
        moved = datetime.fromisoformat(c.get("/api/updates").json()["next_check"])
        assert (moved.hour, moved.minute) == (13, 37)
        c.patch(
            "/api/settings", json={"update_check": {"enabled": False, "hour": 13, "minute": 37}}
        )
        off = c.get("/api/updates").json()
        assert off["next_check"] is None and off["scheduled_jobs"] == 0
    d.stop()


def test_a_webhook_and_an_allowed_host_set_by_patch_serve_the_next_job(civitai, daemon):
    data = os.urandom(200_000)
    civitai.add_simple(1, 10, data)
    receiver = Receiver().start()
    d = daemon(allowed_hosts=["civitai.com"])
    direct = f"{civitai.cdn_url}/file/10/model.safetensors"
    cdn_host = urlsplit(civitai.cdn_url).hostname
    with d.client() as c:
        refused = c.post("/api/download", json={"url": direct, "model_type": "lora"})
        assert refused.status_code == 422 and "not allowed" in refused.json()["detail"]
        r = c.patch(
            "/api/settings",
            json={
                "webhook_url": receiver.url + "/hook",
                "webhook_secret": "hook-secret-0123456789",
                "allowed_hosts": ["civitai.com", cdn_host],
            },
        )
        assert r.status_code == 200, r.text
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    assert_file_is(done["path"], sha(data))
    got = wait_for(lambda: receiver.received, 15, what="the webhook")
    assert got[0].json["event"] == "download.completed" and got[0].json["job"]["id"] == done["id"]
    assert got[0].headers["x-signature-256"].startswith("sha256=")
    with d.client() as c:
        accepted = c.post("/api/download", json={"url": direct, "model_type": "lora"})
        assert accepted.status_code in (200, 202), accepted.text
    receiver.stop()
    d.stop()


def test_sighup_reads_config_json_again_and_the_retry_uses_the_new_token(civitai, daemon, home):
    data = os.urandom(300_000)
    civitai.add_simple(1, 10, data, login_required=True)
    d = daemon(civitai_token="wrong-token-0123456789")
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    write_config(home, civitai_token=TOKEN)
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: "SIGHUP: config.json read again" in log_text(home), what="the reload")
    assert "applied: civitai_token" in log_text(home)
    with d.client() as c:
        assert c.post(f"/api/jobs/{failed['id']}/retry").status_code == 200
        done = wait_job(c, failed["id"])
    assert_file_is(done["path"], sha(data))
    assert d.proc.poll() is None
    d.stop()


def test_sighup_with_a_bad_value_logs_the_key_and_keeps_running_on_the_settings_before(
    civitai, daemon, home
):
    d = daemon(throttle=0)
    write_config(home, workers="many", throttle=1000)
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: "config.json not applied" in log_text(home), what="the refusal")
    line = log_text(home).split("config.json not applied")[1]
    assert "'workers'" in line and '"many"' in line and "valid integer" in line
    assert "config.json not applied" in (home / "logs" / "error.log").read_text()
    assert d.proc.poll() is None
    with d.client() as c:
        view = c.get("/api/settings").json()
        assert view["settings"]["throttle"] == 0 and view["settings"]["workers"] == 2
        assert "'workers'" in view["problem"]
    write_config(home, workers=3)
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: "applied: throttle, workers" in log_text(home), what="the good reload")
    with d.client() as c:
        assert c.get("/api/status").json()["workers"] == 3
    d.stop()


def test_every_key_is_either_live_or_says_why_it_waits_for_a_restart():
    from config.live import LIVE_KEYS, why_at_next_start

    assert LIVE_KEYS <= set(CONFIG_KEYS)
    for key in sorted(set(CONFIG_KEYS) - LIVE_KEYS):
        assert why_at_next_start(key) and "not applied live" not in why_at_next_start(key), key
    assert json.dumps(sorted(set(CONFIG_KEYS) - LIVE_KEYS)) == json.dumps(
        ["active_port", "download_dir", "host", "root_path"]
    )


def test_trusted_hosts_and_log_level_set_by_patch_apply_to_the_next_request(civitai, daemon, home):
    civitai.add_simple(1, 10, os.urandom(100_000))
    d = daemon()
    named = {"Host": f"models.example:{d.port}"}
    with d.client() as c:
        refused = c.get("/api/status", headers=named)
        assert refused.status_code == 400 and "trusted_hosts" in refused.json()["detail"]
        r = c.patch(
            "/api/settings", json={"trusted_hosts": ["models.example"], "log_level": "DEBUG"}
        )
        assert r.status_code == 200 and r.json()["changed"] == ["log_level", "trusted_hosts"]
        assert c.get("/api/status", headers=named).status_code == 200
    assert "HTTP Request:" not in log_text(home)  # httpx's request lines: DEBUG only
    run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    assert "HTTP Request:" in log_text(home)
    assert "settings changed (log_level, trusted_hosts): applied: log_level" in log_text(home)
    d.stop()


def test_a_new_civitai_base_url_needs_the_token_again_so_a_key_holder_cannot_read_it(
    civitai, daemon, home
):
    data = os.urandom(200_000)
    civitai.add_simple(1, 10, data)
    thief = Receiver().start()  # a server of the caller's own, to which the token would go
    d = daemon(civitai_token="civitai-secret-0123456789")
    before = (home / "config.json").read_bytes()
    with d.client() as c:
        r = c.patch("/api/settings", json={"civitai_base_url": thief.url})
        assert r.status_code == 422, r.text
        assert list(r.json()) == ["detail"]
        assert "sends civitai_token to this address" in r.json()["detail"]
        assert "send civitai_token (or null to clear it)" in r.json()["detail"]
        assert (home / "config.json").read_bytes() == before
        same = c.patch("/api/settings", json={"civitai_base_url": civitai.base_url + "/"})
        assert same.status_code == 200, same.text  # the same address: nothing to protect
        moved = c.patch(
            "/api/settings", json={"civitai_base_url": thief.url, "civitai_token": None}
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["settings"]["civitai_token"] == {"set": False}
    assert read_config(home)["civitai_base_url"] == thief.url
    assert read_config(home)["civitai_token"] is None
    thief.stop()
    d.stop()


def test_a_telegram_target_moved_to_another_api_base_needs_its_bot_token_again(
    civitai, daemon, home
):
    civitai.add_simple(1, 10, b"a" * 1000, filename="a.safetensors")
    telegram, thief = Receiver().start(), Receiver().start()
    target = {"type": "telegram", "chat_id": 42, "api_base": telegram.url}
    d = daemon(notify=[{**target, "bot_token": "123:bot-secret"}])
    before = (home / "config.json").read_bytes()
    with d.client() as c:
        r = c.patch("/api/settings", json={"notify": [{**target, "api_base": thief.url}]})
        assert r.status_code == 422, r.text
        assert "send bot_token again with the new api_base" in r.json()["detail"]
        assert "bot-secret" not in r.text
        assert (home / "config.json").read_bytes() == before
        kept = c.patch("/api/settings", json={"notify": [target]})  # as the GUI saves it
        assert kept.status_code == 200, kept.text
        assert kept.json()["settings"]["notify"][0]["bot_token"] == {"set": True}
    run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    wait_for(lambda: telegram.received, 10, what="the Telegram message")
    assert telegram.received[0].path == "/bot123:bot-secret/sendMessage"
    assert thief.received == []
    telegram.stop()
    thief.stop()
    d.stop()


def test_a_misshapen_notify_in_config_json_is_refused_without_showing_its_bot_token(
    civitai, daemon, home
):
    d = daemon()
    bad = {"type": "telegram", "bot_token": "123:bot-secret-0123456789", "chat_id": 42}
    write_config(home, notify=bad)  # an object where a list belongs
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: "config.json not applied" in log_text(home), what="the refusal")
    line = log_text(home).split("config.json not applied")[1]
    assert "key 'notify'" in line and "valid list" in line and '"<hidden>"' in line, line
    with d.client() as c:
        view = c.get("/api/settings")
        assert "key 'notify'" in view.json()["problem"]
        refused = c.patch("/api/settings", json={"notify": bad})
        assert refused.status_code == 422 and "valid list" in refused.json()["detail"]
    d.stop()
    for text in [view.text, refused.text] + [f.read_text() for f in (home / "logs").iterdir()]:
        assert "bot-secret" not in text


def test_a_reload_while_the_daemon_starts_or_stops_never_ends_it(civitai, home, daemon_factory):
    # `systemctl reload` right after `systemctl start` (or during a stop) sends SIGHUP before
    # the app listens for it (or after it stopped listening): the default action ends a process.
    write_config(home, civitai_base_url=civitai.base_url)
    d = daemon_factory(home)
    d.start(wait=False)
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(d.proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(30)
    assert first and first[0].startswith("GUI: "), d.fail_text()
    d.gui_line = first[0].strip()
    deadline = time.monotonic() + 30
    healthy = False
    while not healthy and d.proc.poll() is None and time.monotonic() < deadline:
        os.kill(d.proc.pid, signal.SIGHUP)  # from the GUI line on, until the app answers
        try:
            healthy = httpx.get(d.url("/api/health"), timeout=1).status_code == 200
        except httpx.TransportError:
            time.sleep(0.02)
    assert d.proc.poll() is None, f"a SIGHUP during the start ended the daemon: {d.fail_text()}"
    assert healthy
    os.kill(d.proc.pid, signal.SIGHUP)  # once it answers, a SIGHUP reads config.json again
    wait_for(lambda: "SIGHUP: config.json read again" in log_text(home), what="a reload")
    d.proc.send_signal(signal.SIGTERM)
    while d.proc.poll() is None and time.monotonic() < deadline + 30:
        os.kill(d.proc.pid, signal.SIGHUP)  # until it has stopped
        time.sleep(0.01)
    assert d.proc.returncode == 0, f"a SIGHUP during the stop: {d.fail_text()}"
    assert not (home / "data" / "daemon.json").exists()


def test_a_key_no_http_header_can_carry_as_written_is_refused_so_nobody_is_locked_out(
    civitai, daemon, home
):
    d = daemon()
    before = (home / "config.json").read_bytes()
    with d.client() as c:
        for key in ("api_token", "viewer_token"):
            for value in (
                "new-admin-key-0123456789\n",
                " padded-key-0123456789 ",
                "schlüssel-01234567",
            ):
                r = c.patch("/api/settings", json={key: value})
                assert r.status_code == 422, (key, value, r.text)
                assert f"key '{key}' must be printable ASCII with no space" in r.json()["detail"]
        assert (home / "config.json").read_bytes() == before
        assert c.get("/api/status").status_code == 200  # the key in force still works
        ok = c.patch("/api/settings", json={"api_token": "new-admin-key-0123456789"})
        assert ok.status_code == 200, ok.text
    new = httpx.get(
        d.url("/api/status"), headers={"Authorization": "Bearer new-admin-key-0123456789"}
    )
    assert new.status_code == 200, new.text
    d.stop()
