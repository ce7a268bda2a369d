"""Who else on the machine may read the home's files (issue 23).

The database holds the jobs' URLs and the webhook deliveries, the logs say what was fetched
from where, config.json and data/session.key hold the keys: each is 0600 (owner only), and
data/ and logs/ are 0700. A home made by an older daemon (0755 folders, 0644 files) is mended
at every start. Where download_dir lies inside data/ (the default, data/models), data/ is 0711
instead: other users (ComfyUI run as another account) may still pass through it to the models,
but not list it, and every private file in it is 0600 anyway. Models, sidecars, manifest.json,
daemon.json and thumbnails stay readable (0644). Nothing is done on Windows, whose files follow
the folder's ACL.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import safefs

log = logging.getLogger("civitai.permissions")

PRIVATE_DIR = 0o700
PASSABLE_DIR = 0o711  # data/ when the models are inside it
PRIVATE_FILE = 0o600
DATABASE_SUFFIXES = ("", "-wal", "-shm", "-journal")
APPLIES = os.name != "nt"


def make_private(path: Path, mode: int = PRIVATE_FILE) -> None:
    """Set `path`'s mode when it is a regular file or a folder of ours (never through a link)."""
    if not APPLIES or path.is_symlink() or not path.exists():
        return
    try:
        if os.stat(path).st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except OSError as exc:
        log.warning("cannot make %s private: %s", path, exc)


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 if it is missing (SQLite then gives its -wal and -shm
    the same mode), else make it 0600."""
    if APPLIES and not path.exists() and not path.is_symlink():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    make_private(path)


def database_files(db: Path) -> list[Path]:
    return [db.with_name(db.name + s) for s in DATABASE_SUFFIXES]


def log_files(logs_dir: Path) -> list[Path]:
    """download.log, error.log and their rotated backups (download.log.1 …)."""
    if not logs_dir.is_dir():
        return []
    return [p for p in logs_dir.iterdir() if ".log" in p.name and safefs.is_file(p)]


def mend_home(home: Path, models_dir: Path) -> None:
    """Tighten the home's private folders and files to their modes (see the module's doc)."""
    if not APPLIES:
        return
    data = home / "data"
    inside = models_dir.resolve().is_relative_to(data.resolve())
    make_private(data, PASSABLE_DIR if inside else PRIVATE_DIR)
    make_private(home / "logs", PRIVATE_DIR)
    for path in (
        home / "config.json",
        data / "session.key",
        *database_files(data / "completed.db"),
        *log_files(home / "logs"),
    ):
        if safefs.is_file(path):
            make_private(path)
