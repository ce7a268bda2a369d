"""Twins (issue 26): the same SHA256 at two or more paths under download_dir, and merging them.

- `hardlink` keeps one copy and replaces each other one by a hard link to it: linked to a temp
  name in the other's folder (through a descriptor of that folder, no link followed), checked to
  be the same inode and size, then renamed over the other's name. Only on one file system (a
  409 otherwise, nothing changed).
- `delete` removes the other copies with their sidecars and records (library/removal.py's rules);
  the manifest keeps tracking the model: the copy kept still holds it.
- Every copy is checked to still hold the SHA256 (its cached hash trusted only while its size and
  mtime are unchanged, else hashed again) before anything changes: a copy that changed meanwhile
  is left alone, and the copy kept is never touched, so the last copy is never lost.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

import errors
import safefs
from database import Store
from library.removal import Removal, library_path, remove_files
from library.scanner import file_sha256


class NoTwins(errors.RequestError):
    status_code = 404

    def __init__(self, sha256: str) -> None:
        super().__init__(f"No file of SHA256 {sha256} is in the library at two places")


class TwinsApart(errors.RequestError):
    status_code = 409


@dataclass
class Merge:
    sha256: str
    action: str
    keep: str
    linked: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)  # {path, reason}
    freed: int = 0  # bytes


def _paths_by_hash(db: Database, sha256: str | None = None) -> dict[str, dict[str, int]]:
    """SHA256 → {path: size} of every file the library holds (completed and scanned)."""
    where = "and lower(sha256) = ?" if sha256 else ""
    args = [sha256, sha256] if sha256 else []
    sql = (
        f"select lower(sha256), path, size from completed where sha256 is not null {where} "
        "union select lower(sha256), path, size from file_hashes where status is not null "
        f"and sha256 is not null {where}"
    )
    out: dict[str, dict[str, int]] = {}
    for sha, path, size in db.execute(sql, args).fetchall():
        out.setdefault(sha, {})[path] = size
    return {sha: paths for sha, paths in out.items() if len(paths) > 1}


def _on_disk(paths: dict[str, int]) -> dict[str, os.stat_result]:
    """The paths that are regular files now (a link or a file gone does not count)."""
    out = {}
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out[path] = st
    return out


def _group(sha: str, found: dict[str, os.stat_result]) -> dict[str, Any] | None:
    if len(found) < 2:
        return None
    size = next(iter(found.values())).st_size
    inodes = {(st.st_dev, st.st_ino) for st in found.values()}
    return {
        "sha256": sha,
        "size": size,
        "paths": sorted(found),
        "copies": len(inodes),  # distinct files on disk: hard links of one count once
        "freeable": size * (len(inodes) - 1),
    }


async def duplicates(store: Store) -> list[dict[str, Any]]:
    """Every SHA256 held at two or more paths, biggest saving first."""
    by_hash = await store.read(_paths_by_hash)

    def look() -> list[dict[str, Any]]:
        groups = [_group(sha, _on_disk(paths)) for sha, paths in by_hash.items()]
        return sorted((g for g in groups if g), key=lambda g: (-g["freeable"], g["sha256"]))

    return await asyncio.to_thread(look)


async def _holds(store: Store, path: Path, sha256: str) -> bool:
    try:
        st = await asyncio.to_thread(os.lstat, path)
        return (await file_sha256(store, path, st))[0].lower() == sha256
    except OSError:
        return False


def link_copy(keep: Path, other: Path, root: Path) -> None:
    """Make `other` a hard link to `keep`, atomically (replacing the file there, if any), never
    through a link: linked to a temp name in `other`'s folder, checked to be the same inode and
    size, then renamed over `other`'s name."""
    dfd = safefs.open_folder_in(other.parent, root)
    tmp = f".{other.name}.{secrets.token_hex(4)}.link"
    try:
        os.link(keep, tmp, dst_dir_fd=dfd, follow_symlinks=False)
        made, kept = os.lstat(tmp, dir_fd=dfd), os.lstat(keep)
        if (made.st_ino, made.st_dev, made.st_size) != (kept.st_ino, kept.st_dev, kept.st_size):
            raise OSError(f"the link to {keep} is not the same file")
        try:
            if not stat.S_ISREG(os.lstat(other.name, dir_fd=dfd).st_mode):
                raise OSError(f"{other} is not a regular file: left alone")
        except FileNotFoundError:
            pass
        os.replace(tmp, other.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except FileNotFoundError:
            pass
        os.close(dfd)


async def find_copy(store: Store, sha256: str, folder: Path, root: Path) -> Path | None:
    """A file under `root` holding `sha256` that a hard link in `folder` can reach (same file
    system, no link on its way), checked by its hash (the cached one only while its size and
    mtime are unchanged); None when there is none."""
    sha256 = sha256.lower()
    paths = await store.read(
        lambda db: [
            r[0]
            for r in db.execute(
                "select path from completed where lower(sha256) = ? union "
                "select path from file_hashes where status is not null and lower(sha256) = ?",
                [sha256, sha256],
            ).fetchall()
        ]
    )
    try:
        device = (await asyncio.to_thread(os.stat, folder)).st_dev
    except OSError:
        return None
    for name in paths:
        path = Path(name)
        if root not in path.parents or safefs.first_link(path, root) is not None:
            continue
        found = await asyncio.to_thread(_on_disk, {name: 0})
        if name in found and found[name].st_dev == device and await _holds(store, path, sha256):
            return path
    return None


async def merge(
    store: Store, sha256: str, action: str, keep: str, models_dir: Path, root: Path
) -> Merge:
    """Keep `keep`; hard-link or delete every other copy of `sha256` (see the module)."""
    sha256 = sha256.lower()
    groups = await store.read(_paths_by_hash, sha256)
    found = await asyncio.to_thread(_on_disk, groups.get(sha256, {}))
    if len(found) < 2:
        raise NoTwins(sha256)
    if keep not in found:
        raise errors.InvalidRequest(f"keep must be one of the copies: {', '.join(sorted(found))}")
    keep_path = library_path(Path(keep), models_dir, root)
    others = [p for p in sorted(found) if p != keep]
    targets = [(p, library_path(Path(p), models_dir, root)) for p in others]
    for path in [keep_path.parent, *(t.parent for _, t in targets)]:
        if (link := safefs.first_link(path, root)) is not None:
            raise errors.DeleteRefused.through_link(str(path), str(link), os.readlink(link))
    if action == "hardlink":
        apart = [p for p in others if found[p].st_dev != found[keep].st_dev]
        if apart:
            raise TwinsApart(
                f"{', '.join(apart)} lie on another file system than {keep}; a hard link cannot "
                "join them. Nothing was changed: use delete, or move them first"
            )
    if not await _holds(store, keep_path, sha256):
        raise TwinsApart(f"{keep} no longer holds SHA256 {sha256}; nothing was changed")
    result = Merge(sha256=sha256, action=action, keep=keep)
    for path, target in targets:
        same_inode = (found[path].st_ino, found[path].st_dev) == (
            found[keep].st_ino,
            found[keep].st_dev,
        )
        if same_inode and action == "hardlink":
            result.kept.append({"path": path, "reason": "already a hard link of the copy kept"})
            continue
        if not same_inode and not await _holds(store, target, sha256):
            result.kept.append({"path": path, "reason": "its content changed: left alone"})
            continue
        if action == "hardlink":
            await asyncio.to_thread(link_copy, keep_path, target, root)
            result.linked.append(path)
            result.freed += found[path].st_size
            await store.run(_relink_rows, path, await asyncio.to_thread(os.lstat, target))
        else:
            await _delete(store, path, target, keep_path, root, result)
            if not same_inode:
                result.freed += found[path].st_size
    return result


async def _delete(
    store: Store, path: str, target: Path, keep: Path, root: Path, result: Merge
) -> None:
    removal = Removal(id=0, path=path)
    share_stem = target.parent == keep.parent and target.stem == keep.stem
    await asyncio.to_thread(remove_files, target, root, share_stem, removal)
    result.deleted += removal.deleted
    result.kept += [k for k in removal.kept if k["path"] != path]

    def forget(db: Database) -> None:
        with db.atomic():
            db.execute("delete from completed where path = ?", [path])
            db.execute("delete from file_hashes where path = ?", [path])

    await store.run(forget)


def _relink_rows(db: Database, path: str, st: os.stat_result) -> None:
    """A copy now linked to the kept file has its size and mtime: the cached hash holds."""
    with db.atomic():
        args = [st.st_size, st.st_mtime_ns, path]
        db.execute("update file_hashes set size = ?, mtime_ns = ? where path = ?", args)
        db.execute("update completed set size = ?, mtime_ns = ? where path = ?", args)
