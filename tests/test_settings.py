"""config.json: defaults, validation that names key and value, atomic writes, the token override."""

from __future__ import annotations

import json
import re

import pytest

from config.settings import (
    CONFIG_KEYS,
    ConfigError,
    default_config,
    ensure_home,
    load_settings,
    update_config,
)
from tests.conftest import REPO, write_config

BAD_VALUES = [
    ("workers", "abc", "valid integer"),
    ("workers", 0, "greater than or equal to 1"),
    ("workers", True, "valid integer"),
    ("retries", 2.5, "valid integer"),
    ("timeout", "60", "valid number"),
    ("timeout", True, "valid integer or Input should be a valid number"),
    ("throttle", -1, "greater than or equal to 0"),
    ("log_level", "LOUD", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ("manifest_mode", "merge", "'replace' or 'append'"),
    ("old_versions", "trash", "'keep', 'delete' or 'archive'"),
    (
        "update_check",
        {"enabled": True, "hour": 25, "minute": 0},
        "'update_check.hour' has value 25",
    ),
    ("update_check", "daily", "valid dictionary"),
    ("connections", 0, "greater than or equal to 1"),
    ("active_port", 70000, "less than or equal to 65535"),
    ("allowed_hosts", "civitai.com", "valid list"),
    ("notify", [{"type": "slack"}], "'notify.0.type' has value \"slack\": one of 'discord' or"),
    ("civitai_base_url", "civitai.com", "http:// or https://"),
    ("save_metadata", "yes", "valid boolean"),
]


@pytest.mark.parametrize("key,value,allowed", BAD_VALUES)
def test_bad_value_is_refused_naming_key_value_and_what_is_allowed(home, key, value, allowed):
    ensure_home(home)
    write_config(home, **{key: value})
    with pytest.raises(ConfigError) as info:
        load_settings(home, environ={})
    message = str(info.value)
    assert f"'{key}" in message
    if not isinstance(value, dict | list) or key == "allowed_hosts":
        assert f"has value {json.dumps(value)}" in message
    assert allowed in message


def test_bad_config_stops_the_daemon_with_exit_2(home, daemon_factory):
    write_config(home, workers="many")
    result = daemon_factory(home).run_to_exit()
    assert result.returncode == 2
    assert "'workers'" in result.stderr and '"many"' in result.stderr
    assert "valid integer" in result.stderr


def test_config_that_is_not_json_stops_the_daemon_with_exit_2(home, daemon_factory):
    (home / "config.json").write_text("{ workers: 2, }")
    result = daemon_factory(home).run_to_exit()
    assert result.returncode == 2
    assert "not valid JSON" in result.stderr and "config.json" in result.stderr


def test_unknown_key_is_a_warning_and_the_daemon_starts(home, daemon_factory):
    write_config(home, wokers=4)
    d = daemon_factory(home).start()
    d.stop()
    assert "unknown key 'wokers'" in d.stderr_text()


def test_a_token_in_a_bad_value_message_is_hidden(home):
    ensure_home(home)
    write_config(home, civitai_token=12345678)
    with pytest.raises(ConfigError) as info:
        load_settings(home, environ={})
    assert "12345678" not in str(info.value) and "<hidden>" in str(info.value)


def test_defaults_are_written_into_a_new_home(home):
    ensure_home(home)
    data = json.loads((home / "config.json").read_text())
    assert data == default_config()
    assert data["host"] == "127.0.0.1" and data["workers"] == 2 and data["retries"] == 5
    assert data["update_check"] == {"enabled": True, "hour": 4, "minute": 0}
    assert data["allowed_hosts"] == ["civitai.com", "huggingface.co"]


def test_existing_files_in_a_home_are_never_overwritten(home):
    write_config(home, workers=7)
    (home / "manifest.json").write_text('[{"modelId": 1, "model_type": "lora"}]')
    ensure_home(home)
    assert json.loads((home / "config.json").read_text()) == {"workers": 7}
    assert "modelId" in (home / "manifest.json").read_text()


def test_civitai_token_environment_variable_overrides_config(home):
    ensure_home(home)
    write_config(home, civitai_token="from-config")
    assert load_settings(home, environ={}).civitai_token.get_secret_value() == "from-config"
    s = load_settings(home, environ={"CIVITAI_TOKEN": "from-env"})
    assert s.civitai_token.get_secret_value() == "from-env"
    assert "from-env" not in repr(s) and "from-env" not in str(s.model_dump())


def test_relative_paths_resolve_against_the_home(home):
    ensure_home(home)
    write_config(home, download_dir="models-here")
    s = load_settings(home, environ={})
    assert s.models_dir == home / "models-here"
    write_config(home, download_dir="/abs/models")
    assert load_settings(home, environ={}).models_dir.as_posix() == "/abs/models"


def test_update_is_atomic_and_keeps_other_keys(home):
    ensure_home(home)
    write_config(home, custom={"nested": [1, 2]}, workers=3)
    update_config(home, active_port=8150)
    data = json.loads((home / "config.json").read_text())
    assert data["active_port"] == 8150 and data["workers"] == 3
    assert data["custom"] == {"nested": [1, 2]}
    assert [p.name for p in home.iterdir() if p.name.startswith(".config")] == []


def test_every_setting_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", readme, re.M))
    assert set(CONFIG_KEYS) <= documented, set(CONFIG_KEYS) - documented
