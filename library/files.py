"""The model library on disk: what happens to a model's old file when a new version arrives."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import errors
import safefs
from engine.jobs import OLD_PREVIEW_SUFFIXES, PREVIEW_SUFFIX
from library import a1111

log = logging.getLogger("civitai.library")

# The daemon's sidecars, and the preview names older versions wrote: they move and go with it.
# `<stem>.json` only when it holds A1111 metadata (see `sidecar_names`).
SIDECAR_SUFFIXES = (".civitai.info", PREVIEW_SUFFIX, *OLD_PREVIEW_SUFFIXES, a1111.SUFFIX)


HASH_CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path, on_chunk: Callable[[int], None] | None = None) -> str:
    """The SHA256 of a file on disk, read once; `on_chunk(n)` after every n bytes read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return h.hexdigest()


def versioned_name(filename: str, version_id: int) -> str:
    """`model.safetensors` → `model_v123.safetensors`."""
    stem, dot, ext = filename.rpartition(".")
    if not dot or not stem:
        return f"{filename}_v{version_id}"
    return f"{stem}_v{version_id}.{ext}"


def sidecar_names(filename: str, folder: Path) -> list[str]:
    """The names of `filename`'s sidecars in `folder`, there or not. `<stem>.json` counts only
    when it is A1111 metadata: a `.json` file of another kind (a downloaded config that shares
    the stem) is no sidecar, never moved or deleted with the model."""
    stem = Path(filename).stem
    names = [stem + suffix for suffix in SIDECAR_SUFFIXES]
    json_name = stem + a1111.SUFFIX
    if json_name != filename and a1111.is_a1111_file(folder / json_name):
        return names
    return [n for n in names if n != json_name]


def sidecars(model_path: Path) -> list[Path]:
    folder = model_path.parent
    return [p for n in sidecar_names(model_path.name, folder) if (p := folder / n).exists()]


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link at `dst`, or a copy where links do not work (another disk). Never over or
    through anything already at `dst` (a link planted there is refused, not followed)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
        return
    except FileExistsError:
        raise
    except OSError:
        pass  # EXDEV, or a filesystem without hard links: copy
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | safefs.O_NOFOLLOW | safefs.O_BINARY
    fd = os.open(dst, flags, 0o644)
    try:
        with open(src, "rb") as inp, os.fdopen(fd, "wb", closefd=False) as out:
            shutil.copyfileobj(inp, out, HASH_CHUNK)
            out.flush()
            os.fsync(fd)
        shutil.copystat(src, dst, follow_symlinks=False)
    except BaseException:
        os.unlink(dst)
        raise
    finally:
        os.close(fd)


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(src, dst)


def free_name(path: Path) -> Path:
    """`path`, or `path` with a counter if something is already there."""
    candidate, n = path, 1
    while os.path.lexists(candidate):  # a dangling link counts: nothing is written through it
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
        n += 1
    return candidate


def preserve_before_swap(
    old: Path, policy: str, old_version_id: int | None, archive_dir: Path
) -> Path | None:
    """The new file will replace `old` at the same path: first keep or archive the old bytes,
    as the policy says. Returns where they went (None for `delete`)."""
    if policy == "delete" or not old.exists():
        return None
    if policy == "archive":
        target = free_name(archive_dir / old.name)
    else:  # keep, under a versioned name beside the new one
        target = free_name(old.with_name(versioned_name(old.name, old_version_id or 0)))
    _link_or_copy(old, target)
    log.info("old version of %s kept as %s", old.name, target)
    return target


def retire(old: Path, policy: str, archive_dir: Path, root: Path) -> Path | None:
    """The new version sits at another path (another name, or another layout's folder): keep,
    delete or archive the old file and sidecars. Only a regular file whose folder really lies
    inside `root` (the resolved download_dir) is touched: an old folder that has become a link
    out of it (moved to another disk and linked back) is left alone, never reached through."""
    if policy == "keep" or not old.exists():
        return None
    try:
        old = safefs.real_folder(old.parent, root) / old.name
    except errors.FolderOutside as exc:
        log.warning("old version %s left in place: %s", old, exc)
        return None
    if not safefs.is_file(old):
        log.warning("old version %s left in place: it is a link, not the file downloaded", old)
        return None
    extra = sidecars(old)
    if policy == "delete":
        for p in [old, *extra]:
            p.unlink(missing_ok=True)
        log.info("old version %s deleted", old)
        return None
    target = free_name(archive_dir / old.name)
    _move(old, target)
    for p in extra:
        _move(p, free_name(archive_dir / p.name))
    log.info("old version %s archived to %s", old, target)
    return target
