"""Logs: two files, rotation by size, and no secret in any line."""

from __future__ import annotations

import logging

import pytest

import logger as logger_module
from logger import Redactor, setup_logging


@pytest.fixture
def logs(tmp_path, monkeypatch):
    monkeypatch.setattr(logger_module, "MAX_BYTES", 2000)
    monkeypatch.setattr(logger_module, "BACKUPS", 2)
    setup_logging(tmp_path, "INFO", secrets=["my-civitai-secret-key"], console=False)
    yield tmp_path
    for handler in list(logging.getLogger().handlers):
        if getattr(handler, "_civitai", False):
            logging.getLogger().removeHandler(handler)
            handler.close()


def test_info_goes_to_download_log_and_errors_also_to_error_log(logs):
    log = logging.getLogger("civitai.test")
    log.debug("debug line")
    log.info("info line")
    log.error("error line")
    download = (logs / "download.log").read_text()
    error = (logs / "error.log").read_text()
    assert "info line" in download and "error line" in download and "debug line" not in download
    assert "error line" in error and "info line" not in error


def test_logs_rotate_by_size_and_keep_backups(logs):
    log = logging.getLogger("civitai.test")
    for i in range(200):
        log.info("line %d %s", i, "x" * 50)
    names = sorted(p.name for p in logs.iterdir())
    assert "download.log.1" in names and "download.log.2" in names
    assert "download.log.3" not in names
    assert (logs / "download.log").stat().st_size <= 2000


def test_secrets_are_redacted_from_every_record(logs):
    log = logging.getLogger("civitai.test")
    log.info("GET https://civitai.com/api/download/models/1?token=abcdef123456&x=1")
    log.info("headers %s", {"Authorization": "Bearer zzzz-secret-bearer"})
    log.warning("X-API-Key: key-in-header-999")
    log.info("configured key my-civitai-secret-key leaked?")
    try:
        raise RuntimeError("failed with my-civitai-secret-key")
    except RuntimeError:
        log.exception("boom")
    text = (logs / "download.log").read_text() + (logs / "error.log").read_text()
    for secret in (
        "abcdef123456",
        "zzzz-secret-bearer",
        "key-in-header-999",
        "my-civitai-secret-key",
    ):
        assert secret not in text
    assert "token=***" in text and "x=1" in text


def test_redactor_keeps_ordinary_text():
    r = Redactor(["s3cr3t-value"])
    assert r("downloaded model.safetensors 12 MB") == "downloaded model.safetensors 12 MB"
    assert r("a s3cr3t-value b") == "a *** b"


def test_a_urls_password_and_query_secrets_are_redacted_but_its_place_stays(logs):
    logging.getLogger("civitai.test").info(
        "GET http://me:pa55w0rd@files.example/m.bin?X-Amz-Credential=AKIA1&access_token=t0k&v=2"
    )
    text = (logs / "download.log").read_text()
    assert "pa55w0rd" not in text and "AKIA1" not in text and "t0k" not in text
    assert "http://***@files.example/m.bin?" in text and "v=2" in text
