"""manifest.json: the tracked models (SPEC §4). Read entry by entry; written atomically."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from jobs import JobRequest, describe_errors
from settings import write_json_atomic

log = logging.getLogger("civitai.manifest")


@dataclass
class Problem:
    index: int
    detail: str


def parse_entries(data: Any) -> tuple[list[tuple[int, JobRequest]], list[Problem]]:
    """Validate a list of job requests; good ones with their index, bad ones as problems."""
    if not isinstance(data, list):
        return [], [Problem(-1, "must be a JSON array of entries")]
    good: list[tuple[int, JobRequest]] = []
    bad: list[Problem] = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            bad.append(Problem(i, f"entry must be an object, not {type(entry).__name__}"))
            continue
        try:
            good.append((i, JobRequest.model_validate(entry)))
        except ValidationError as exc:
            bad.append(Problem(i, describe_errors(exc.errors(include_url=False))))
    return good, bad


def load(path: Path) -> tuple[list[Any], list[tuple[int, JobRequest]], list[Problem]]:
    """(raw entries, valid requests, problems). A broken file is one problem, never a crash."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [], [], []
    except (OSError, ValueError) as exc:
        return [], [], [Problem(-1, f"{path} cannot be read as JSON: {exc}")]
    good, bad = parse_entries(raw)
    for p in bad:
        where = f"entry {p.index}" if p.index >= 0 else "file"
        log.warning("manifest.json %s skipped: %s", where, p.detail)
    return raw if isinstance(raw, list) else [], good, bad


def save(path: Path, entries: list[Any]) -> None:
    write_json_atomic(path, entries)
