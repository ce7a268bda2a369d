"""Updates of the files on disk that manifest.json does not track (issue 26 item 4): the daily
check asks Civitai about their models in the same batches as the tracked ones and records a newer
version as available, with its file's name and size, without queueing it. The Library page marks
them, and its "Update" and "Download all updates" queue them (library/updates.py).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import errors
from database import Store
from engine.jobs import safe_filename
from events import UpdateEvent
from sources.civitai import pick_file
from sources.versions import newest_version, published_key
from updater.context import CheckContext

log = logging.getLogger("civitai.updater")


def is_newer(version: dict[str, Any], current_id: int, current: dict[str, Any] | None) -> bool:
    """`version` came after the one on disk: by publication (Civitai's order is the creator's),
    or by id when the one on disk is gone from Civitai's list."""
    if version["id"] == current_id:
        return False
    if current is not None:
        return published_key(version) > published_key(current)
    return version["id"] > current_id


def file_fields(version: dict[str, Any]) -> dict[str, Any]:
    """The file an update would download (the version's primary model file): id, name, size."""
    try:
        f = pick_file(version, None)
    except errors.DaemonError:
        return {}
    size_kb = f.get("sizeKB")
    return {
        "file_id": f.get("id"),
        "filename": safe_filename(f.get("name") or "", f"{version['id']}.bin"),
        "size": round(size_kb * 1024) if isinstance(size_kb, int | float) else None,
    }


async def untracked_on_disk(store: Store, tracked: set[int]) -> dict[int, dict[str, Any]]:
    """modelId → the completed row of its newest version on disk, for models not tracked."""

    def op(db: Any) -> dict[int, dict[str, Any]]:
        rows = db.execute(
            "select modelId, max(modelVersionId), model_type, path from completed "
            "where modelId is not null and modelVersionId is not null "
            "and id in (select max(id) from completed group by path) group by modelId"
        ).fetchall()
        return {
            m: {"modelVersionId": v, "model_type": t, "path": p}
            for m, v, t, p in rows
            if m not in tracked
        }

    return await store.read(op)


async def record_available(
    ctx: CheckContext, on_disk: dict[int, dict[str, Any]], models: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Record each untracked model's newer downloadable version, once, with no job."""
    now = datetime.now(UTC)
    found = []
    for model_id, row in sorted(on_disk.items()):
        model = models.get(model_id)
        if model is None:
            continue  # gone from Civitai, or its batch failed (reported with the check)
        current_id = row["modelVersionId"]
        listed = {v.get("id"): v for v in model.get("modelVersions") or [] if isinstance(v, dict)}
        archives = str(row["path"]).lower().endswith(".zip")
        newest = newest_version(model, now, archives=archives)
        if newest is None or not is_newer(newest, current_id, listed.get(current_id)):
            continue
        update = await ctx.store.add_update(
            {
                "modelId": model_id,
                "model_name": model.get("name"),
                "old_version_id": current_id,
                "new_version_id": newest["id"],
                "version_name": newest.get("name"),
                "model_type": row["model_type"],
                "untracked": 1,
                **file_fields(newest),
            }
        )
        if update is not None:
            log.info(
                "update available (not tracked, not queued): %s (model %s) %s → %s",
                model.get("name"),
                model_id,
                current_id,
                newest["id"],
            )
            ctx.bus.publish(UpdateEvent(update))
            found.append(update)
    return found
