"""Writing files without ever following a symlink (SPEC §14).

- A file the daemon writes into is opened with O_NOFOLLOW: a link at its name is refused, never
  written through; a new file is created with O_EXCL, so nothing can be slipped in between.
- Small files (sidecars, previews, config) go to a `mkstemp` file in their folder (O_EXCL and
  O_NOFOLLOW) and are renamed over their name: a rename replaces a link, never writes through it.
- A folder is written into only when its real path lies inside the resolved download_dir
  (download_dir itself may be a link; a model_type folder may not lead out of it).

Windows has no O_NOFOLLOW: there the same rules hold by `lstat` and `os.path.realpath` checks.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import errors

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_BINARY = getattr(os, "O_BINARY", 0)  # on Windows a file opened without it translates newlines


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def refuse_link(path: Path) -> None:
    """Raise SymlinkRefused when `path` is a symbolic link (dangling or not)."""
    if os.path.islink(path):
        raise errors.SymlinkRefused(str(path), _link_target(path))


def is_file(path: Path) -> bool:
    """A regular file at `path` itself (a link to one does not count)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def open_rw(path: Path, *, new: bool) -> int:
    """A read-write descriptor for `path`, never through a link. `new`: remove a stale regular
    file first and create the file afresh with O_EXCL."""
    if new and is_file(path):
        os.unlink(path)
    if not O_NOFOLLOW:
        refuse_link(path)
    flags = os.O_RDWR | os.O_CREAT | O_BINARY | O_NOFOLLOW | (os.O_EXCL if new else 0)
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EEXIST) and os.path.islink(path):
            raise errors.SymlinkRefused(str(path), _link_target(path)) from None
        raise


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is None:
            mode = os.lstat(path).st_mode & 0o777 if is_file(path) else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _inside(real: str, root: str) -> bool:
    real, root = os.path.normcase(real), os.path.normcase(root)
    return real != root and os.path.commonpath([real, root]) == root


def real_folder(folder: Path, root: Path) -> Path:
    """The real path of `folder`, which must lie inside `root` (a resolved download_dir)."""
    real = os.path.realpath(folder)
    if not _inside(real, str(root)):
        raise errors.FolderOutside(str(folder), real, str(root))
    return Path(real)


def check_unmoved(folder: Path, root: Path) -> None:
    """A folder chosen earlier (as a real path) must not have become a link out of `root`."""
    if os.path.realpath(folder) != str(folder):
        real_folder(folder, root)


O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def first_link(path: Path, root: Path) -> Path | None:
    """The first symbolic link on `path` below `root` (`path` itself included); None if none."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if os.path.islink(current):
            return current
    return None


def _fd_path(fd: int) -> str | None:
    """Where an open descriptor is now, as the kernel sees it (Linux); None where unknown."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def open_folder_in(folder: Path, root: Path) -> int:
    """A descriptor of `folder` (an absolute path at or below the resolved `root`) with no link
    anywhere below `root`, checked before and once more after opening: a folder swapped for a
    link in between is refused, and every later step goes through the descriptor (dir_fd), so
    nothing outside `root` is reached. Raises DeleteRefused for a link, OutsideLibrary outside."""
    if folder != root and root not in folder.parents:
        raise errors.OutsideLibrary(str(folder), str(root))
    if (link := first_link(folder, root)) is not None:
        raise errors.DeleteRefused.through_link(str(folder), str(link), _link_target(link))
    fd = os.open(folder, os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
    now = _fd_path(fd) or os.path.realpath(folder)
    if os.path.normcase(now) != os.path.normcase(str(folder)):
        os.close(fd)
        raise errors.DeleteRefused.through_link(str(folder), str(folder), now)
    return fd
