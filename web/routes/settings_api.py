"""GET/PATCH /api/settings: every config.json key, changed live where it can be (SPEC §3, §14).

Admin only: the viewer key gets 403. Secrets are never shown, only whether they are set.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

import json_body
from config import store as store_config
from config import url_secrets
from config.live import Applied, LiveSettings, applies, is_secret, why_at_next_start
from config.settings import CONFIG_KEYS, HF_TOKEN_ENV, ConfigError, Settings
from web import auth
from web.auth import require_key

router = APIRouter(prefix="/api", tags=["settings"], dependencies=[Depends(require_key)])


class KeyInfo(BaseModel):
    applies: str  # "live" or "at next start"
    why: str | None = None  # why it waits for the next start
    source: str  # "config", or "environment" when an environment variable overrides it
    secret: bool
    description: str | None = None
    next_start: Any = None  # config.json's value, when it differs from the running one


class SettingsView(BaseModel):
    config_path: str
    settings: dict[str, Any]
    keys: dict[str, KeyInfo]
    restart_needed: list[str]
    problem: str | None = None  # config.json cannot be used as it is on disk
    changed: list[str] | None = None  # PATCH: the keys applied now


require_admin = auth.require_admin("The settings are", "them")


def live_of(request: Request) -> LiveSettings:
    return request.app.state.live


def public(settings: Settings) -> dict[str, Any]:
    """Every key's value as JSON; a secret, and a URL holding one, as {"set": true/false, …},
    never its value."""
    out = settings.model_dump(mode="json", exclude={"home"})
    for key in CONFIG_KEYS:
        if is_secret(key):
            value = getattr(settings, key)
            out[key] = {"set": bool(value and value.get_secret_value())}
    for key in url_secrets.ALWAYS_MASKED:
        out[key] = url_secrets.shown(getattr(settings, key))
    for key in url_secrets.MASKED_WITH_CREDENTIALS:
        out[key] = url_secrets.shown(getattr(settings, key), always=False)
    out["notify"] = [
        {
            **t.model_dump(mode="json"),
            "bot_token": {"set": bool(t.bot_token)},
            "url": url_secrets.shown(t.url, always=t.type == "discord"),
            "api_base": url_secrets.shown(t.api_base, always=False),
        }
        for t in settings.notify
    ]
    out["store"] = store_config.shown(settings.store)
    return out


async def view(live: LiveSettings, applied: Applied | None = None) -> dict[str, Any]:
    running = live.current
    problem = None
    try:
        configured = await live.configured()
    except ConfigError as exc:
        configured, problem = running, str(exc)
    now, later = public(running), public(configured)
    pending = [k for k in CONFIG_KEYS if applies(k) != "live" and now[k] != later[k]]
    keys = {
        key: KeyInfo(
            applies=applies(key),
            why=why_at_next_start(key),
            source="environment"
            if (key == "civitai_token" and live.token_from_environment)
            or (key == "hf_token" and live.environ.get(HF_TOKEN_ENV))
            else "config",
            secret=is_secret(key) or key in url_secrets.ALWAYS_MASKED,
            description=Settings.model_fields[key].description,
            next_start=later[key] if key in pending else None,
        )
        for key in CONFIG_KEYS
    }
    return {
        "config_path": str(running.config_path),
        "settings": now,
        "keys": keys,
        "restart_needed": pending,
        "problem": problem,
        "changed": applied.changed if applied is not None else None,
    }


@router.get("/settings", response_model=SettingsView, dependencies=[Depends(require_admin)])
async def get_settings(request: Request) -> dict[str, Any]:
    """Every config.json key with its value in force (secrets only as set or not), whether it
    applies live or at the next start, and what waits for a restart."""
    return await view(live_of(request))


@router.patch(
    "/settings",
    response_model=SettingsView,
    dependencies=[Depends(require_admin)],
    responses={
        409: {"description": "The environment overrides this key (CIVITAI_TOKEN)"},
        422: {"description": "A value config.json would refuse; nothing was written"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def patch_settings(request: Request) -> dict[str, Any]:
    """Change settings: a JSON object of config.json keys. Checked with config.json's rules
    (nothing is written on an error), written into config.json keeping every other key, and
    applied at once where they can be. A secret is set with a string and cleared with null."""
    body = json_body.loads(await request.body(), "The request body")
    live = live_of(request)
    applied = await live.patch(body)
    return await view(live, applied)
