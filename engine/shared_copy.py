"""The fleet's shared store (fleet/) as one job uses it: a store copy that failed gives way to
the source, and a verified download is offered for upload."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import errors
from engine.connection import Link, SharedCopies
from engine.downloader import Download, Result

log = logging.getLogger("civitai.daemon")


class Shared(SharedCopies, Protocol):
    """What the runner needs of fleet.shared.SharedStore."""

    @property
    def enabled(self) -> bool: ...

    def fell_back(self) -> None: ...

    async def offer(
        self, path: Path, sha256: str, fields: dict[str, Any], replace: bool = False
    ) -> None: ...


async def fetch(
    shared: Shared | None,
    link: Link,
    download: Download,
    before_discard: Callable[[], Awaitable[None]],
) -> Result:
    """Run `download`; when its bytes come from the store and the store errs, or they are not
    the SHA256 the link asked for, forget them and run it again from the source. Errors from
    the source are the caller's, as without a store."""
    while True:
        try:
            result = await download.run()
        except errors.DaemonError as exc:
            if not link.from_store or shared is None:
                raise
            await leave_store(shared, link, download, str(exc), False, before_discard)
            continue
        if link.from_store and shared is not None and result.sha256 != link.sha256:
            why = f"it came as SHA256 {result.sha256}"
            await leave_store(shared, link, download, why, True, before_discard)
            continue
        return result


async def leave_store(
    shared: Shared,
    link: Link,
    download: Download,
    why: str,
    wrong: bool,
    before_discard: Callable[[], Awaitable[None]],
) -> None:
    """Forget the store's copy (and the bytes it gave; `wrong`: they failed the check): the
    source from now on, and the job's log says so."""
    log.warning(
        "job %s: the shared store's copy failed (%s); downloading from the source instead",
        download.job_id,
        why,
    )
    link.leave_store(wrong)
    shared.fell_back()
    await before_discard()
    await download.discard()


async def offer_upload(
    shared: Shared | None, link: Link, row: dict[str, Any], path: Path, sha256: str
) -> None:
    """A verified download (from Civitai, the Hub or a direct URL) goes to the store, in the
    background, keyed by the SHA256 it was verified by; one that came from the store is there
    already."""
    if shared is None or not shared.enabled or link.from_store:
        return
    fields = {
        "modelId": row.get("modelId"),
        "versionId": row.get("modelVersionId"),
        "filename": path.name,
        # As stored: any credential in it already replaced by *** (job_secrets.py).
        "source": row.get("url") or row.get("download_url"),
    }
    try:
        await shared.offer(path, sha256, fields, replace=link.store_copy_wrong)
    except Exception:  # the job has its file: a store's trouble is only logged
        log.exception("job %s: could not queue the upload to the shared store", row["id"])
