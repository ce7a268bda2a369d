"""Rotating logs under <home>/logs, with every secret redacted from every line (SPEC §11)."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable
from logging.handlers import RotatingFileHandler
from pathlib import Path

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "***"

# `user:password@` in a URL, `token=…` (and keys, signatures, credentials) in a query or form,
# `Authorization: Bearer …`, `X-API-Key: …`.
_PATTERNS = [
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^\s/?#\"'<>]+(?=@)"),
    re.compile(
        r"(?i)((?:[?&;]|\b)[\w-]*(?:token|api_key|apikey|key|sig|signature|password|passwd"
        r"|secret|credential)=)[^&\s\"']+"
    ),
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)?\s*)[^\s\"',}]+"),
    re.compile(r"(?i)(x-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
]


def safe_url(text: str) -> str:
    """A URL (or any text holding URLs) fit to log or show: no `user:password@`, no token,
    key or signature in its query. Messages built from URLs go through here."""
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class Redactor:
    """Replaces secrets in text: known values and anything shaped like a credential."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return safe_url(text)


class RedactingFormatter(logging.Formatter):
    """Formats a record, traceback included, then redacts the whole text."""

    def __init__(self, redactor: Redactor, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(super().format(record))


def reconfigure(level: str, secrets: Iterable[str]) -> None:
    """Settings changed while running: the new level, and the new secrets redacted too (the old
    ones stay redacted: they may still appear in a message being written)."""
    root = logging.getLogger()
    for handler in root.handlers:
        role = getattr(handler, "_civitai", None)
        if role is None:
            continue
        if role == "level":  # error.log stays at ERROR
            handler.setLevel(level)
        formatter = handler.formatter
        if isinstance(formatter, RedactingFormatter):
            old = formatter.redactor.secrets
            formatter.redactor.secrets = Redactor([*old, *secrets]).secrets
    root.setLevel(min(logging.getLevelName(level), logging.INFO))
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


class PrivateRotatingFileHandler(RotatingFileHandler):
    """A log file, and each one after a rollover, created 0600 (a log names URLs and hosts);
    rotated backups keep that mode when renamed."""

    def _open(self):  # type: ignore[no-untyped-def]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # one an older daemon made 0644
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


def setup_logging(
    logs_dir: Path, level: str = "INFO", secrets: Iterable[str] = (), console: bool = True
) -> Redactor:
    """Route every logger to download.log, error.log and (optionally) stderr."""
    logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    redactor = Redactor(secrets)
    formatter = RedactingFormatter(redactor)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_civitai", False):
            root.removeHandler(handler)
            handler.close()

    handlers: list[logging.Handler] = [
        PrivateRotatingFileHandler(
            logs_dir / "download.log", maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
        ),
        PrivateRotatingFileHandler(
            logs_dir / "error.log", maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
        ),
    ]
    handlers[0].setLevel(level)
    handlers[1].setLevel(logging.ERROR)
    if console:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[-1].setLevel(level)
    for handler in handlers:
        handler.setFormatter(formatter)
        # Which level it follows: log_level, or always ERROR (error.log).
        handler._civitai = "errors" if handler is handlers[1] else "level"  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(min(logging.getLevelName(level), logging.INFO))
    # uvicorn configures its own handlers; send its records to ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # httpx logs every request URL at INFO; keep it at WARNING unless debugging.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    return redactor
