"""The update check of tracked Hugging Face files (issue 17): the file's SHA256 at the tracked
revision (e.g. `main`) changed since it was downloaded → an update, recorded, announced and
downloaded with Civitai's rules (`manifest_mode`, `old_versions`). What stands for a version is
the commit: the update's `new_version_id`, and the download is pinned to it.
"""

from __future__ import annotations

import logging
from typing import Any

import errors
from engine.jobs import JobRequest
from events import UpdateEvent
from library import manifest
from library.files import versioned_name
from sources.civitai import CivitaiClient
from sources.huggingface import HubClient
from updater.context import CheckContext

log = logging.getLogger("civitai.updater")


def hub_of(civitai: CivitaiClient) -> HubClient | None:
    return next((s for s in civitai.sources if isinstance(s, HubClient)), None)


async def check_hub_entries(ctx: CheckContext) -> None:
    """Compare each tracked Hub file (a manifest entry with a Hub `url` and its `sha256`)."""
    hub, result = hub_of(ctx.civitai), ctx.result
    if hub is None:
        return
    _, entries, _ = manifest.load(ctx.settings.manifest_path)
    for index, entry in entries:
        if entry.modelId or entry.modelVersionId or not entry.url or not hub.owns(entry.url):
            continue
        try:
            update = await _check(ctx, hub, index, entry)
        except errors.DaemonError as exc:
            result.errors.append({"entry": index + 1, "url": entry.url, "detail": str(exc)})
            continue
        result.checked += 1
        if update is not None:
            ctx.bus.publish(UpdateEvent(update))
            result.updates.append(update)


async def _check(
    ctx: CheckContext, hub: HubClient, index: int, entry: JobRequest
) -> dict[str, Any] | None:
    assert entry.url
    settings, store = ctx.settings, ctx.store
    if not entry.sha256:
        return None  # not downloaded through tracking yet: the start-up queue fetches it
    rows = await store.find_completed(None, None, entry.sha256)
    if not rows:
        return None
    current = rows[0]
    f = hub.file_of(entry.url)

    meta = await ctx.ask(lambda: hub.metadata(f))
    if meta.sha256 is None or meta.sha256 == entry.sha256.lower():
        return None  # a file kept in git has no SHA256 to compare; or nothing changed
    if await store.read(lambda db: _found_before(db, entry.url, meta.commit)):
        return None
    name = current["filename"]
    if settings.manifest_mode == "append":
        name = versioned_name(name, meta.commit[:12])
    old_commit = str(current.get("version_name") or "").rpartition("@")[2] or None
    replaces = {"path": current["path"], "sha256": current["sha256"], "version_id": old_commit}
    request = JobRequest(
        model_type=entry.model_type,
        url=hub.base_url + f.resolve_path(meta.commit),  # pinned: main may move again
        filename=name,
        sha256=meta.sha256,
        priority=entry.priority,
    )
    job, _ = await ctx.queue.submit(request, source="update", replaces=replaces)
    row = {
        "modelId": None,
        "url": entry.url,
        "model_name": f"{f.prefix}{f.repo}",
        "old_version_id": old_commit,
        "new_version_id": meta.commit,
        "version_name": f"{f.revision}@{meta.commit[:12]}",
        "model_type": entry.model_type,
        "job_id": job["id"],
    }
    update = await store.add_update(row)
    sha = meta.sha256

    def change(old: dict[str, Any]) -> dict[str, Any]:
        named = "filename" in old or settings.manifest_mode == "append"
        return {**old, "sha256": sha, **({"filename": name} if named else {})}

    await ctx.record(index, lambda e: e.get("url") == entry.url, change)
    log.info(
        "update found: %s %s at %s → commit %s, job %s",
        f.repo,
        f.path,
        f.revision,
        meta.commit,
        job["id"],
    )
    return update


def _found_before(db: Any, url: str, commit: str) -> bool:
    sql = "select 1 from updates where url = ? and new_version_id = ?"
    return db.execute(sql, [url, commit]).fetchone() is not None
