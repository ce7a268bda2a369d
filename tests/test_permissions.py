"""Local files keep secrets from other local users (issue 23, item 5): data/ and logs/ are 0700
(data/ 0711 when the models are inside it), the database with its -wal and -shm, every log
(rotated backups too), config.json and the session key are 0600; a home left 0755/0644 by an
older daemon is tightened at its next start."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from logger import PrivateRotatingFileHandler
from tests.conftest import run_job, write_config


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


PRIVATE = [
    "config.json",
    "data/session.key",
    "data/completed.db",
    "data/completed.db-wal",
    "data/completed.db-shm",
    "logs/download.log",
    "logs/error.log",
]


def private_files(home: Path) -> dict[str, str]:
    return {n: mode(home / n) for n in PRIVATE}


def test_a_new_home_keeps_its_database_logs_and_keys_to_its_owner(civitai, daemon, home, tmp_path):
    os.umask(0o022)  # as a desktop session has it
    civitai.add_simple(1, 10, b"weights", filename="private.safetensors")
    d = daemon(download_dir=str(tmp_path / "models"))
    run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    assert {"data": mode(home / "data"), "logs": mode(home / "logs")} == {
        "data": "0o700",
        "logs": "0o700",
    }
    assert set(private_files(home).values()) == {"0o600"}, private_files(home)
    # What is meant to be read stays readable: the model, and the manifest beside the config.
    [model] = (tmp_path / "models").rglob("private.safetensors")
    assert mode(model) == "0o644" and mode(home / "manifest.json") == "0o644"
    d.stop()


def test_a_home_left_open_by_an_older_daemon_is_tightened_at_the_next_start(civitai, daemon, home):
    os.umask(0o022)
    d = daemon()
    d.stop()
    # What today's main leaves: folders 0755, files 0644, a rotated log among them.
    (home / "logs" / "download.log.1").write_text("an old line naming a URL\n")
    for folder in ("data", "logs"):
        os.chmod(home / folder, 0o755)
    for name in PRIVATE:
        if (home / name).exists():
            os.chmod(home / name, 0o644)
    os.chmod(home / "logs" / "download.log.1", 0o644)
    civitai.add_simple(1, 10, b"weights")
    d = daemon()
    run_job(d, {"modelVersionId": 10, "model_type": "lora"})  # the database is written again
    assert mode(home / "logs") == "0o700"
    # download_dir is data/models (the default): data/ is passable, not listable.
    assert mode(home / "data") == "0o711" and mode(home / "data" / "models") == "0o755"
    assert set(private_files(home).values()) == {"0o600"}, private_files(home)
    assert mode(home / "logs" / "download.log.1") == "0o600"
    d.stop()


def test_a_log_rolled_over_is_created_private_and_its_backup_stays_private(tmp_path):
    os.umask(0o022)
    handler = PrivateRotatingFileHandler(tmp_path / "download.log", maxBytes=200, backupCount=2)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i in range(20):
        handler.emit(logging.makeLogRecord({"msg": f"line {i} " + "x" * 40}))
    handler.close()
    logs = sorted(p.name for p in tmp_path.iterdir())
    assert logs == ["download.log", "download.log.1", "download.log.2"]
    assert {mode(tmp_path / n) for n in logs} == {"0o600"}


def test_config_json_written_back_stays_private(civitai, daemon, home):
    write_config(home, civitai_base_url=civitai.base_url)
    os.chmod(home / "config.json", 0o644)
    d = daemon()
    assert mode(home / "config.json") == "0o600"
    with d.client() as c:
        assert c.patch("/api/settings", json={"retries": 3}).status_code == 200
    assert mode(home / "config.json") == "0o600"
    d.stop()
