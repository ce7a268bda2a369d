"""Who may use the API: the daemon's key, as a Bearer token or X-API-Key (SPEC §7)."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key")


def key_matches(presented: str | None, expected: str | None) -> bool:
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


async def require_key(request: Request) -> None:
    """Dependency for every /api/* route but /api/health."""
    settings = request.app.state.settings
    expected = settings.api_token.get_secret_value() if settings.api_token else None
    if not key_matches(presented_key(request), expected):
        raise HTTPException(
            status_code=401,
            detail="A valid API key is needed: send 'Authorization: Bearer <api_token>' or "
            "'X-API-Key: <api_token>' (api_token is in the daemon's config.json).",
            headers={"WWW-Authenticate": "Bearer"},
        )
