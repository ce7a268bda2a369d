"""What the Library page searches and marks, kept with each completed file: its trigger words and
whether its preview image is NSFW (issue 26 items 3 and 7), taken from Civitai's version JSON
when the file is recorded, or from its `.civitai.info` sidecar for files recorded before.

Plain functions of a version's JSON and the disk only: schema.py's migration uses them too.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

SAFE_IMAGE_LEVEL = 2  # Civitai's nsfwLevel: 1 PG, 2 PG-13, 4 R, 8 X, 16 XXX
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov")
MAX_SIDECAR = 4 * 1024 * 1024  # bytes of a .civitai.info read for the backfill


def is_nsfw_image(image: dict[str, Any]) -> bool:
    """An image above PG-13 (`nsfwLevel`), or marked NSFW the 2022 way (`nsfw`: true, "Soft"…)."""
    level = image.get("nsfwLevel")
    if isinstance(level, int) and level > SAFE_IMAGE_LEVEL:
        return True
    legacy = image.get("nsfw")
    return legacy not in (None, False, "None")


def is_video(image: dict[str, Any]) -> bool:
    suffix = PurePosixPath(urlsplit(str(image.get("url") or "")).path).suffix.lower()
    return image.get("type") == "video" or suffix in VIDEO_SUFFIXES


def preview_image(images: Any) -> dict[str, Any] | None:
    """The image the `.preview.png` is made from: the first still one, else the first video."""
    listed = [i for i in images or [] if isinstance(i, dict) and i.get("url")]
    return next((i for i in listed if not is_video(i)), listed[0] if listed else None)


def fields(info: Any) -> dict[str, Any]:
    """The catalog columns of a completed row, from Civitai's version JSON (`{}` if none)."""
    if not isinstance(info, dict):
        return {}
    words = [str(w).strip() for w in info.get("trainedWords") or [] if str(w).strip()]
    image = preview_image(info.get("images"))
    return {
        "base_model": info.get("baseModel"),
        "trained_words": json.dumps(words, ensure_ascii=False),
        "preview_nsfw": int(bool(image and is_nsfw_image(image))),
    }


def sidecar_info(model: Path) -> dict[str, Any] | None:
    """The `<stem>.civitai.info` beside a model, parsed; None when absent, too big or unreadable."""
    path = model.with_name(model.stem + ".civitai.info")
    try:
        if path.is_symlink() or path.stat().st_size > MAX_SIDECAR:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def words_of(stored: str | None) -> list[str]:
    """The trigger words as stored (a JSON list), [] for none or a value not a list."""
    try:
        words = json.loads(stored) if stored else []
    except ValueError:
        return []
    return [str(w) for w in words] if isinstance(words, list) else []
