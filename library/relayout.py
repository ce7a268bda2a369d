"""Moving the library into a layout's folders (`POST /api/library/relayout`, issue 16).

A change of `layout` or `folders` places new jobs only; the files already completed move when a
person asks, after seeing the plan. Each completed file not in its type's folder moves there
with its sidecars (`<stem>.civitai.info`, `<stem>.preview.<ext>`, A1111's `<stem>.json`), and
every record of its path follows it: its completed rows, the completed jobs' paths (what a
repeated request is matched against), the scanner's hash cache. manifest.json names a file by
its filename, which does not change, so it needs nothing.

The rules of removal.py hold: nothing is reached through a link (each folder is opened once
through safefs.open_folder_in and every name is handled through that descriptor), nothing
outside download_dir is touched, and nothing is ever overwritten (a hard link fails when its
name is taken; where hard links do not work, the name is checked just before the rename).

Crash safety: each file moves in steps after which it is always found.
1. Move each sidecar (link it at the target, then unlink the source).
2. Link the model at its target too (the row still names the source, which is unchanged).
3. Unlink the source: the file is now only at the target.
4. Point the rows at the target, in one transaction.
Killed after 1 or 2, the next plan finds the model at its source (and the target, if there, to
be the source's own inode): it moves it again, the sidecars already moved staying at the target.
Killed after 3, it finds the source gone and the target to be the row's file (same size and
mtime): only the rows are left to update. Where hard links do not work, step 2 renames the model
(after the sidecars, so none is left behind) and step 3 has nothing to do. Either way a file is
always at the path its row names, or at its target with the row updated on the next try.
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
from engine.jobs import ACTIVE_SQL
from library.files import sidecar_names
from library.layout import LAYOUTS, Layout
from library.removal import library_path

log = logging.getLogger("civitai.library")


@dataclass
class Move:
    id: int  # the newest completed row of the file
    model_type: str
    source: str
    target: str
    sidecars: list[str] = field(default_factory=list)  # names moving with it
    reason: str | None = None  # why it stays where it is; None: it moves
    rows: list[str] = field(default_factory=list)  # the paths its rows name (one file)
    size: int | None = None
    mtime_ns: int | None = None

    def public(self) -> dict[str, Any]:
        out = {"id": self.id, "model_type": self.model_type, "from": self.source}
        out |= {"to": self.target, "sidecars": self.sidecars}
        return out | ({"reason": self.reason} if self.reason else {})


def _files(db: Database) -> tuple[list[dict[str, Any]], list[str]]:
    """(each path of the library once, at its newest completed row; every path a row names)."""
    newest = db.execute_returning_dicts(
        "select * from completed where id in (select max(id) from completed group by path)"
    )
    return newest, [p for (p,) in db.execute("select distinct path from completed").fetchall()]


def _active(db: Database) -> list[dict[str, Any]]:
    return db.execute_returning_dicts(
        f"select id, status, modelId, path from jobs where {ACTIVE_SQL}"
    )


def read_library(db: Database) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """What a plan is made from: the library's files, every row path, the active jobs."""
    return (*_files(db), _active(db))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _same_file(a: os.stat_result, b: os.stat_result | None) -> bool:
    return b is not None and stat.S_ISREG(b.st_mode) and os.path.samestat(a, b)


def _why_not(
    move: Move, active: list[dict[str, Any]], model_id: int | None, root: Path
) -> str | None:
    """Why this file cannot move now (None: it can); fills in the sidecars that move."""
    src, dst = Path(move.source), Path(move.target)
    for job in active:
        if (model_id and job["modelId"] == model_id) or job["path"] in (*move.rows, move.target):
            return (
                f"job {job['id']} for this model is {job['status']}: move the files once it "
                "has finished"
            )
    for folder in (src.parent, dst.parent):
        if (link := safefs.first_link(folder, root)) is not None:
            return f"a symbolic link on the way ({link}): the daemon never moves through a link"
    here, there = _lstat(src), _lstat(dst)
    if here is None:
        moved = there is not None and stat.S_ISREG(there.st_mode) and there.st_size == move.size
        if moved and move.mtime_ns in (None, there.st_mtime_ns):
            return None  # moved before a crash: only its rows are left to update
        return f"the file is missing: {src} is not on disk"
    if stat.S_ISLNK(here.st_mode):
        return f"{src} is a symbolic link: left alone"
    if not stat.S_ISREG(here.st_mode):
        return f"{src} is not a regular file"
    if there is not None and not _same_file(here, there):
        return f"{dst} already exists (a different file): nothing is overwritten"
    for name in sidecar_names(src.name, src.parent):
        side = _lstat(src.parent / name)
        if side is None:
            continue
        if not stat.S_ISREG(side.st_mode):
            return f"its sidecar {src.parent / name} is not a regular file: move it by hand"
        taken = _lstat(dst.parent / name)
        if taken is not None and not _same_file(side, taken):
            return f"{dst.parent / name} already exists: nothing is overwritten"
        move.sidecars.append(name)
    return None


def plan(
    files: list[dict[str, Any]],
    row_paths: list[str],
    active: list[dict[str, Any]],
    layout: Layout,
    models_dir: Path,
    root: Path,
) -> list[Move]:
    """Each completed file not in its type's folder under `layout`: where it goes with its
    sidecars, or why it stays. Looks only; runs in a thread."""
    rows_of: dict[Path, list[str]] = {}  # one file may be named by rows in two spellings
    for raw in row_paths:
        try:
            rows_of.setdefault(library_path(Path(raw), models_dir, root), []).append(raw)
        except errors.OutsideLibrary:
            continue  # not the daemon's to move (a row from before download_dir changed)
    newest: dict[Path, dict[str, Any]] = {}
    for row in files:
        if (src := _inside(row["path"], models_dir, root)) is not None:
            if src not in newest or newest[src]["id"] < row["id"]:
                newest[src] = row
    stems: dict[tuple[Path, str], int] = {}
    for src in newest:
        stems[(src.parent, src.stem)] = stems.get((src.parent, src.stem), 0) + 1
    moves: list[Move] = []
    targets: set[str] = set()
    for src, row in sorted(newest.items(), key=lambda item: item[1]["id"]):
        folder = root.joinpath(*layout.folder(row["model_type"]).split("/"))
        folder = folder / _subfolder(src, row["model_type"], layout, root)
        if src.parent == folder:
            continue
        move = Move(row["id"], row["model_type"], str(src), str(folder / src.name))
        move.rows, move.size, move.mtime_ns = rows_of[src], row["size"], row.get("mtime_ns")
        if stems[(src.parent, src.stem)] > 1:
            move.reason = (
                f"another file in {src.parent} is named {src.stem} too and shares its sidecars: "
                "move these files by hand"
            )
        elif move.target in targets:
            move.reason = f"another file of the library moves to {move.target}"
        else:
            move.reason = _why_not(move, active, row.get("modelId"), root)
        if move.reason is None:
            targets.add(move.target)
        moves.append(move)
    return moves


def _subfolder(src: Path, model_type: str, layout: Layout, root: Path) -> Path:
    """The folders between a file and its type's folder under the target or any stock layout
    (a ComfyUI workflow's `loras/SD1.5/x.safetensors`): they move with it, as every app reads
    its model folders' subfolders too. Empty for a file right in a type's folder, or elsewhere."""
    best: Path | None = None
    for known in (layout, *(Layout(name) for name in LAYOUTS)):
        base = root.joinpath(*known.folder(model_type).split("/"))
        if base in src.parents and base != src.parent and (best is None or best in base.parents):
            best = base
    return src.parent.relative_to(best) if best is not None else Path()


def _inside(raw: str, models_dir: Path, root: Path) -> Path | None:
    try:
        return library_path(Path(raw), models_dir, root)
    except errors.OutsideLibrary:
        return None


def _link(name: str, src_fd: int, dst_fd: int) -> bool:
    """`name` in the target folder too, never over anything (a name of the same inode, left by
    an interrupted move, counts as done); False where hard links do not work, having renamed
    it there instead (checked free just before: the best a rename can do)."""
    here = os.lstat(name, dir_fd=src_fd)
    if not stat.S_ISREG(here.st_mode):
        raise errors.DeleteRefused.not_a_file(name)
    try:
        os.link(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        return True
    except FileExistsError:
        if _same_file(here, os.lstat(name, dir_fd=dst_fd)):
            return True
        raise
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EACCES, errno.EROFS, errno.ENOSPC):
            raise
    try:
        os.lstat(name, dir_fd=dst_fd)
    except FileNotFoundError:
        os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return False
    raise FileExistsError(errno.EEXIST, f"{name} already exists in the target folder")


def open_or_make_folder(folder: Path, root: Path) -> int:
    """A descriptor of `folder` under `root`, made where missing one name at a time through
    its parent's descriptor: no link is followed and nothing is made outside `root`."""
    fd = os.open(root, os.O_RDONLY | safefs.O_DIRECTORY)
    try:
        for part in folder.relative_to(root).parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            child = os.open(part, os.O_RDONLY | safefs.O_DIRECTORY | safefs.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def move_files(move: Move, root: Path) -> None:
    """Steps 1–3 of the module's docstring for one file (step 4 is the caller's)."""
    src, dst = Path(move.source), Path(move.target)
    src_fd = safefs.open_folder_in(src.parent, root)
    try:
        dst_fd = open_or_make_folder(dst.parent, root)
        try:
            if _lstat(src) is None:
                return  # moved before a crash; its rows are left to update
            for name in move.sidecars:  # 1
                if _link(name, src_fd, dst_fd):
                    os.unlink(name, dir_fd=src_fd)
            if _link(src.name, src_fd, dst_fd):  # 2
                os.unlink(src.name, dir_fd=src_fd)  # 3
            os.fsync(dst_fd)
            os.fsync(src_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def update_rows(db: Database, move: Move) -> None:
    """Step 4: every record of the file's path names the target, in one transaction."""
    marks = ", ".join("?" for _ in move.rows)
    with db.atomic():
        db.execute(
            f"update completed set path = ? where path in ({marks})", [move.target, *move.rows]
        )
        db.execute(
            f"update jobs set path = ? where path in ({marks}) and not ({ACTIVE_SQL})",
            [move.target, *move.rows],
        )
        db.execute(  # the scanner's cache: (size, mtime) of the same inode stay true
            f"update or replace file_hashes set path = ? where path in ({marks})",
            [move.target, *move.rows],
        )


@dataclass
class Outcome:
    moved: list[Move] = field(default_factory=list)
    skipped: list[Move] = field(default_factory=list)


async def make_plan(store: Store, layout: Layout, models_dir: Path, root: Path) -> list[Move]:
    files, row_paths, active = await store.read(read_library)
    return await asyncio.to_thread(plan, files, row_paths, active, layout, models_dir, root)


async def apply(store: Store, layout: Layout, models_dir: Path, root: Path) -> Outcome:
    """Plan again (the disk may have changed since it was shown) and move what can move, one
    file at a time; a file that fails stays with the reason."""
    outcome = Outcome()
    for move in await make_plan(store, layout, models_dir, root):
        if move.reason is not None:
            outcome.skipped.append(move)
            continue
        try:
            await asyncio.to_thread(move_files, move, root)
        except (OSError, errors.DaemonError) as exc:
            move.reason = f"not moved: {exc.strerror if isinstance(exc, OSError) else exc}"
            if isinstance(exc, OSError) and exc.errno == errno.EXDEV:
                move.reason = "its target folder is on another file system: move it by hand"
            log.warning("relayout: %s stays: %s", move.source, move.reason)
            outcome.skipped.append(move)
            continue
        await store.run(update_rows, move)
        log.info(
            "relayout: moved %s to %s with %d sidecar(s)",
            move.source,
            move.target,
            len(move.sidecars),
        )
        outcome.moved.append(move)
    folders = {Path(m.source).parent for m in outcome.moved}
    await asyncio.to_thread(remove_empty, folders, models_dir)
    return outcome


def remove_empty(folders: set[Path], models_dir: Path) -> None:
    """The old layout's folders the moves emptied go, and their parents up to (not including)
    the models folder (both as resolved: nothing outside it): rmdir only removes an empty one."""
    models = Path(os.path.realpath(models_dir))
    real = {Path(os.path.realpath(f)) for f in folders}
    for folder in sorted(real, key=lambda p: len(p.parts), reverse=True):
        current = folder
        while current != models and models in current.parents:
            try:
                os.rmdir(current)
            except OSError:  # not empty (a person's file, another model), or gone already
                break
            log.info("relayout: removed the empty folder %s", current)
            current = current.parent
