"""manifest.json: the tracked models (SPEC §4). Read entry by entry; written atomically.

Problems are numbered the same way everywhere (start-up log, API, GUI): `entry` is 1-based, the
first entry of the file is entry 1, and the entry's modelId is named with it when it has one.
Every write happens under the daemon's one manifest lock (main.py), by its caller.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.settings import write_json_atomic
from engine.jobs import JobRequest, describe_errors
from library import policy

log = logging.getLogger("civitai.manifest")

# The fields a tracked entry gets from its verified file; a person's other fields are kept.
TRACKED_FIELDS = ("modelId", "modelVersionId", "model_type", "sha256", "filename")


@dataclass
class Problem:
    index: int  # 0-based position in the array (a batch's error index); -1: the whole file
    detail: str
    model_id: Any = None  # the entry's modelId as written, when it has one

    @property
    def entry(self) -> int | None:
        """1-based: how a person counts the entries of the file."""
        return self.index + 1 if self.index >= 0 else None

    def where(self) -> str:
        """`entry 3 (modelId 4384)`, or `file` for a problem of the whole file."""
        if self.entry is None:
            return "file"
        named = f" (modelId {self.model_id})" if self.model_id is not None else ""
        return f"entry {self.entry}{named}"

    def public(self) -> dict[str, Any]:
        return {"entry": self.entry, "modelId": self.model_id, "detail": self.detail}


def _model_id(entry: Any) -> Any:
    return entry.get("modelId") if isinstance(entry, dict) else None


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
            detail = describe_errors(exc.errors(include_url=False))
            bad.append(Problem(i, detail, entry.get("modelId")))
    return good, bad


def load(path: Path) -> tuple[list[Any], list[tuple[int, JobRequest]], list[Problem]]:
    """(raw entries, valid requests, problems). A broken file is one problem, never a crash.
    A tracked entry names its folder: model_type is required here (a batch may leave it out)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [], [], []
    except (OSError, ValueError) as exc:
        return [], [], [Problem(-1, f"{path} cannot be read as JSON: {exc}")]
    good, bad = parse_entries(raw)
    untyped = [(i, req) for i, req in good if req.model_type is None]
    for i, _ in untyped:
        detail = "model_type: is required (the folder, e.g. 'lora')"
        bad.append(Problem(i, detail, _model_id(raw[i])))
    good = [(i, req) for i, req in good if req.model_type is not None]
    for i, _ in good:
        try:
            policy.of_entry(raw[i])
        except ValueError as exc:  # an entry without `policy` is fine: it downloads updates
            bad.append(Problem(i, str(exc), _model_id(raw[i])))
    good = [(i, req) for i, req in good if not any(p.index == i for p in bad)]
    bad.sort(key=lambda p: p.index)
    for p in bad:
        log.warning("manifest.json %s skipped: %s", p.where(), p.detail)
    return raw if isinstance(raw, list) else [], good, bad


def save(path: Path, entries: list[Any]) -> None:
    write_json_atomic(path, entries)


def track(path: Path, fields: dict[str, Any], mode: str) -> tuple[int, bool]:
    """Add or update the entry of a verified file; (1-based entry number, added). `replace`:
    the model's entry (one per model) now names this version; `append`: this version's entry,
    else a new one. A person's other fields (priority, a note) are kept."""

    def same(e: dict[str, Any]) -> bool:
        return e.get("modelId") == fields["modelId"] and (
            mode == "replace" or e.get("modelVersionId") == fields["modelVersionId"]
        )

    return _upsert(path, same, _present(fields, TRACKED_FIELDS), forget=("url", "fileId"))


def track_url(path: Path, fields: dict[str, Any], mode: str) -> tuple[int, bool]:
    """`track` for a file known by its URL (a Hugging Face file): its entry is the one with the
    same `url` (`append`: and the same sha256)."""

    def same(e: dict[str, Any]) -> bool:
        return (
            e.get("url") == fields["url"]
            and not e.get("modelId")
            and (mode == "replace" or e.get("sha256") == fields["sha256"])
        )

    return _upsert(path, same, _present(fields, ("url", *TRACKED_FIELDS)), forget=())


def _present(fields: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: fields[k] for k in keys if fields.get(k) is not None}


def _upsert(
    path: Path, same: Callable[[dict[str, Any]], bool], new: dict[str, Any], forget: tuple
) -> tuple[int, bool]:
    """Update the first entry `same` picks (dropping the others it picks, and its `forget`
    fields), else append `new`; (1-based entry number, added). Other fields are kept."""
    raw = _readable_or_refuse(path)
    picked = [i for i, e in enumerate(raw) if isinstance(e, dict) and same(e)]
    if picked:
        index = picked[0]
        raw[index] = {**{k: v for k, v in raw[index].items() if k not in forget}, **new}
        for extra in reversed(picked[1:]):  # one entry per model (or file)
            del raw[extra]
    else:
        index = len(raw)
        raw.append(new)
    save(path, raw)
    return index + 1, not picked


def record_update(
    path: Path,
    index: int,
    same: Callable[[dict[str, Any]], bool],
    change: Callable[[dict[str, Any]], dict[str, Any]],
    mode: str,
) -> None:
    """An update found for entry `index` (found again by `same` if the file changed since the
    check began): `replace` puts `change(entry)` in its place, `append` adds it beside it.
    Every other field a person put in the entry is kept by `change`."""
    raw, _, _ = load(path)
    if not (0 <= index < len(raw)) or not (isinstance(raw[index], dict) and same(raw[index])):
        matches = [i for i, e in enumerate(raw) if isinstance(e, dict) and same(e)]
        if not matches:
            return
        index = matches[-1]
    new = change(raw[index])
    if mode == "replace":
        raw[index] = new
    else:
        raw.append(new)
    save(path, raw)


def _readable_or_refuse(path: Path) -> list[Any]:
    """A manifest that is not a JSON array is never overwritten: a person's file stays as it is."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read as JSON ({exc}); fix it to track models") from None
    if not isinstance(data, list):
        raise ValueError(f"{path} is not a JSON array of entries; fix it to track models")
    return data


def untrack(path: Path, model_id: int) -> list[Any]:
    """Remove every entry of a model (never its files); the removed entries."""
    raw = _readable_or_refuse(path)
    removed = [e for e in raw if isinstance(e, dict) and e.get("modelId") == model_id]
    if removed:
        save(path, [e for e in raw if not (isinstance(e, dict) and e.get("modelId") == model_id)])
    return removed


def set_policy(path: Path, model_id: int, value: Any) -> int:
    """Set the update policy of every entry of a model (checked by policy.check); how many."""
    raw = _readable_or_refuse(path)
    mine = [e for e in raw if isinstance(e, dict) and e.get("modelId") == model_id]
    for entry in mine:
        entry["policy"] = value
    if mine:
        save(path, raw)
    return len(mine)
