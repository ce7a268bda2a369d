"""The API key is not the machine (issue 23 items 1, 7, 8): no path moves over HTTP, no
download_dir over the code, no credential shown back, no key easy to guess."""

from __future__ import annotations

import os
import secrets
import signal
import sysconfig
from pathlib import Path

import httpx
import pytest

from config import rules
from tests.conftest import REPO, read_config, wait_for, write_config

SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])  # the venv's: the daemon runs this Python
STRONG = secrets.token_urlsafe(32)


def log_text(home: Path) -> str:
    return (home / "logs" / "download.log").read_text(errors="replace")


def test_the_api_key_cannot_point_downloads_into_site_packages(civitai, daemon, home):
    d = daemon()
    before = (home / "config.json").read_bytes()
    attack = {"download_dir": str(SITE_PACKAGES.parent), "folders": {"other": "site-packages"}}
    with d.client() as c:
        r = c.patch("/api/settings", json=attack)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert list(r.json()) == ["detail"]
        assert "key 'download_dir'" in detail and str(home / "config.json") in detail, detail
        assert "restart" in detail
        alone = c.patch("/api/settings", json={"download_dir": "/srv/models"})
        assert alone.status_code == 422 and "set on the machine only" in alone.json()["detail"]
        # folders stay live: relative folders that cannot leave download_dir
        out = c.patch("/api/settings", json={"folders": {"other": "../../escape"}})
        assert out.status_code == 422 and "no '..'" in out.json()["detail"], out.text
    assert (home / "config.json").read_bytes() == before
    d.stop()


@pytest.mark.parametrize(
    "value,clash",
    [
        (str(SITE_PACKAGES), str(SITE_PACKAGES)),
        (str(SITE_PACKAGES.parent), str(SITE_PACKAGES)),  # contains it
        (str(REPO / ".venv"), str(REPO / ".venv")),
        (str(REPO), str(REPO)),
        (str(REPO / "routes"), str(REPO)),  # inside the checkout's code
        (".", "{home}"),
        ("data", "{home}/data"),
        ("logs/models", "{home}/logs"),
        ("..", "{home}"),  # contains the home
    ],
)
def test_a_download_dir_over_the_code_or_the_state_stops_the_start(
    home, daemon_factory, value, clash
):
    write_config(home, download_dir=value)
    result = daemon_factory(home).run_to_exit()
    assert result.returncode == 2, result.stdout + result.stderr
    assert "key 'download_dir'" in result.stderr, result.stderr
    assert clash.format(home=home) in result.stderr, result.stderr
    assert "GUI:" not in result.stdout


def test_the_default_data_models_is_allowed_also_in_a_home_that_is_the_checkout(tmp_path):
    assert rules.download_dir_problem(REPO / "data" / "models", REPO) is None
    assert (
        rules.download_dir_problem(tmp_path / "home" / "data" / "models", tmp_path / "home") is None
    )
    assert "lies inside" in rules.download_dir_problem(REPO / "data" / "models", tmp_path)


def test_sighup_keeps_the_old_download_dir_when_the_new_one_is_in_site_packages(
    civitai, daemon, home
):
    d = daemon()
    write_config(home, download_dir=str(SITE_PACKAGES))
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: "config.json not applied" in log_text(home), what="the refusal")
    line = log_text(home).split("config.json not applied")[1].splitlines()[0]
    assert "key 'download_dir'" in line and str(SITE_PACKAGES) in line, line
    with d.client() as c:
        view = c.get("/api/settings").json()
    assert view["settings"]["download_dir"] == "data/models"
    assert "key 'download_dir'" in view["problem"]
    d.stop()


def test_weak_keys_are_refused_saying_how_to_make_a_strong_one(civitai, daemon, home):
    d = daemon()
    before = (home / "config.json").read_bytes()
    with d.client() as c:
        for key, value in [
            ("api_token", "a"),
            ("viewer_token", "wall-screen-key"),
            ("webhook_secret", "hook-secret"),
            ("api_token", "aaaaaaaaaaaaaaaaaaaaaaaaa"),  # 25 lower-case letters: 118 bits at most
        ]:
            r = c.patch("/api/settings", json={key: value})
            assert r.status_code == 422, (key, r.text)
            detail = r.json()["detail"]
            assert f"{key} must hold at least 128 bits of entropy" in detail, detail
            assert "at least 22 random characters of letters and digits" in detail
            assert "secrets.token_urlsafe(32)" in detail and (len(value) < 4 or value not in detail)
        assert (home / "config.json").read_bytes() == before
        ok = c.patch("/api/settings", json={"viewer_token": STRONG})
        assert ok.status_code == 200, ok.text
    viewer = httpx.get(d.url("/api/status"), headers={"Authorization": f"Bearer {STRONG}"})
    assert viewer.status_code == 200
    d.stop()


def test_a_weak_key_in_config_json_is_warned_about_at_start_and_on_sighup(civitai, daemon, home):
    d = daemon(viewer_token="wall-screen-key")
    said = "viewer_token must hold at least 128 bits of entropy"
    assert said in d.stderr_text() and "warning:" in d.stderr_text()
    wait_for(lambda: said in log_text(home), what="the warning in the log")
    generated = read_config(home)["api_token"]  # made by the first start
    assert rules.key_bits(generated) >= 128 and rules.weak_key("k", generated) is None
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: f"SIGHUP: {said}" in log_text(home), what="the warning on SIGHUP")
    assert "wall-screen-key" not in log_text(home) + d.stderr_text()
    d.stop()


def test_urls_holding_credentials_are_shown_only_as_set_with_a_hint(civitai, daemon, home):
    webhook = "https://hook-user:hook-pass-0123@hooks.example:8443/in/abc?token=query-secret-99"
    discord = "https://discord.example/api/webhooks/123456/discord-token-secret"
    telegram = {"type": "telegram", "chat_id": 7, "api_base": "https://tg:tg-pass-0123@tg.example"}
    notify = [{"type": "discord", "url": discord}, {**telegram, "bot_token": "1:bot-secret-0123"}]
    d = daemon(webhook_url=webhook, notify=notify)
    with d.client() as c:
        r = c.get("/api/settings")
        assert r.status_code == 200
        for secret in ("hook-pass", "hook-user", "query-secret", "discord-token", "tg-pass"):
            assert secret not in r.text, secret
        shown = r.json()["settings"]
        assert r.json()["keys"]["webhook_url"]["secret"]
        assert shown["webhook_url"] == {"set": True, "hint": "https://hooks.example:8443/…"}
        assert shown["notify"][0]["url"] == {
            "set": True,
            "hint": "https://discord.example/api/webhooks/123456/…",
        }
        assert shown["notify"][1]["api_base"] == {"set": True, "hint": "https://tg.example"}
        assert shown["civitai_base_url"] == civitai.base_url  # no credential: shown as it is
        # Sent back as shown (the Settings page keeps what it was shown): nothing changes.
        back = [{k: v for k, v in t.items() if k != "bot_token"} for t in shown["notify"]]
        same = c.patch("/api/settings", json={"webhook_url": shown["webhook_url"], "notify": back})
        assert same.status_code == 200, same.text
        config = read_config(home)
        assert config["webhook_url"] == webhook
        assert config["notify"][0]["url"] == discord
        assert config["notify"][1]["api_base"] == telegram["api_base"]
        assert config["notify"][1]["bot_token"] == "1:bot-secret-0123"
        other = {"set": True, "hint": "https://elsewhere.example/…"}
        refused = c.patch("/api/settings", json={"webhook_url": other})
        assert refused.status_code == 422 and "send the whole URL" in refused.json()["detail"]
        bad = c.patch("/api/settings", json={"webhook_url": "ftp://u:pw-secret-0@x.example/"})
        assert bad.status_code == 422 and "pw-secret" not in bad.text, bad.text
        cleared = c.patch("/api/settings", json={"webhook_url": None})
        assert cleared.json()["settings"]["webhook_url"] == {"set": False}
    d.stop()
