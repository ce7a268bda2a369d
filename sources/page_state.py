"""What the daemon holds of the model a Civitai page names (issue 25: the browser extension's
badge): queued, downloaded, or an update available, from the page URL's ids alone."""

from __future__ import annotations

from typing import Any

from database import Store
from engine.jobs import ACTIVE_SQL
from sources.civitai import CivitaiClient
from sources.versions import newest_version

QUEUED, DOWNLOADED, UPDATE = "queued", "downloaded", "update available"


async def held(store: Store, model_id: int | None, version_id: int | None) -> dict[str, Any]:
    """The versions of the model (or the one version) completed here, and the active jobs'."""

    def op(db: Any) -> dict[str, Any]:
        where = "modelId = ?" if model_id else "modelVersionId = ?"
        arg = model_id or version_id
        done = [
            r[0]
            for r in db.execute(
                f"select distinct modelVersionId from completed where {where} "
                "and modelVersionId is not null order by modelVersionId",
                [arg],
            )
        ]
        active = db.execute(
            f"select modelVersionId from jobs where {ACTIVE_SQL} and {where}", [arg]
        ).fetchall()
        return {"done": done, "active": [r[0] for r in active]}

    return await store.read(op)


async def page_state(
    store: Store, civitai: CivitaiClient, model_id: int | None, version_id: int | None
) -> dict[str, Any]:
    """The badge's state for a model page (`version_id` None: the page names only the model).
    Civitai is asked only when the answer needs the model's newest version: a page naming no
    version, or a version not held of a model that is."""
    if model_id is None and version_id is not None:
        model_id = (await civitai.get_version(version_id)).get("modelId")
    mine = await held(store, model_id, version_id)
    done, active = set(mine["done"]), mine["active"]
    newest: int | None = None
    target = version_id
    if (done or active) and (target is None or target not in done):
        found = newest_version(await civitai.get_model(model_id)) if model_id else None
        newest = found["id"] if found else None
        target = target or newest
    if (target is not None and target in active) or (version_id is None and active):
        state: str | None = QUEUED
    elif target is not None and target in done:
        state = DOWNLOADED
    elif done and target is not None and target == newest:
        state = UPDATE  # another version is here; the one this page shows is Civitai's newest
    else:
        state = None
    return {
        "modelId": model_id,
        "modelVersionId": target,
        "state": state,
        "downloaded_versions": sorted(done),
        "newest_version_id": newest,
    }
