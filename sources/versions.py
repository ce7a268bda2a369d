"""Which of a Civitai model's versions is "the newest", and which of its files are models.

Civitai lists a model's versions in the creator's order, not by date and not by id (DreamShaper:
128713, 252914, 131004, 303662, ...). The newest is the latest *published*, *downloadable* one by
`publishedAt` (ties: the larger id). A draft has no `publishedAt`; a scheduled one has it in the
future; a version in early access is published but cannot be downloaded until its deadline.

A version whose only model file is an archive (a Diffusers folder packed as a zip: DreamShaper's
"8-diffusers", 303662, the latest published) is not what ComfyUI or A1111 loads from a checkpoint
folder: it counts as the newest only for a tracked archive, or when the model has nothing else.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

TRAINING_DATA = "Training Data"
MODEL_TYPES = ("Model", "Pruned Model")
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")
NEVER = datetime.min.replace(tzinfo=UTC)
FAR_FUTURE = "9999-12-31T23:59:59Z"  # an early access whose end Civitai does not say


def parse_time(value: Any) -> datetime | None:
    """Civitai's timestamps: with or without `Z`, with 0 to 6 fractional digits; naive is UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def usable_files(version: dict[str, Any]) -> list[dict[str, Any]]:
    """The files a download of the version may mean: all but its training data."""
    files = [f for f in version.get("files") or [] if isinstance(f, dict)]
    return [f for f in files if f.get("type") != TRAINING_DATA]


def is_model_file(f: dict[str, Any]) -> bool:
    name = str(f.get("name") or "").lower()
    return f.get("type") in MODEL_TYPES or name.endswith(MODEL_EXTENSIONS)


def is_archive(f: dict[str, Any]) -> bool:
    """A file an app cannot load as it is: a Diffusers folder or any zip."""
    fmt = (f.get("metadata") or {}).get("format")
    return fmt == "Diffusers" or str(f.get("name") or "").lower().endswith(".zip")


def loads_directly(version: dict[str, Any]) -> bool:
    """It has a model file an app loads as it is (a .safetensors, .ckpt, .gguf, …)."""
    return any(is_model_file(f) and not is_archive(f) for f in usable_files(version))


def early_access(version: dict[str, Any], now: datetime) -> tuple[bool, str | None]:
    """(in early access now, until when). The deadline is `earlyAccessEndsAt` (today's API),
    `earlyAccessDeadline` (the model's), or a number of days after publication: today's
    `earlyAccessConfig.timeframe` or the 2022 API's `earlyAccessTimeFrame`;
    `availability: "EarlyAccess"` without a deadline counts too. A deadline that has passed wins
    over a stale `availability`. (Civitai's API reference, developer.civitai.com/site/reference/
    model-versions, lists `availability`, `earlyAccessConfig` and `earlyAccessEndsAt`; its job
    `process-ending-early-access` sets the timeframe to 0 and the version Public when it ends.)"""
    for key in ("earlyAccessEndsAt", "earlyAccessDeadline"):
        deadline = parse_time(version.get(key))
        if deadline is not None:
            return deadline > now, version[key] if deadline > now else None
    config = version.get("earlyAccessConfig")
    days = (config if isinstance(config, dict) else {}).get("timeframe")
    if not days:
        days = version.get("earlyAccessTimeFrame")
    start = parse_time(version.get("publishedAt")) or parse_time(version.get("createdAt"))
    if isinstance(days, int | float) and days > 0 and start is not None:
        deadline = start + timedelta(days=days)
        return (True, deadline.isoformat()) if deadline > now else (False, None)
    return version.get("availability") == "EarlyAccess", None


def early_access_until(version: dict[str, Any], now: datetime | None = None) -> str | None:
    """When a version in early access can be downloaded (its ISO end date, as Civitai wrote it),
    or None when it can be downloaded now. In early access without a date Civitai gives: the
    far future (FAR_FUTURE), so it is never taken for downloadable. Shared by the update check
    and follows."""
    waiting, until = early_access(version, now or datetime.now(UTC))
    if not waiting:
        return None
    return until or FAR_FUTURE


def is_published(version: dict[str, Any], now: datetime) -> bool:
    """Published and visible now: not a draft (no `publishedAt`), not scheduled for later."""
    if version.get("status", "Published") != "Published":
        return False
    published = parse_time(version.get("publishedAt"))
    return published is not None and published <= now


def is_downloadable(version: dict[str, Any]) -> bool:
    """It has a file other than training data, and its creator allows downloads: Civitai's
    `usageControl` is "Download" (a version that only generates says "Generation"; the 2022 API
    had no such key)."""
    control = version.get("usageControl")
    return bool(usable_files(version)) and control in (None, "Download")


def published_key(version: dict[str, Any]) -> tuple[datetime, int]:
    """The order of "newer": `publishedAt`, then the id."""
    vid = version.get("id")
    return parse_time(version.get("publishedAt")) or NEVER, vid if isinstance(vid, int) else 0


def newest_version(
    model: dict[str, Any],
    now: datetime | None = None,
    early: bool = False,
    archives: bool | None = None,
) -> dict[str, Any] | None:
    """The latest published, downloadable version by `publishedAt` (ties: the larger id).
    A version in early access counts only with `early=True` (the update check reports it).
    `archives`: True, a version whose model file is only an archive counts; False, it never
    does; None (a request for "the newest"), only when no version has a file loaded as is."""
    now = now or datetime.now(UTC)
    candidates = [
        v
        for v in model.get("modelVersions") or []
        if isinstance(v, dict)
        and isinstance(v.get("id"), int)
        and is_published(v, now)
        and is_downloadable(v)
        and (early or not early_access(v, now)[0])
    ]
    direct = [v for v in candidates if archives or loads_directly(v)]
    if archives is None and not direct:
        direct = candidates
    return max(direct, key=published_key, default=None)
