"""The daemon's two keys and the roles they grant (SPEC §7), compared in constant time."""

from __future__ import annotations

import hmac
from enum import StrEnum

from pydantic import SecretStr

from config.settings import Settings


class Role(StrEnum):
    ADMIN = "admin"  # api_token: may change things
    VIEWER = "viewer"  # viewer_token: may look


def _secret(value: SecretStr | None) -> str | None:
    return (value.get_secret_value() or None) if value is not None else None


def _same(presented: str, expected: str | None) -> bool:
    """Constant-time comparison; never equal to a key that is not set."""
    if not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def key_for_role(settings: Settings, role: Role) -> str | None:
    """The key configured now for `role`; None when it is not set."""
    return _secret(settings.api_token if role is Role.ADMIN else settings.viewer_token)


def role_for_key(settings: Settings, key: str | None) -> Role | None:
    if not key:
        return None
    if _same(key, key_for_role(settings, Role.ADMIN)):
        return Role.ADMIN
    if _same(key, key_for_role(settings, Role.VIEWER)):
        return Role.VIEWER
    return None


def is_metrics_token(settings: Settings, key: str) -> bool:
    """`key` is the scraper's `metrics_token` (it opens GET /metrics only)."""
    return _same(key, _secret(settings.metrics_token))
