"""A1111's own per-model metadata file, `<stem>.json`, beside each model (issue 26).

Checked against the code that reads it:

- AUTOMATIC1111/stable-diffusion-webui `modules/extra_networks.py` `get_user_metadata`: the
  model's path without its extension + `.json`, read with `json.load` as UTF-8; the Lora page
  (`extensions-builtin/Lora/ui_extra_networks_lora.py` `create_item`) takes `activation text`
  (added to the prompt after `<lora:name:w>`), `preferred weight` (used when truthy, else the
  default multiplier: 0 means "not set") and `sd version` (used only when it is a member of
  `network.SdVersion`: Unknown, SD1, SD2, SDXL). Its editor (`extensions-builtin/Lora/
  ui_edit_user_metadata.py` `save_lora_user_metadata`, `modules/ui_extra_networks_user_metadata
  .py` `write_user_metadata`) writes description, sd version, activation text, preferred weight,
  negative text and notes back to the same file, `json.dump(..., ensure_ascii=False)`.
- BlafKing/sd-civitai-browser-plus `scripts/civitai_api.py` (the model list's install check):
  every `*.json` under the type's folder with a `sha256` marks as installed each Civitai file
  whose `hashes.SHA256` equals it, upper-cased; `scripts/civitai_download.py` `info_to_json`
  writes `modelId` and `sha256` (upper case), `scripts/civitai_file_manage.py` `get_models` reads
  `modelId`, `modelVersionId` and `sha256`, and `find_and_save` maps `baseModel` as we do.

A person's edits are kept: a key already holding a value is never overwritten (only `sha256`,
the hash just verified). A `<stem>.json` that is not such a file (not JSON, not an object, or an
object with none of these keys: a config downloaded under that name) is left untouched.
"""

from __future__ import annotations

import json
import logging
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import safefs

log = logging.getLogger("civitai.metadata")

SUFFIX = ".json"
# Every key A1111's editor or sd-civitai-browser-plus writes: a file with none of them is not ours.
KNOWN_KEYS = (
    "description",
    "activation text",
    "sd version",
    "preferred weight",
    "negative text",
    "notes",
    "sha256",
    "modelId",
    "modelVersionId",
)
# Facts about the file on disk, always the daemon's: a new version at the same path changes them.
FILE_KEYS = ("sha256", "modelId", "modelVersionId")
MAX_EXISTING = 4 * 1024 * 1024  # a larger `<stem>.json` is no metadata file: left alone


def a1111_path(model_path: Path) -> Path:
    """`<stem>.json`: A1111's `os.path.splitext(filename)[0] + '.json'`."""
    return model_path.with_name(model_path.stem + SUFFIX)


def sd_version(base_model: Any) -> str:
    """Civitai's `baseModel` as A1111's `network.SdVersion` names it. SDXL's descendants (Pony,
    Illustrious, NoobAI) are SDXL networks; anything else (Flux, SD 3.5...) is "Unknown", which
    A1111 shows under every checkpoint unless told to hide unknown ones."""
    name = str(base_model or "").strip().lower()
    if name.startswith("sd 1"):
        return "SD1"
    if name.startswith("sd 2"):
        return "SD2"
    if name.startswith(("sdxl", "pony", "illustrious", "noobai")):
        return "SDXL"
    return "Unknown"


class _Text(HTMLParser):
    """The text of an HTML fragment, a line break for each block."""

    BLOCKS = {"p", "br", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "ul", "ol"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def plain_text(fragment: Any) -> str:
    """Civitai's HTML description as plain text: A1111 shows `description` in its card and its
    editor's textbox as text (its option `extra_networks_card_description_is_html` is off by
    default), so tags would show as tags."""
    parser = _Text()
    parser.feed(str(fragment or ""))
    parser.close()
    text = re.sub(r"[ \t]+", " ", "".join(parser.parts))
    return re.sub(r"\s*\n\s*", "\n", text).strip()


def activation_text(trained_words: Any) -> str:
    """The version's trigger words, comma-separated (sd-civitai-browser-plus `find_and_save`
    joins them so too)."""
    if isinstance(trained_words, str):
        return trained_words.strip()
    words = [str(w).strip() for w in trained_words or [] if str(w).strip()]
    return ", ".join(words)


def a1111_metadata(info: dict[str, Any], sha256: str | None) -> dict[str, Any]:
    """What the daemon knows for `<stem>.json`, from Civitai's version answer."""
    model = info.get("model") if isinstance(info.get("model"), dict) else {}
    data: dict[str, Any] = {
        "description": plain_text(info.get("description") or model.get("description")),
        "activation text": activation_text(info.get("trainedWords")),
        "sd version": sd_version(info.get("baseModel")),
        "preferred weight": 0,  # A1111: 0 = the default multiplier (its slider's "disabled")
        "notes": "",
    }
    if info.get("modelId") is not None:
        data["modelId"] = info["modelId"]
    if info.get("id") is not None:
        data["modelVersionId"] = info["id"]
    if sha256:
        data["sha256"] = sha256.upper()  # as sd-civitai-browser-plus writes and compares it
    return data


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def merged(existing: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """`existing` with each missing or empty key filled from `ours`; FILE_KEYS always ours."""
    out = dict(existing)
    for key, value in ours.items():
        if key in FILE_KEYS or key not in out or _is_empty(out[key]):
            out[key] = value
    return out


def _read_existing(path: Path) -> dict[str, Any] | None:
    """The `<stem>.json` there as a dict ({} when there is none, or a link: never read through,
    replaced by the rename); None when it is something else and must be left alone."""
    if not safefs.is_file(path):
        return {} if os.path.islink(path) or not os.path.lexists(path) else None
    try:
        fd = os.open(path, os.O_RDONLY | safefs.O_NOFOLLOW | safefs.O_BINARY)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_EXISTING + 1)
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    if len(raw) > MAX_EXISTING:
        return None
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or (data and not any(k in data for k in KNOWN_KEYS)):
        return None
    return data


def is_a1111_file(path: Path) -> bool:
    """A regular file at `path` holding A1111 metadata: it moves and goes with its model (a
    config of the same stem, say, stays where it is)."""
    return safefs.is_file(path) and bool(_read_existing(path))


def write_a1111_json(model_path: Path, info: dict[str, Any], sha256: str | None) -> Path | None:
    """Write or complete `<stem>.json` atomically; the path, or None when left alone."""
    target = a1111_path(model_path)
    if target.name == model_path.name:  # the file downloaded is itself `<stem>.json`
        return None
    existing = _read_existing(target)
    if existing is None:
        log.warning("%s is not A1111 metadata (a file of your own?): left as it is", target)
        return None
    data = merged(existing, a1111_metadata(info, sha256))
    if data == existing and existing:
        return target  # nothing to add: not even rewritten
    # UTF-8 as A1111 reads and writes it (`encoding="utf8"`, ensure_ascii=False).
    text = json.dumps(data, indent=4, ensure_ascii=False) + "\n"
    safefs.write_atomic(target, text.encode("utf-8"))
    return target
