"""Credentials in a job's URL, kept apart from it (issue 23, item 5).

A direct URL may carry `user:password@` or a secret in its query (`?token=`, a signed link's
`X-Signature=`, `key=`, `sig=`…): the download needs them, nothing else does. The store keeps
each URL-bearing column of a job (`URL_FIELDS`) without them (`logger.safe_url`: `***` in their
place) and the original values in the `url_secrets` column (JSON), which no job object, event,
webhook or log line is made from. The worker reads the originals back with `revealed`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from logger import safe_url

COLUMN = "url_secrets"
# The job columns that hold the URL asked or its download URL (request: the request as JSON;
# the keys: `url:<the url>` for a direct URL).
URL_FIELDS = ("url", "download_url", "request", "request_key", "dedupe_key")


def kept_apart(fields: Mapping[str, Any], held: str | None = None) -> dict[str, Any]:
    """`fields` (a new job, or a change to one whose url_secrets is `held`) with its URL fields
    free of credentials, and url_secrets set to the originals where they differ."""
    secrets: dict[str, str] = json.loads(held) if held else {}
    out = dict(fields)
    touched = False
    for key in URL_FIELDS:
        if key not in fields:
            continue
        value = fields[key]
        clean = safe_url(value) if isinstance(value, str) else value
        if clean != value:
            out[key], secrets[key] = clean, value
            touched = True
        elif key in secrets:  # a new value without credentials replaces the old
            del secrets[key]
            touched = True
    if touched:
        out[COLUMN] = json.dumps(secrets) if secrets else None
    return out


def touches(fields: Mapping[str, Any]) -> bool:
    return any(key in fields for key in URL_FIELDS)


def revealed(row: Mapping[str, Any], key: str) -> Any:
    """The job's `key` as it was given, credentials included: for the download only."""
    held = row.get(COLUMN)
    if held:
        secrets = json.loads(held)
        if key in secrets:
            return secrets[key]
    return row.get(key)


def public_key(key: str) -> str:
    """A dedupe or request key as stored (to find the jobs of a key computed from a request)."""
    return safe_url(key)
