"""Where a job's bytes come from: Civitai, the Hugging Face Hub, or a direct URL (the bytes by
source of GET /metrics, kept in each completed row's `origin`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sources.huggingface import HUB_HOSTS

ORIGINS = ("civitai", "huggingface", "direct")


def origin_of(row: dict[str, Any], hf_base_url: str) -> str:
    """`civitai` for a Civitai model version, `huggingface` for a Hub file (a URL on
    huggingface.co or on hf_base_url), else `direct`."""
    if row.get("modelVersionId"):
        return "civitai"
    hub_root = hf_base_url.rstrip("/") + "/"
    for key in ("url", "download_url"):
        url = row.get(key) or ""
        try:
            host = (urlsplit(url).hostname or "").lower()
        except ValueError:
            continue
        if host in HUB_HOSTS or url.startswith(hub_root):
            return "huggingface"
    return "direct"
