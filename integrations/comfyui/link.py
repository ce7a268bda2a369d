"""Where the daemon is and its key, read in ComfyUI's process (never sent to the page)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "civitai_daemon.json"


@dataclass(frozen=True)
class Link:
    """The daemon's base URL and API key; `where` says which source gave them."""

    url: str
    key: str
    where: str


def _user_directory() -> Path | None:
    """ComfyUI's user folder (folder_paths.py, `get_user_directory`), when running inside it."""
    try:
        import folder_paths
    except ImportError:
        return None
    getter = getattr(folder_paths, "get_user_directory", None)
    return Path(getter()) if getter else None


def candidates() -> list[Path]:
    """The config files looked at, first found wins: ComfyUI's user folder (not served to the
    page: /userdata serves only user/<name>/), then beside this package."""
    found = []
    user = _user_directory()
    if user is not None:
        found.append(user / CONFIG_NAME)
    found.append(Path(__file__).resolve().parent / CONFIG_NAME)
    return found


def load_link() -> Link | None:
    """From CIVITAI_DAEMON_URL and CIVITAI_DAEMON_KEY, else the first config file found holding
    {"url": …, "key": …}; None when neither gives both (the daemon's port is its own choice, so
    there is no default URL). Read at each request, so a change needs no restart of ComfyUI."""
    url = os.environ.get("CIVITAI_DAEMON_URL", "").strip()
    key = os.environ.get("CIVITAI_DAEMON_KEY", "").strip()
    if url and key:
        return Link(url.rstrip("/"), key, "the environment")
    for path in candidates():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        url, key = data.get("url"), data.get("key")
        if isinstance(url, str) and isinstance(key, str) and url.strip() and key.strip():
            return Link(url.strip().rstrip("/"), key.strip(), str(path))
    return None
