"""The update checker (SPEC §10): new versions of tracked models, found politely, fetched.

`check_updates` is a plain async function; `Updater` wires it to APScheduler (daily at
`update_check`) and to the API (on demand), and keeps the result of the last run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

import errors
from config.settings import Settings
from daemon import DownloadQueue
from database import Store, utcnow
from engine.jobs import JobRequest, safe_filename
from events import EventBus, UpdateEvent
from library import manifest
from library.files import versioned_name
from sources.civitai import CivitaiClient, pick_file
from sources.versions import early_access, newest_version, published_key
from updater.context import CheckContext, CheckResult
from updater.history import CheckHistory
from updater.hub import check_hub_entries

log = logging.getLogger("civitai.updater")

BATCH = 100  # ids per /api/v1/models request, Civitai's page limit
CONCURRENCY = 3  # batches in flight at once
JOB_ID = "update-check"


async def current_version(store: Store, entry: JobRequest) -> tuple[int | None, dict | None]:
    """The version the entry stands for: its modelVersionId, or the newest one completed."""
    rows = await store.find_completed(None, entry.modelId, None)
    if entry.modelVersionId:
        mine = [r for r in rows if r["modelVersionId"] == entry.modelVersionId]
        return entry.modelVersionId, (mine[0] if mine else None)
    if rows:
        newest = max(rows, key=lambda r: r["modelVersionId"] or 0)
        return newest["modelVersionId"], newest
    return None, None


async def check_updates(ctx: CheckContext) -> CheckResult:
    """Check every manifest entry with a modelId; fetch and record each newer version."""
    result, civitai = ctx.result, ctx.civitai
    _, entries, problems = manifest.load(ctx.settings.manifest_path)
    result.errors += [p.public() for p in problems]  # numbered as everywhere: entry 1 first
    tracked = [(i, e) for i, e in entries if e.modelId]
    ids = sorted({e.modelId for _, e in tracked if e.modelId})
    models: dict[int, dict[str, Any]] = {}
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def fetch(batch: list[int]) -> None:
        async with semaphore:

            async def listed() -> list[dict[str, Any]]:
                items, pages = await civitai.get_models(batch)
                result.requests += pages - 1  # the first is counted by ask()
                return items

            try:
                for model in await ctx.ask(listed):
                    if isinstance(model, dict) and isinstance(model.get("id"), int):
                        models[model["id"]] = model
            except errors.DaemonError as exc:
                log.warning("update check: models %s..%s not checked: %s", batch[0], batch[-1], exc)
                for model_id in batch:
                    result.errors.append({"modelId": model_id, "detail": str(exc)})

    async def fetch_one(model_id: int) -> None:
        """A model the batch left out: hidden from lists (NSFW, POI, ...) or deleted. Only its
        own page says which: 404 is deleted; an answer is the model, checked like the others."""
        async with semaphore:
            try:
                model = await ctx.ask(lambda: civitai.get_model(model_id))
            except errors.NotFoundOnCivitai:
                return  # deleted: reported below
            except errors.DaemonError as exc:
                result.errors.append({"modelId": model_id, "detail": str(exc)})
                return
            if isinstance(model, dict) and model.get("id") == model_id:
                models[model_id] = model

    await asyncio.gather(*(fetch(ids[i : i + BATCH]) for i in range(0, len(ids), BATCH)))
    listed_failed = {e["modelId"] for e in result.errors if "modelId" in e}
    missing = [i for i in ids if i not in models and i not in listed_failed]
    await asyncio.gather(*(fetch_one(i) for i in missing))

    failed = {e["modelId"] for e in result.errors if "modelId" in e and "entry" not in e}
    for index, entry in tracked:
        assert entry.modelId is not None
        if entry.modelId in failed:
            continue
        model = models.get(entry.modelId)
        if model is None:
            result.errors.append(
                {
                    "entry": index + 1,
                    "modelId": entry.modelId,
                    "detail": f"No model {entry.modelId} on Civitai (deleted)",
                }
            )
            continue
        result.checked += 1
        try:
            found = await _compare(ctx, index, entry, model)
        except errors.DaemonError as exc:
            result.errors.append({"entry": index + 1, "modelId": entry.modelId, "detail": str(exc)})
            continue
        except Exception as exc:  # one model's surprise never stops the rest
            log.exception("update check of model %s failed", entry.modelId)
            result.errors.append(
                {"entry": index + 1, "modelId": entry.modelId, "detail": repr(exc)}
            )
            continue
        result.updates += found
    await check_hub_entries(ctx)
    result.finished_at = utcnow()
    log.info(
        "update check: %d checked, %d updates, %d errors, %d requests",
        result.checked,
        len(result.updates),
        len(result.errors),
        result.requests,
    )
    return result


async def _compare(
    ctx: CheckContext, index: int, entry: JobRequest, model: dict[str, Any]
) -> list[dict[str, Any]]:
    """The updates of one tracked model: its newest version if that is in early access (reported
    with its date, not queued), and its newest downloadable version (queued)."""
    current_id, current_row = await current_version(ctx.store, entry)
    if current_id is None:
        return []  # never downloaded yet: the start-up queue takes care of it
    now = datetime.now(UTC)
    listed = {v.get("id"): v for v in model.get("modelVersions") or [] if isinstance(v, dict)}
    current = listed.get(current_id)

    def newer(version: dict[str, Any]) -> bool:
        if version["id"] == current_id:
            return False
        if current is not None:  # by publication, as Civitai's order is the creator's
            return published_key(version) > published_key(current)
        return version["id"] > current_id  # our version is gone from Civitai's list

    # A tracked .safetensors is never "updated" to a Diffusers zip (and a tracked zip only by one).
    archives = str((current_row or {}).get("path") or "").lower().endswith(".zip")
    found = []
    latest = newest_version(model, now, early=True, archives=archives)
    if latest is not None and newer(latest):
        waiting, until = early_access(latest, now)
        if waiting:
            update = await ctx.store.add_update(
                _update_row(entry, model, current_id, latest) | {"early_access_until": until}
            )
            if update is not None:
                log.info(
                    "update found in early access until %s: %s (model %s) %s → %s, not queued",
                    until or "a date Civitai did not give",
                    model.get("name"),
                    entry.modelId,
                    current_id,
                    latest["id"],
                )
                ctx.bus.publish(UpdateEvent(update))
                found.append(update)
    ready = newest_version(model, now, archives=archives)
    if ready is not None:
        known = (current_id, current_row)
        update = await _fetch(ctx, index, entry, model, known, ready, newer(ready))
        if update is not None:
            found.append(update)
    return found


def _update_row(
    entry: JobRequest, model: dict[str, Any], current_id: int, version: dict[str, Any]
) -> dict[str, Any]:
    return {
        "modelId": entry.modelId,
        "model_name": model.get("name"),
        "old_version_id": current_id,
        "new_version_id": version["id"],
        "version_name": version.get("name"),
        "model_type": entry.model_type,
    }


async def _fetch(
    ctx: CheckContext,
    index: int,
    entry: JobRequest,
    model: dict[str, Any],
    known: tuple[int, dict[str, Any] | None],
    newest: dict[str, Any],
    newer: bool,
) -> dict[str, Any] | None:
    """Record a newer (or republished) downloadable version and queue its download; an update
    found while in early access is queued now. `known`: the version on disk and its record."""
    current_id, current_row = known
    settings, store = ctx.settings, ctx.store
    new_file = pick_file(newest, None)
    new_sha = ((new_file.get("hashes") or {}).get("SHA256") or "").lower() or None
    republished = (
        newest["id"] == current_id and entry.sha256 and new_sha and new_sha != entry.sha256.lower()
    )
    if not (newer or republished):
        return None

    model_type = entry.model_type
    name = safe_filename(new_file.get("name") or "", f"{newest['id']}.bin")
    replaces = None
    if current_row is not None:
        old_path = current_row["path"]
        if settings.manifest_mode == "append" and name == current_row["filename"]:
            name = versioned_name(name, newest["id"])
        replaces = {
            "path": old_path,
            "sha256": current_row["sha256"],
            "version_id": current_row["modelVersionId"],
        }
    request = JobRequest(
        model_type=model_type,
        modelId=entry.modelId,
        modelVersionId=newest["id"],
        fileId=new_file["id"],
        filename=name,
        priority=entry.priority,
    )
    assert entry.modelId is not None
    update = await store.waiting_update(entry.modelId, newest["id"])
    if update is None:
        update = await store.add_update(_update_row(entry, model, current_id, newest))
    if update is None:
        return None  # found before; its download was queued then
    job, _ = await ctx.queue.submit(request, source="update", replaces=replaces)
    fields = {"job_id": job["id"], "early_access_until": None}
    await store.run(lambda db: db["updates"].update(update["id"], fields))
    update.update(fields)

    def change(old: dict[str, Any]) -> dict[str, Any]:
        """The entry now names the new version; `url` and `fileId` named the old one."""
        new = {k: v for k, v in old.items() if k not in ("url", "fileId")}
        new["modelVersionId"] = newest["id"]
        if new_sha:
            new["sha256"] = new_sha
        if "filename" in old or settings.manifest_mode == "append":
            new["filename"] = name
        return new

    await ctx.record(index, lambda e: e.get("modelId") == entry.modelId, change)
    log.info(
        "update found: %s (model %s) %s → %s, job %s",
        model.get("name"),
        entry.modelId,
        current_id,
        newest["id"],
        job["id"],
    )
    ctx.bus.publish(UpdateEvent(update))
    return update


class Updater:
    """Owns the schedule, the check lock and the last result."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        civitai: CivitaiClient,
        queue: DownloadQueue,
        bus: EventBus,
        manifest_lock: asyncio.Lock,
    ) -> None:
        self.settings = settings
        self.history = CheckHistory(store)
        self.parts = (store, civitai, queue, bus, manifest_lock)
        self.lock = asyncio.Lock()
        self.last: CheckResult | None = None
        self.scheduler = AsyncIOScheduler()
        self._task: asyncio.Task | None = None

    async def restore(self) -> None:
        """The last check of an earlier run, so a restart does not report "never"."""
        summary = await self.history.last()
        if summary is not None and self.last is None:
            self.last = CheckResult(**summary)

    def start(self) -> None:
        self._schedule()
        self.scheduler.start()

    def apply(self, settings: Settings) -> None:
        """Settings changed while running: the daily check moves to the new time."""
        self.settings = settings
        self._schedule()

    def _schedule(self) -> None:
        uc = self.settings.update_check
        if not uc.enabled:
            if self.scheduler.get_job(JOB_ID):
                self.scheduler.remove_job(JOB_ID)
            return
        self.scheduler.add_job(
            self.run_scheduled,
            CronTrigger(hour=uc.hour, minute=uc.minute, second=uc.second),
            id=JOB_ID,
            name="daily update check",
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=3600,
        )

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def run_scheduled(self) -> None:
        self._task = asyncio.current_task()
        try:
            await self.run()
        except Exception:
            log.exception("scheduled update check failed")

    async def run(self) -> CheckResult:
        """Run a check now; a second caller waits for the first, then runs its own."""
        async with self.lock:
            started = time.monotonic()
            ctx = CheckContext(self.settings, *self.parts, CheckResult(started_at=utcnow()))
            self.last = await check_updates(ctx)
            self.last.duration_s = round(time.monotonic() - started, 3)
            log.info("update check took %.1f s", self.last.duration_s)
            try:
                await self.history.add(self.last.summary())
            except Exception:  # the check itself is done: a full disk only forgets its record
                log.exception("update check: cannot record it")
            return self.last

    def next_run(self) -> str | None:
        job = self.scheduler.get_job(JOB_ID)
        when: datetime | None = getattr(job, "next_run_time", None) if job else None
        return when.isoformat() if when else None

    def scheduled_jobs(self) -> int:
        return len(self.scheduler.get_jobs())
