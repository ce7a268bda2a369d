"""Sidecar files beside each model, in the layout A1111/Forge extensions read (SPEC §12)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

import safefs
from civitai import CivitaiClient
from json_body import media_type
from settings import write_json_atomic

log = logging.getLogger("civitai.metadata")

IMAGE_TYPES = {
    "image/png": ".png",
    "image/jpeg": ".jpeg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
}
MAX_PREVIEW = 50 * 1024 * 1024


def info_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + ".civitai.info")


async def write_sidecars(
    model_path: Path, info: dict[str, Any], http: httpx.AsyncClient, civitai: CivitaiClient
) -> list[Path]:
    """Write `<stem>.civitai.info` and `<stem>.preview.<ext>`; a failure is logged, never raised."""
    written: list[Path] = []
    try:
        await asyncio.to_thread(write_json_atomic, info_path(model_path), info)
        written.append(info_path(model_path))
    except OSError as exc:
        log.warning("cannot write %s: %s", info_path(model_path), exc)
    images = [i for i in info.get("images") or [] if isinstance(i, dict) and i.get("url")]
    if images:
        preview = await _fetch_preview(model_path, images[0]["url"], http, civitai)
        if preview:
            written.append(preview)
    return written


async def _fetch_preview(
    model_path: Path, url: str, http: httpx.AsyncClient, civitai: CivitaiClient
) -> Path | None:
    try:
        response = await http.get(url, headers=civitai.headers_for(url), follow_redirects=True)
    except httpx.HTTPError as exc:
        log.warning("preview for %s not fetched: %s", model_path.name, exc)
        return None
    content_type = media_type(response.headers.get("content-type"))
    if response.status_code != 200 or len(response.content) > MAX_PREVIEW:
        log.warning("preview for %s not fetched: %s", model_path.name, response.status_code)
        return None
    ext = IMAGE_TYPES.get(content_type) or Path(urlsplit(url).path).suffix.lower()
    if ext not in IMAGE_TYPES.values():
        log.warning("preview for %s is not an image (%s)", model_path.name, content_type)
        return None
    target = model_path.with_name(f"{model_path.stem}.preview{ext}")
    try:
        await asyncio.to_thread(safefs.write_atomic, target, response.content)
    except OSError as exc:
        log.warning("cannot write %s: %s", target, exc)
        return None
    return target
