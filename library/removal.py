"""Deleting a model from the library (`DELETE /api/library/{id}`, SPEC §14): its file, the
sidecars the daemon wrote beside it, its completed rows, and the manifest entries that would
download it again.

- Nothing outside download_dir is ever removed, and nothing through a link: the folder is opened
  once (no link below download_dir, checked again after opening) and every name is removed
  through that descriptor; a model file or sidecar that is itself a link is left alone.
- Sidecars are the exact names the daemon writes (`<stem>.civitai.info`, `<stem>.preview.png`,
  A1111's `<stem>.json` when it holds A1111 metadata, and the `<stem>.preview.<ext>` older
  versions wrote):
  a person's `<stem>.txt` or `<stem>_v2.safetensors` stays. Sidecars another completed model
  in the folder shares (same stem) stay too.
- A manifest.json entry for this file (its version, its SHA256, or its model without a version)
  is removed: left there, the next start would download the file again. An entry for the whole
  model stays while another of the model's files is in the library, and the answer says so.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

import errors
import safefs
from database import Store
from library import manifest
from library.files import sidecar_names

log = logging.getLogger("civitai.library")


@dataclass
class Removal:
    id: int
    path: str
    deleted: list[str] = field(default_factory=list)  # files removed from disk
    kept: list[dict[str, str]] = field(default_factory=list)  # {path, reason}
    rows_removed: int = 0  # completed rows of this path
    untracked: list[dict[str, Any]] = field(default_factory=list)  # manifest entries removed
    still_tracked: list[dict[str, Any]] = field(default_factory=list)  # with the reason


def library_path(path: Path, models_dir: Path, root: Path) -> Path:
    """A completed row's path at its place under the resolved download_dir `root` (a row may
    name it through download_dir as configured, itself allowed to be a link)."""
    if not path.is_absolute() or os.path.normpath(path) != str(path):
        raise errors.OutsideLibrary(str(path), str(root))
    for base in (root, models_dir):
        if path.is_relative_to(base) and path != base:
            return root / path.relative_to(base)
    raise errors.OutsideLibrary(str(path), str(root))


def _unlink(name: str, dfd: int, folder: Path, removal: Removal, model: bool) -> None:
    """Remove the regular file `name` in the folder; a link or anything else is left alone."""
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        if model:
            removal.kept.append({"path": str(folder / name), "reason": "already gone"})
        return
    if stat.S_ISLNK(st.st_mode):
        if model:
            target = os.readlink(name, dir_fd=dfd)
            raise errors.DeleteRefused.through_link(str(folder / name), str(folder / name), target)
        removal.kept.append({"path": str(folder / name), "reason": "a symbolic link: left alone"})
        return
    if not stat.S_ISREG(st.st_mode):
        if model:
            raise errors.DeleteRefused.not_a_file(str(folder / name))
        removal.kept.append({"path": str(folder / name), "reason": "not a regular file"})
        return
    os.unlink(name, dir_fd=dfd)
    removal.deleted.append(str(folder / name))


def remove_files(path: Path, root: Path, share_stem: bool, removal: Removal) -> None:
    """Remove the model at `path` (under `root`) and its sidecars, never through a link."""
    folder = path.parent
    try:
        dfd = safefs.open_folder_in(folder, root)
    except FileNotFoundError:
        removal.kept.append({"path": str(path), "reason": "already gone"})
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the folder became a link between the checks
            raise errors.DeleteRefused.through_link(str(path), str(folder), "?") from None
        raise
    try:
        _unlink(path.name, dfd, folder, removal, model=True)
        for name in sidecar_names(path.name, folder):
            if share_stem:
                if os.path.lexists(folder / name):
                    reason = "shared with another model of the same name in this folder"
                    removal.kept.append({"path": str(folder / name), "reason": reason})
                continue
            _unlink(name, dfd, folder, removal, model=False)
    finally:
        os.close(dfd)


def _others(db: Database, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The other completed files (other paths) of the same folder's stem, or the same model."""
    return db.execute_returning_dicts(
        "select * from completed where path != ? and (modelId = ? or path like ?)",
        [row["path"], row["modelId"], str(Path(row["path"]).parent) + os.sep + "%"],
    )


async def _untrack(
    manifest_path: Path, lock: asyncio.Lock, row: dict[str, Any], model_kept: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Remove the manifest entries that stand for this file; (removed, kept with a reason).
    Entries are numbered from 1, as everywhere else."""
    sha = (row.get("sha256") or "").lower()
    async with lock:
        raw, _, _ = await asyncio.to_thread(manifest.load, manifest_path)
        keep, removed, still = [], [], []
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict):
                keep.append(entry)
                continue
            said = {k: entry.get(k) for k in ("modelId", "modelVersionId", "model_type")}
            version = entry.get("modelVersionId")
            same_version = version is not None and version == row.get("modelVersionId")
            same_hash = bool(sha) and str(entry.get("sha256") or "").lower() == sha
            whole_model = version is None and entry.get("modelId") == row.get("modelId")
            if whole_model and row.get("modelId") is not None and model_kept and not same_hash:
                reason = (
                    "another file of this model is still in the library; untrack the model "
                    "to stop its updates"
                )
                still.append({"entry": i + 1, **said, "reason": reason})
                keep.append(entry)
            elif same_version or same_hash or (whole_model and row.get("modelId") is not None):
                removed.append({"entry": i + 1, **said})
            else:
                keep.append(entry)
        if removed:
            await asyncio.to_thread(manifest.save, manifest_path, keep)
    return removed, still


async def delete_model(
    store: Store,
    completed_id: int,
    models_dir: Path,
    root: Path,
    manifest_path: Path,
    manifest_lock: asyncio.Lock,
) -> Removal:
    """Delete completed download `completed_id`: file, sidecars, rows, manifest entries."""
    rows = await store.read(lambda db: list(db["completed"].rows_where("id = ?", [completed_id])))
    if not rows:
        raise errors.CompletedNotFound(completed_id)
    row = rows[0]
    path = library_path(Path(row["path"]), models_dir, root)
    others = await store.read(_others, row)
    present = [o for o in others if await asyncio.to_thread(safefs.is_file, Path(o["path"]))]
    share_stem = any(
        Path(o["path"]).parent == Path(row["path"]).parent
        and Path(o["path"]).stem == Path(row["path"]).stem
        for o in present
    )
    removal = Removal(id=completed_id, path=str(path))
    await asyncio.to_thread(remove_files, path, root, share_stem, removal)

    def forget(db: Database) -> int:
        with db.atomic():
            n = db.execute("delete from completed where path = ?", [row["path"]]).rowcount
            db.execute("delete from file_hashes where path = ?", [row["path"]])
            return n

    removal.rows_removed = await store.run(forget)
    model_kept = any(o["modelId"] == row["modelId"] for o in present)
    removal.untracked, removal.still_tracked = await _untrack(
        manifest_path, manifest_lock, row, model_kept
    )
    log.info(
        "deleted %s from the library: %s; untracked %d manifest entr%s",
        path,
        ", ".join(removal.deleted) or "no file on disk",
        len(removal.untracked),
        "y" if len(removal.untracked) == 1 else "ies",
    )
    return removal
