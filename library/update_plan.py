"""The plan of "Download all updates" (issue 26 item 4): for each file with an update available,
what would be fetched (version, file, size), where it would go and which file it replaces, from
what the update check recorded; no question to Civitai. Queueing it is the route's (the queue's
`submit`, as the update checker does).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.jobs import JobRequest
from library.files import versioned_name

ACTIVE = ("queued", "downloading", "waiting", "verifying", "paused")


def state_of(row: dict[str, Any]) -> str:
    """ "ready" to queue, "queued" (its download is under way) or "early access" (not yet)."""
    if row.get("update_job_status") in ACTIVE:
        return "queued"
    if row.get("update_job_id") is None and not row.get("update_untracked"):
        return "early access"  # a tracked model's: the check queues it once it can be fetched
    return "ready"


def filename_of(row: dict[str, Any], manifest_mode: str) -> str | None:
    """The new file's name; in `append` mode one that would take the old file's name gets the
    version id in it, as the update checker names it."""
    name = row.get("update_filename")
    if name and manifest_mode == "append" and name == row["filename"]:
        return versioned_name(name, row["update_version_id"])
    return name


def item(
    row: dict[str, Any], manifest_mode: str, where: Callable[[str, str | None], Path]
) -> dict[str, Any]:
    """One line of the plan; `where(model_type, filename)` is the queue's path for it."""
    name = filename_of(row, manifest_mode)
    return {
        "id": row["id"],
        "update_id": row["update_id"],
        "model_name": row["model_name"],
        "version_name": row["version_name"],
        "new_version_id": row["update_version_id"],
        "new_version_name": row["update_version_name"],
        "filename": name,
        "size": row["update_size"],
        "path": str(where(row["model_type"], name)),
        "replaces": row["path"],
        "state": state_of(row),
        "job_id": row["update_job_id"] if state_of(row) == "queued" else None,
    }


def request_of(row: dict[str, Any], manifest_mode: str) -> tuple[JobRequest, dict[str, Any]]:
    """The job an update queues, and the file it replaces (as the update checker queues it)."""
    request = JobRequest(
        model_type=row["model_type"],
        modelId=row["modelId"],
        modelVersionId=row["update_version_id"],
        fileId=row["update_file_id"],
        filename=filename_of(row, manifest_mode),
    )
    replaces = {"path": row["path"], "sha256": row["sha256"], "version_id": row["modelVersionId"]}
    return request, replaces
