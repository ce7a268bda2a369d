"""The daemon proves it holds the key before the CLI sends it (SPEC §15, Auth).

The CLI sends a nonce of its own to `GET /api/challenge?nonce=…` (no key needed). The daemon
answers its salt, the port it listens on, and for each key it holds (api_token, viewer_token)
HMAC-SHA256 over the nonce and that port under scrypt(key, salt). The CLI computes the same with
its key, compares in constant time, and only then sends the key.

- The nonce is the CLI's, fresh for every request: a recorded answer proves nothing later.
- The port is the one the daemon is bound to: a program on another port (a stale `active_port`)
  that relays the challenge to the real daemon gets an answer for the daemon's port, not its own.
- scrypt (16 MiB, about 60 ms) under a salt drawn at each start: anyone may ask the route, and
  could then test guesses at the key offline, but each guess costs an scrypt, not one hash, and no
  table of guesses serves two daemons. A generated key (256 bits) is out of reach either way.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from typing import Any

NONCE = re.compile(r"[0-9a-f]{32,128}")
SALT = re.compile(r"[0-9a-f]{32}")
# One label per use, so a proof is never a valid HMAC of anything else made with these keys.
LABEL = "civitai-daemon-proof/1"
MAX_PROOFS = 4


def new_nonce() -> str:
    return secrets.token_hex(32)


def new_salt() -> str:
    return secrets.token_hex(16)


@functools.lru_cache(maxsize=4)  # the CLI proves the daemon before each request: one scrypt
def stretch(key: str, salt: str) -> bytes:
    """scrypt(key, salt): what one guess at the key costs someone who asked the route."""
    return hashlib.scrypt(
        key.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1, maxmem=64 << 20, dklen=32
    )


def proof(stretched: bytes, nonce: str, port: int) -> str:
    message = f"{LABEL}\n{nonce}\n{port}".encode()
    return hmac.new(stretched, message, hashlib.sha256).hexdigest()


class Prover:
    """The daemon's side: one salt per process, each key stretched once."""

    def __init__(self) -> None:
        self.salt = new_salt()
        self._stretched: dict[str, bytes] = {}

    def knows(self, key: str) -> bool:
        """Whether `key` is stretched already (answer() is then quick)."""
        return key in self._stretched

    def stretched(self, key: str) -> bytes:
        """Slow (scrypt) the first time for a key: call it off the event loop."""
        found = self._stretched.get(key)
        if found is None:
            if len(self._stretched) >= 8:  # keys changed many times (SIGHUP): forget the old
                self._stretched.clear()
            found = self._stretched[key] = stretch(key, self.salt)
        return found

    def answer(self, keys: list[str], nonce: str, port: int) -> dict[str, Any]:
        return {
            "salt": self.salt,
            "port": port,
            "proofs": [proof(self.stretched(k), nonce, port) for k in keys],
        }


def holds_key(answer: Any, key: str, nonce: str, port: int | None) -> bool:
    """Whether `answer` (parsed JSON) proves its sender holds `key` for our `nonce`, bound to
    `port` (None: whichever port it names, for an address the user gave, e.g. a proxy's)."""
    if not isinstance(answer, dict):
        return False
    salt, bound, proofs = answer.get("salt"), answer.get("port"), answer.get("proofs")
    if not (isinstance(salt, str) and SALT.fullmatch(salt)):
        return False
    if not isinstance(bound, int) or isinstance(bound, bool) or not 0 < bound < 65536:
        return False
    if port is not None and bound != port:
        return False
    if not isinstance(proofs, list) or not 0 < len(proofs) <= MAX_PROOFS:
        return False
    expected = proof(stretch(key, salt), nonce, bound).encode()
    # Every proof is compared (no early exit): the time taken says nothing of which matched.
    matches = [isinstance(p, str) and hmac.compare_digest(p.encode(), expected) for p in proofs]
    return any(matches)
