"""Track for updates: a job asked with `"track": true` adds or updates its model's manifest.json
entry once its file is verified and in place (SPEC §4, §14) — never before, so a failed job
adds nothing. Written under the daemon's one manifest lock, shared with the updater and the
scanner, and atomically (manifest.save)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config.settings import Settings
from database import Store
from library import keeping, manifest, policy
from sources.huggingface import is_hub_file

log = logging.getLogger("civitai.manifest")


class Tracker:
    def __init__(
        self, settings: Callable[[], Settings], lock: asyncio.Lock, store: Store, root: Path
    ) -> None:
        self.settings = settings  # read at each use: manifest_mode may change while running
        self.lock = lock
        self.store = store
        self.root = root  # download_dir, resolved

    async def keep_newest(self, row: dict[str, Any]) -> None:
        """An update job of a model whose policy is `{"keep": N}`, its file verified and in
        place: the model's versions on disk past the N newest are deleted (library/keeping.py).
        Any other job: nothing."""
        replaces = json.loads(row["replaces"]) if row.get("replaces") else {}
        keep = policy.keep_count(replaces.get("policy"))
        if keep is None or not row.get("modelId"):
            return
        settings = self.settings()
        roots = (settings.models_dir, self.root)
        try:
            await keeping.keep_newest(
                self.store,
                row["modelId"],
                keep,
                replaces.get("order") or [],
                roots,
                (settings.manifest_path, self.lock),
            )
        except Exception:  # the new file is fine: a failed clean-up only leaves the old ones
            log.exception(
                "job %s: older versions of model %s not removed", row["id"], row["modelId"]
            )

    async def record(self, row: dict[str, Any], path: Path, sha256: str) -> str | None:
        """A job whose file is verified at `path`: if it asked to track, add or update its
        model's entry. None when tracked (or not asked); else a sentence saying why it is not,
        kept on the job as its note (the file itself is fine). An update of a model whose
        policy keeps N versions first deletes those past the N newest."""
        await self.keep_newest(row)
        if not row.get("track"):
            return None
        return await self.add({**row, "path": str(path), "sha256": sha256})

    async def add(self, job: dict[str, Any]) -> str | None:
        """Add or update the entry of a completed job's file; None, or why it is not tracked.
        A Hugging Face file's entry names the URL asked (e.g. at `main`) and its SHA256, which
        the update check compares with the file's at that revision."""
        fields = {
            "model_type": job["model_type"],
            "sha256": job.get("sha256"),
            "filename": Path(job["path"]).name if job.get("path") else job.get("filename"),
        }
        if not job.get("modelId") and is_hub_file(job, self.settings().hf_base_url):
            return await self._write(job, {"url": job["url"], **fields}, manifest.track_url)
        if not job.get("modelId") or not job.get("modelVersionId"):
            return (
                "Downloaded, but not tracked for updates: only Civitai models and Hugging Face "
                "files can be tracked, and this file came from a direct URL"
            )
        ids = {"modelId": job["modelId"], "modelVersionId": job["modelVersionId"]}
        return await self._write(job, {**ids, **fields}, manifest.track)

    async def _write(
        self, job: dict[str, Any], fields: dict[str, Any], track: Callable
    ) -> str | None:
        what = fields.get("url") or (
            f"model {fields['modelId']} version {fields['modelVersionId']}"
        )
        settings = self.settings()
        try:
            async with self.lock:
                entry, added = await asyncio.to_thread(
                    track, settings.manifest_path, fields, settings.manifest_mode
                )
        except (OSError, ValueError) as exc:
            log.error("job %s: not tracked: %s", job["id"], exc)
            return f"Downloaded, but not tracked for updates: {exc}"
        log.info(
            "job %s: %s tracked as manifest.json entry %d (%s)",
            job["id"],
            what,
            entry,
            "added" if added else "updated",
        )
        return None
