"""URLs that hold a credential, shown as `{"set": true, "hint": …}` and never in full (SPEC §15).

`webhook_url` and a Discord target's `url` are always shown so: a user name and password, a
token in the path (Discord's /api/webhooks/<id>/<token>) or in the query are all common there.
Base URLs (`civitai_base_url`, `hf_base_url`, a Telegram target's `api_base`) are shown so only
when they carry a user name or password. A masked value sent back (the GUI keeps what it was
shown) stands for the configured URL it was made from.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

ALWAYS_MASKED = ("webhook_url",)
MASKED_WITH_CREDENTIALS = ("civitai_base_url", "hf_base_url")
DISCORD_PATH = "/api/webhooks/"


def hint(url: str) -> str:
    """The URL without anything secret: scheme, host and port; a Discord webhook's id."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(not a URL)"
    if ":" in host:
        host = f"[{host}]"
    shown = f"{parts.scheme}://{host}{port}"
    if parts.path.startswith(DISCORD_PATH):
        webhook_id = parts.path.removeprefix(DISCORD_PATH).split("/")[0]
        return f"{shown}{DISCORD_PATH}{webhook_id}/…"
    return shown + ("/…" if parts.path.strip("/") or parts.query or parts.fragment else "")


def has_credentials(url: str) -> bool:
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return True  # unreadable: show nothing of it


def shown(url: str | None, always: bool = True) -> Any:
    """How a URL is shown: masked when `always` or when it carries a credential."""
    if url is None:
        return {"set": False} if always else None
    if always or has_credentials(url):
        return {"set": True, "hint": hint(url)}
    return url


def is_masked(value: Any) -> bool:
    """`value` is a masked URL as `shown` makes it (sent back unchanged)."""
    return isinstance(value, dict) and set(value) <= {"set", "hint"} and "set" in value


def unmask(value: dict[str, Any], candidates: list[str | None], always: bool = True) -> Any:
    """The configured URL among `candidates` that shows as `value`; a KeyError when none does."""
    if value.get("set") is False and always:
        return None
    for url in candidates:
        if url is not None and shown(url, always) == value:
            return url
    raise KeyError(value.get("hint"))


def secret_parts(url: str | None) -> list[str]:
    """The credential strings inside a URL, for the log redactor."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
    except ValueError:
        return [url]
    if parts.path.startswith(DISCORD_PATH):
        found.append(parts.path.removeprefix(DISCORD_PATH).partition("/")[2].strip("/"))
    if parts.query:
        found.append(parts.query)
    return [s for s in found if len(s) >= 4]
