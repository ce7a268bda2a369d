"""Settings that change while the daemon runs: PATCH /api/settings and SIGHUP (SPEC §3, §14).

One holder per app, no global. `current` is the Settings in force. A change (a PATCH, or
config.json read again on SIGHUP) is validated with the rules of config.json as a whole, then
`apply` takes from it the keys that can change live (LIVE_KEYS), keeps the running value of the
others (they apply at the next start), and tells each subscriber in the order they subscribed.
Subscribers are plain functions run on the event loop one after the other, with no await between
them: no request sees half the components on the old settings and half on the new.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import errors
from config import rules, url_secrets
from config.settings import (
    CONFIG_KEYS,
    HF_TOKEN_ENV,
    TOKEN_ENV,
    ConfigError,
    NotifyTarget,
    Settings,
    load_settings,
    read_config,
    validate_config,
    write_json_atomic,
)

log = logging.getLogger("civitai.settings")

# Each of these is read where it is used, or its component is told (main.py wires them).
LIVE_KEYS = frozenset(
    {
        "workers",
        "retries",
        "timeout",
        "throttle",
        "webhook_url",
        "webhook_secret",
        "log_level",
        "manifest_mode",
        "civitai_base_url",
        "civitai_token",
        "hf_base_url",
        "hf_token",
        "api_token",
        "viewer_token",
        "metrics_token",  # read at each scrape (web/routes/metrics.py)
        "trusted_hosts",
        "allowed_origins",  # read at each request (web/auth.py)
        "update_check",
        "old_versions",
        "connections",
        "save_metadata",
        "show_nsfw",  # read at each search (browse.py)
        "auto_scan",  # read at each daily check (main.py)
        "link_duplicates",  # read at each download (engine/runner.py)
        "allowed_hosts",
        "notify",
        "layout",  # new jobs; files already placed move only by POST /api/library/relayout
        "folders",
        "store",  # machine only (MACHINE_ONLY): from config.json on SIGHUP, never over HTTP
    }
)
# Why the others wait for the next start.
AT_NEXT_START = {
    "host": "the daemon's listening socket is bound once, at start",
    "active_port": "the daemon's listening socket is bound once, at start",
    "download_dir": "queued jobs hold paths under it and the folder checks are rooted at it",
    "root_path": "the web server's URL prefix is fixed when it starts",
}
NOT_WIRED = "this key is not applied live"
# Filesystem paths the daemon writes to: set on the machine only. With the API key alone,
# download_dir could point downloads at the venv's site-packages (a .pth file runs at start).
# `folders` stays: its values are relative folders under download_dir that cannot leave it.
# `store` too: with the API key alone, a store endpoint of one's own would receive every file
# downloaded (and the store's credentials would sign for it).
MACHINE_ONLY = ("download_dir", "store")
MACHINE_ONLY_WHY = {
    "download_dir": "is a filesystem path",
    "store": "says where every downloaded file is copied to",
}

Subscriber = Callable[[Settings], None]
# What `Authorization: Bearer <key>` carries as is: printable ASCII, no space at either end.
HEADER_KEYS = ("api_token", "viewer_token", "metrics_token")  # keys a client sends in a header
HEADER_SAFE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def applies(key: str) -> str:
    return "live" if key in LIVE_KEYS else "at next start"


def why_at_next_start(key: str) -> str | None:
    return None if key in LIVE_KEYS else AT_NEXT_START.get(key, NOT_WIRED)


def is_secret(key: str) -> bool:
    """A key whose value is never shown: set with a string, cleared with null."""
    return "SecretStr" in str(Settings.model_fields[key].annotation)


@dataclass(frozen=True)
class Applied:
    """What a change did: the live keys now in force, and those waiting for a restart."""

    changed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)


def restart_needed(running: Settings, configured: Settings) -> list[str]:
    """Keys whose configured value differs from the one the daemon runs with."""
    return [
        k
        for k in CONFIG_KEYS
        if k not in LIVE_KEYS and getattr(running, k) != getattr(configured, k)
    ]


class LiveSettings:
    """The settings in force now, and who to tell when they change."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.current = settings
        self.environ = os.environ if environ is None else environ
        self._subscribers: list[Subscriber] = []
        self._lock = asyncio.Lock()  # one change at a time: read, validate, write, apply
        self._tasks: set[asyncio.Task] = set()

    @property
    def token_from_environment(self) -> bool:
        return bool(self.environ.get(TOKEN_ENV))

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber(settings)` after each change; returns how to unsubscribe."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def apply(self, new: Settings) -> Applied:
        """Take the live keys of `new`; keep the running value of the others."""
        old = self.current
        update = {k: getattr(new, k) for k in LIVE_KEYS if getattr(new, k) != getattr(old, k)}
        if update:
            self.current = old.model_copy(update=update)
            for subscriber in self._subscribers:
                try:
                    subscriber(self.current)
                except Exception:  # one component's trouble must not stop the others hearing
                    log.exception("applying settings %s failed in %r", sorted(update), subscriber)
        return Applied(sorted(update), restart_needed(self.current, new))

    async def configured(self) -> Settings:
        """config.json as it is now (raises ConfigError when it cannot be used)."""
        home = self.current.home
        return await asyncio.to_thread(
            lambda: validate_config(home, read_config(home), self.environ)
        )

    async def patch(self, changes: dict[str, Any]) -> Applied:
        """Validate `changes` with config.json's rules, write them into config.json keeping
        every other key, and apply config.json. Nothing is written when a value is refused."""
        changes = prepare_patch(changes, self.current, self.environ)
        async with self._lock:
            new = await asyncio.to_thread(self._write, changes)
            applied = self.apply(new)
        log.info("settings changed (%s): %s", ", ".join(sorted(changes)), _said(applied))
        return applied

    def _write(self, changes: dict[str, Any]) -> Settings:
        home = self.current.home
        try:
            data = {**read_config(home), **changes}
            new = validate_config(home, data, self.environ, where="")
        except ConfigError as exc:
            raise errors.InvalidSetting(str(exc)) from None
        write_json_atomic(home / "config.json", data, mode=0o600)
        return new

    async def reload(self) -> Applied:
        """Read config.json again and apply it (raises ConfigError when it cannot be used)."""
        async with self._lock:  # load_settings: unknown keys are warned about, as at start
            home = self.current.home
            return self.apply(await asyncio.to_thread(load_settings, home, self.environ))

    async def reload_logged(self, why: str = "SIGHUP") -> None:
        try:
            applied = await self.reload()
        except ConfigError as exc:
            log.error(
                "%s: config.json not applied; still running on the settings before. %s", why, exc
            )
            return
        log.info("%s: config.json read again; %s", why, _said(applied))
        for weak in self.current.weak_keys():
            log.warning("%s: %s (config.json keeps it; change it there)", why, weak)

    def listen_for_sighup(self) -> Callable[[], None]:
        """Read config.json again on SIGHUP (`systemctl reload`); returns how to stop."""
        loop = asyncio.get_running_loop()

        def hup() -> None:
            task = loop.create_task(self.reload_logged())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            before = signal.getsignal(signal.SIGHUP)
            loop.add_signal_handler(signal.SIGHUP, hup)
        except (ValueError, RuntimeError, NotImplementedError, AttributeError):  # not main thread
            return lambda: None

        def stop() -> None:
            loop.remove_signal_handler(signal.SIGHUP)  # which sets the default: ending the process
            if before is not None:
                signal.signal(signal.SIGHUP, before)  # launch.py's: ignored while stopping

        return stop


def _said(applied: Applied) -> str:
    return (
        f"applied: {', '.join(applied.changed) or 'nothing changed'}; "
        f"applies at next start: {', '.join(applied.restart_needed) or 'nothing'}"
    )


def prepare_patch(body: Any, current: Settings, environ: Mapping[str, str]) -> dict[str, Any]:
    """A PATCH body as config.json values: known keys only; secrets a string or null;
    a Telegram target's token kept when the body leaves it out."""
    if not isinstance(body, dict) or not body:
        raise errors.InvalidSetting(
            'Send a JSON object of the settings to change, e.g. {"throttle": 5000000}'
        )
    unknown = sorted(set(body) - set(CONFIG_KEYS))
    if unknown:
        raise errors.InvalidSetting(
            f"Unknown setting {', '.join(repr(k) for k in unknown)}; the settings are "
            + ", ".join(CONFIG_KEYS)
        )
    machine_only = sorted(set(body) & set(MACHINE_ONLY))
    if machine_only:
        raise errors.InvalidSetting(
            f"key '{machine_only[0]}' {MACHINE_ONLY_WHY[machine_only[0]]}, set on the machine "
            f"only: edit it in {current.config_path}, then "
            + (
                "reload the daemon (systemctl reload civitai-daemon, or SIGHUP). "
                if machine_only[0] in LIVE_KEYS
                else "restart the daemon (systemctl restart civitai-daemon). "
            )
            + "Nothing was changed."
        )
    changes = copy.deepcopy(body)
    _unmask_urls(changes, current)
    for key in [k for k in changes if is_secret(k)]:
        value = changes[key]
        if value is not None and not isinstance(value, str):
            raise errors.InvalidSetting(
                f"key '{key}' is a secret: send a string to set it or null to clear it"
            )
        changes[key] = value or None
        if key == "civitai_token" and environ.get(TOKEN_ENV):
            raise errors.SettingOverridden(key, TOKEN_ENV)
        if key == "hf_token" and environ.get(HF_TOKEN_ENV):
            raise errors.SettingOverridden(key, HF_TOKEN_ENV)
        if key == "api_token" and not value:
            raise errors.InvalidSetting(
                "key 'api_token' cannot be cleared: the API would have no key. "
                "Send a new key to replace it."
            )
        if key in HEADER_KEYS and value and not HEADER_SAFE.fullmatch(value):
            raise errors.InvalidSetting(
                f"key '{key}' must be printable ASCII with no space or line break at either "
                "end: a client sends it in an HTTP header, where other characters are changed "
                "or cut, and the key would no longer match. Nothing was changed."
            )
        weak = key in rules.CHECKED_KEYS and value and rules.weak_key(key, value)
        if weak:
            raise errors.InvalidSetting(f"key '{key}': {weak}. Nothing was changed.")
    _check_token_destination(changes, current, environ)
    _check_token_destination(
        changes, current, environ, "hf_base_url", "hf_token", HF_TOKEN_ENV, "Hugging Face"
    )
    if isinstance(changes.get("notify"), list):
        changes["notify"] = [_keep_bot_token(t, current) for t in changes["notify"]]
    return changes


def _unmask_urls(changes: dict[str, Any], current: Settings) -> None:
    """A URL sent back as it was shown ({"set": true, "hint": …}) is the configured one."""

    def restore(label: str, value: Any, candidates: list[str | None], always: bool) -> Any:
        if not url_secrets.is_masked(value):
            return value
        try:
            return url_secrets.unmask(value, candidates, always)
        except KeyError:
            raise errors.InvalidSetting(
                f"key '{label}': {json.dumps(value)} is how a URL holding a credential is "
                "shown, and no configured URL shows so; send the whole URL to change it"
            ) from None

    for key in url_secrets.ALWAYS_MASKED:
        if key in changes:
            changes[key] = restore(key, changes[key], [getattr(current, key)], True)
    for key in url_secrets.MASKED_WITH_CREDENTIALS:
        if key in changes:
            changes[key] = restore(key, changes[key], [getattr(current, key)], False)
    targets = changes.get("notify")
    for i, target in enumerate(targets if isinstance(targets, list) else []):
        if isinstance(target, dict):
            urls = [t.url for t in current.notify if t.type == target.get("type")]
            bases = [t.api_base for t in current.notify if t.type == target.get("type")]
            is_discord = target.get("type") == "discord"
            if "url" in target:
                target["url"] = restore(f"notify.{i}.url", target["url"], urls, is_discord)
            if "api_base" in target:
                target["api_base"] = restore(
                    f"notify.{i}.api_base", target["api_base"], bases, False
                )


def _check_token_destination(
    changes: dict[str, Any],
    current: Settings,
    environ: Mapping[str, str],
    base_key: str = "civitai_base_url",
    token_key: str = "civitai_token",
    env_name: str = TOKEN_ENV,
    who: str = "Civitai",
) -> None:
    """A token goes to its base URL (civitai_token to civitai_base_url, hf_token to
    hf_base_url): a new address must come with the token (or null), so that nobody who holds
    the API key can read the write-only token by pointing the daemon at a server of their own."""
    base = changes.get(base_key)
    if not isinstance(base, str) or base.rstrip("/") == getattr(current, base_key):
        return
    if token_key in changes or not getattr(current, token_key):
        return
    if environ.get(env_name):
        raise errors.InvalidSetting(
            f"key '{base_key}': the daemon sends the {who} token ({env_name}, set in its "
            f"environment) to this address, so it cannot be changed here. Change {base_key} in "
            "config.json, then reload or restart the daemon."
        )
    raise errors.InvalidSetting(
        f"key '{base_key}': the daemon sends {token_key} to this address, so a new address "
        f"needs the token again: send {token_key} (or null to clear it) in the same change."
    )


def _keep_bot_token(target: Any, current: Settings) -> Any:
    """A Telegram target sent without its token (the GUI never has it) keeps the token of the
    configured target with the same chat_id."""
    if not isinstance(target, dict) or isinstance(target.get("bot_token"), str):
        return target
    if target.get("bot_token") is None and "bot_token" in target:
        return target  # null: cleared on purpose
    target = {k: v for k, v in target.items() if k != "bot_token"}
    api_base = target.get("api_base", NotifyTarget.model_fields["api_base"].default)
    for old in current.notify:
        if old.type == "telegram" and old.bot_token and old.chat_id == target.get("chat_id"):
            if not isinstance(api_base, str) or api_base.rstrip("/") != old.api_base.rstrip("/"):
                # The token is in the URL the daemon posts to: it goes only where it went.
                raise errors.InvalidSetting(
                    f"notify: the Telegram target of chat {old.chat_id} would send its bot "
                    f"token to {api_base!r} instead of {old.api_base!r}: send bot_token again "
                    "with the new api_base"
                )
            target["bot_token"] = old.bot_token.get_secret_value()
    return target
