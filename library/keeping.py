"""Policy `{"keep": N}` (library/policy.py): once an update of a model is verified and in place,
the model keeps its N newest versions on disk. Each older one is deleted as
`DELETE /api/library/{id}` deletes (library/removal.py): the file, its sidecars, its completed
rows and the manifest entries that would fetch it again; never a file outside download_dir,
never through a link."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import errors
import safefs
from database import Store
from library.removal import delete_model

log = logging.getLogger("civitai.library")


async def keep_newest(
    store: Store,
    model_id: int,
    keep: int,
    order: list[int],
    roots: tuple[Path, Path],
    manifest: tuple[Path, asyncio.Lock],
) -> list[str]:
    """Delete the model's versions on disk past the `keep` newest; the files deleted. `order`:
    version ids newest first (the update check's, by publication); a version it does not name
    was downloaded since, so it counts as newer than all of them. `roots`: download_dir as
    configured and resolved; `manifest`: its path and the daemon's manifest lock."""
    rows = await store.find_completed(None, model_id, None)
    present = [r for r in rows if await asyncio.to_thread(safefs.is_file, Path(r["path"]))]
    rank = {version: i for i, version in enumerate(order)}
    versions = sorted({r["modelVersionId"] for r in present}, key=lambda v: rank.get(v, -1))
    older = set(versions[keep:])
    deleted: list[str] = []
    for row in present:
        if row["modelVersionId"] not in older:
            continue
        try:
            removal = await delete_model(store, row["id"], *roots, *manifest)
        except (errors.DaemonError, OSError) as exc:  # left in place, said why; the rest go on
            log.warning("model %s: old version %s kept: %s", model_id, row["path"], exc)
            continue
        deleted += removal.deleted
        log.info(
            "model %s keeps its %d newest versions: version %s deleted (%s)",
            model_id,
            keep,
            row["modelVersionId"],
            ", ".join(removal.deleted) or "no file on disk",
        )
    return deleted
