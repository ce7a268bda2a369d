"""GUI sessions (SPEC §7, §14): HS256 JWTs that end on Log out and when their key changes.

A session is `{"sub": role, "iat", "exp", "jti": session id, "fp": key fingerprint}`, signed with
a secret generated into the home. `exp` is required. `fp` is an HMAC of the key the session was
issued for, under that secret (never the key itself): it is checked on every request against the
key configured now, so a changed or removed key ends its sessions. Log out records the `jti` in
SQLite until its `exp`, so a copy of the cookie stays dead, across restarts too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safefs
from web.roles import Role, key_for_role

if TYPE_CHECKING:
    from config.settings import Settings
    from database import Store

SESSION_SECONDS = 7 * 24 * 3600
LINK_SECONDS = 10 * 60  # a one-time login link (the first start prints one) is good this long
LINK = "login-link"  # its `use` claim: a link is never a session, nor a session a link
ALGORITHM = "HS256"
REQUIRED = {"require_exp": True, "require_sub": True, "require_jti": True}


def _jose() -> Any:
    """python-jose, imported at the first session: a daemon driven by its API alone (and each
    of the suite's daemon starts) does not pay its 0.1 s of imports."""
    import jose
    import jose.jwt

    return jose


def load_session_secret(home: Path) -> str:
    """The JWT signing secret: made once, kept in the home (mode 600), never sent anywhere."""
    path = home / "data" / "session.key"
    if safefs.is_file(path):  # a link at the name is not ours: it is replaced, never followed
        value = path.read_text().strip()
        if len(value) >= 32:
            return value
    value = secrets.token_urlsafe(48)
    safefs.write_atomic(path, value.encode(), mode=0o600)
    return value


def fingerprint(secret: str, key: str) -> str:
    """Names a key without revealing it: HMAC-SHA256 of the key under the session secret."""
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()[:32]


class Sessions:
    """Issues, checks and revokes sessions; the revoked ids are kept in memory and in SQLite."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._revoked: dict[str, int] = {}  # jti → exp
        self._store: Store | None = None

    async def open(self, store: Store) -> None:
        """Load the revocations that have not expired (and purge those that have)."""
        self._store = store
        self._revoked = await store.revoked_sessions.unexpired(int(time.time()))

    def issue(self, role: Role, key: str, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": role.value,
            "iat": issued,
            "exp": issued + SESSION_SECONDS,
            "jti": uuid.uuid4().hex,
            "fp": fingerprint(self.secret, key),
        }
        return _jose().jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def _claims(self, token: str | None) -> dict[str, Any] | None:
        """The claims of a well-signed, unexpired token with every required claim, or None."""
        if not token:
            return None
        jose = _jose()
        try:
            claims = jose.jwt.decode(token, self.secret, algorithms=[ALGORITHM], options=REQUIRED)
        except jose.JWTError:
            return None
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("fp"), str):
            return None
        return claims

    def _session(self, token: str | None) -> dict[str, Any] | None:
        claims = self._claims(token)
        return None if claims is None or "use" in claims else claims

    def role(self, settings: Settings, token: str | None) -> Role | None:
        """The role a session cookie grants now, or None: forged, expired, logged out, or issued
        for a key that has since changed or been removed."""
        claims = self._session(token)
        if claims is None or claims["jti"] in self._revoked:
            return None
        try:
            role = Role(claims["sub"])
        except ValueError:
            return None
        key = key_for_role(settings, role)
        if key is None or not hmac.compare_digest(claims["fp"], fingerprint(self.secret, key)):
            return None
        return role

    async def revoke(self, token: str | None) -> None:
        """Log out: the session's id is refused from now until it would have expired anyway."""
        claims = self._session(token)
        if claims is None or self._store is None:
            return
        exp = int(claims["exp"])
        self._revoked[claims["jti"]] = exp
        await self._store.revoked_sessions.add(claims["jti"], exp, int(time.time()))
        now = time.time()
        self._revoked = {j: e for j, e in self._revoked.items() if e > now}

    def issue_link(self, key: str, now: float | None = None) -> str:
        """A one-time login link's token for the API key: LINK_SECONDS, one use."""
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": Role.ADMIN.value,
            "use": LINK,
            "iat": issued,
            "exp": issued + LINK_SECONDS,
            "jti": uuid.uuid4().hex,
            "fp": fingerprint(self.secret, key),
        }
        return _jose().jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    async def redeem_link(self, settings: Settings, token: str) -> str | None:
        """The API key a link's token stands for, once: the token is spent (kept refused until
        it would expire, across restarts too); None for a spent, expired, forged one, or one
        issued for a key since changed."""
        claims = self._claims(token)
        if claims is None or claims.get("use") != LINK or claims["jti"] in self._revoked:
            return None
        key = key_for_role(settings, Role.ADMIN)
        if key is None or not hmac.compare_digest(claims["fp"], fingerprint(self.secret, key)):
            return None
        self._revoked[claims["jti"]] = int(claims["exp"])
        if self._store is not None:
            await self._store.revoked_sessions.add(
                claims["jti"], int(claims["exp"]), int(time.time())
            )
        return key


def first_start_link(home: Path, key: str, gui: str) -> str:
    """The line the first start prints beside the GUI address: a login link for a person who
    has no key yet, and how to get the key later."""
    token = Sessions(load_session_secret(home)).issue_link(key)
    return (
        f"Log in once without the key (valid 10 minutes, one use): {gui}/link/{token} "
        f"· the key later: ./civitai key (api_token in config.json)"
    )
