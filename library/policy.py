"""A tracked model's update policy: manifest.json's optional `policy` key (issue 28), what the
update check does with a newer version of that model.

- `notify`: list it (the updates list, its event) and queue nothing;
- `download` (the default: an entry without the key): queue it; the old file's fate follows
  `manifest_mode` and `old_versions`, as it always has;
- `replace`: queue it, then retire the old file as `old_versions` says, whatever
  `manifest_mode` says (the model's entry then names the new version);
- `{"keep": N}`: queue it beside the others (never over one), then keep the N newest versions on
  disk and delete the older ones with their sidecars, completed rows and manifest entries
  (library/keeping.py; never a file outside download_dir, never through a link).
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT = "download"
NAMES = ("notify", "download", "replace")
MAX_KEEP = 1000
EXPECTED = f'"notify", "download", "replace" or {{"keep": N}} with N from 1 to {MAX_KEEP}'


def check(value: Any) -> str | dict[str, int]:
    """The policy as manifest.json keeps it; ValueError with a sentence when it is none."""
    if isinstance(value, str) and value in NAMES:
        return value
    if isinstance(value, dict) and set(value) == {"keep"}:
        n = value["keep"]
        if type(n) is int and 1 <= n <= MAX_KEEP:
            return {"keep": n}
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise ValueError(f"policy must be {EXPECTED}, not {shown}")


def of_entry(entry: Any) -> str | dict[str, int]:
    """The policy of a manifest entry (checked by manifest.load); the default when unset."""
    if isinstance(entry, dict) and entry.get("policy") is not None:
        return check(entry["policy"])
    return DEFAULT


def keep_count(policy: Any) -> int | None:
    """N of `{"keep": N}`, else None."""
    return policy["keep"] if isinstance(policy, dict) else None


def label(policy: Any) -> str:
    """`keep 3`, `notify`, …: how a person reads it (the updates list, a log line)."""
    n = keep_count(policy)
    return f"keep {n}" if n is not None else str(policy)


def retires_old(replaces: dict[str, Any] | None, manifest_mode: str) -> bool:
    """Whether an update job's old file (`replaces`: its path, and the model's policy when not
    the default), at another path than the new one, is retired as `old_versions` says once the
    new one is in place (`keep` deletes the versions past the N newest instead)."""
    if not replaces or not replaces.get("path"):
        return False
    policy = replaces.get("policy")
    if policy in (None, DEFAULT):
        return manifest_mode == "replace"
    return policy == "replace"
