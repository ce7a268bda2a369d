"""Rules config.json keeps beyond its types (SPEC §15): keys that resist guessing, and a
download_dir clear of the code Python runs and of the daemon's own state.

Both hold at start, on SIGHUP and for PATCH /api/settings (settings.validate_config and
live.prepare_patch call them); neither knows HTTP.
"""

from __future__ import annotations

import math
import os
import site
import string
import sys
import sysconfig
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent

# Keys this daemon itself checks when a client presents them: guessing one is getting in.
CHECKED_KEYS = ("api_token", "viewer_token", "webhook_secret", "metrics_token")
MIN_KEY_BITS = 128
MAKE_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
_CLASSES = (
    string.ascii_lowercase,
    string.ascii_uppercase,
    string.digits,
    string.punctuation + " ",
)


def key_bits(key: str) -> float:
    """At most how many bits of entropy `key` holds: its length × log2 of the alphabet of the
    character classes it uses (lower case, upper case, digits, punctuation; anything else
    counts as a class of 100 more). An upper bound: a key under it is surely too weak."""
    alphabet = sum(len(c) for c in _CLASSES if any(ch in c for ch in key))
    if any(not any(ch in c for c in _CLASSES) for ch in key):
        alphabet += 100
    return len(key) * math.log2(alphabet) if alphabet > 1 else 0.0


def weak_key(name: str, key: str) -> str | None:
    """Why `key` is too easy to guess for config key `name`, or None."""
    bits = key_bits(key)
    if bits >= MIN_KEY_BITS:
        return None
    return (
        f"{name} must hold at least {MIN_KEY_BITS} bits of entropy (this one holds at most "
        f"{bits:.0f}): at least 22 random characters of letters and digits; `{MAKE_KEY}` makes one"
    )


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, root: Path) -> bool:
    """`path` is `root` or lies below it."""
    return path == root or root in path.parents


def code_roots() -> list[tuple[Path, str]]:
    """Where Python finds the code this daemon runs, each with a name for the message."""
    roots = [(REPO_DIR, "the checkout (the daemon's code)"), (Path(sys.prefix), "the venv")]
    roots.append((REPO_DIR / ".venv", "the venv"))
    for entry in sys.path:
        roots.append((Path(entry or os.getcwd()), "an entry of the daemon's sys.path"))
    paths = sysconfig.get_paths()
    for name in ("stdlib", "platstdlib", "purelib", "platlib", "scripts"):
        roots.append((Path(paths[name]), f"Python's {name} folder"))
    # Python reads .pth files there at start once it exists, even if it does not yet.
    roots.append((Path(site.getusersitepackages()), "Python's user site-packages"))
    return [(_real(p.absolute()), why) for p, why in roots]


def download_dir_problem(download_dir: Path, home: Path) -> str | None:
    """Why `download_dir` (absolute) may not hold downloads, or None.

    Refused: a download_dir that is or contains the code (the checkout, the venv, any folder
    Python imports from) or the home, its data/ or logs/ (a download could overwrite them); one
    inside the code or logs/ (a download would be imported, or mixed into the logs). Inside the
    home's data/ is allowed: the default data/models lies there, even when the home is the
    checkout, and Python imports nothing from data/.
    """
    home = _real(home)
    data = home / "data"
    seen = {_real(download_dir), Path(os.path.abspath(download_dir))}
    state = [(home, "the home"), (data, "the home's data/"), (home / "logs", "the home's logs/")]
    for path in seen:
        for root, why in [*code_roots(), *state]:
            if _inside(root, path):
                verb = "is" if root == path else "contains"
                return f"{verb} {why} {root}: a download could overwrite it"
        for root, why in code_roots():
            if _inside(path, root) and not (
                root == REPO_DIR and home == root and data in path.parents
            ):
                return f"lies inside {why} {root}: Python could import a downloaded file"
        if _inside(path, home / "logs"):
            return f"lies inside the home's logs/ {home / 'logs'}: keep downloads apart from logs"
    return None
