"""The CLI's way to the daemon: find it through its home, have it prove it holds the key, and
only then send the key (SPEC §15, Auth); every answer it cannot read becomes one sentence.

    CliError (exit 1)
     └─ NoDaemon (exit 3): nothing answers, or what answers does not prove it holds the key
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from config import daemon_record
from config.daemon_record import is_loopback
from config.settings import ConfigError, local_url, read_config, resolve_home
from web import proof

__all__ = ["CliError", "Daemon", "NoDaemon", "call", "connect", "is_loopback", "one_line"]

START = ".venv/bin/python launch.py --home {home} in the checkout, or pass --url URL"


class CliError(Exception):
    """A sentence for the person at the terminal; exit code 1."""


class NoDaemon(CliError):
    """No daemon answers where the CLI looked; exit code 3."""


def one_line(text: object) -> str:
    """`text` with its line breaks and runs of spaces as single spaces."""
    return " ".join(str(text).split())


class ProvenKey(httpx.Auth):
    """Adds the key to a request only once what answers at the address has proven, for a nonce
    of the CLI's own, that it holds the key; before every request, so a daemon that stopped
    meanwhile and a program that took its port get nothing."""

    requires_response_body = True

    def __init__(self, key: str, base_url: str, port: int | None, why: str) -> None:
        self.key = key
        self.base_url = base_url
        self.port = port  # the port the proof must name; None for an address the user gave
        self.why = why  # which home or address, for the message
        self.proven = False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.proven = False
        nonce = proof.new_nonce()
        answer = yield httpx.Request(
            "GET", f"{self.base_url}/api/challenge", params={"nonce": nonce}
        )
        try:
            body = answer.json() if answer.status_code == 200 else None
        except (ValueError, RecursionError):
            body = None
        if not proof.holds_key(body, self.key, nonce, self.port):
            older = (
                " (a daemon started before this CLI was updated cannot prove it: restart it)"
                if answer.status_code == 404
                else ""
            )
            raise NoDaemon(
                f"No daemon answers {self.why}: what answers at {self.base_url} does not prove "
                f"that it holds the key{older}, so the key was not sent (another program may "
                f"have the port, or the key is not that daemon's)."
            )
        self.proven = True
        request.headers["Authorization"] = f"Bearer {self.key}"
        yield request


@dataclass
class Daemon:
    client: httpx.Client
    auth: ProvenKey
    stale: str = ""  # why data/daemon.json was not used, when it was left by a dead process

    @property
    def token(self) -> str:
        return self.auth.key


def owners(home: Path) -> set[int]:
    """Who may have written data/daemon.json: this user, and the owner of the home's config.json
    (who can read the key anyway; a root CLI for a service account's home)."""
    if not hasattr(os, "getuid"):
        return set()
    found = {os.getuid()}
    try:
        found.add((home / "config.json").stat().st_uid)
    except OSError:
        pass
    return found


def find(home: Path, config: dict[str, Any]) -> tuple[str | None, str]:
    """The home's daemon's address (data/daemon.json, else active_port), and why a record left by
    a dead process was not used."""
    try:
        record = daemon_record.read_checked(home, owners(home))
    except daemon_record.Untrusted as exc:
        raise NoDaemon(
            f"No daemon answers for this home ({home}): {exc}, so the CLI does not go there. "
            f"Delete it and restart the daemon (it writes its own), or pass --url URL."
        ) from None
    if record is not None and daemon_record.is_running(record.pid):
        return record.url, ""
    stale = ""
    if record is not None:
        stale = (
            f"{daemon_record.record_path(home)} names process {record.pid} (port "
            f"{record.port}, started {record.started}), which is no longer running: that "
            f"daemon stopped without a clean shutdown (killed or crashed). "
        )
    port = config.get("active_port")
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return local_url(config.get("host") or "127.0.0.1", port), stale
    return None, stale


def connect(home_arg: str | None, url_arg: str | None = None) -> Daemon:
    """A client for the daemon: --url or $CIVITAI_DAEMON_URL, else the home's running daemon
    (data/daemon.json, written by launch.py), else the home's active_port."""
    home = resolve_home(home_arg)
    try:
        config = read_config(home)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    token = os.environ.get("CIVITAI_DAEMON_TOKEN") or config.get("api_token")
    url = url_arg or os.environ.get("CIVITAI_DAEMON_URL")
    if url and not is_loopback(url) and not os.environ.get("CIVITAI_DAEMON_TOKEN"):
        raise CliError(
            f"{url} is not on this machine: this home's API key is not sent there. Give that "
            f"daemon's key in the environment variable CIVITAI_DAEMON_TOKEN."
        )
    given, stale = bool(url), ""
    if not url:
        url, stale = find(home, config)
    if not url or not token or not isinstance(token, str):
        why = "no daemon.json in its data folder and no active_port in config.json"
        if not token or not isinstance(token, str):
            why = "config.json has no api_token"
        raise NoDaemon(
            f"{stale}No daemon is running with the home {home} ({why}). Start it with: "
            + START.format(home=home)
            if stale
            else f"No daemon has run with the home {home} yet ({why}). Start it with: "
            + START.format(home=home)
        )
    base = url.rstrip("/")
    try:
        parts = httpx.URL(base)
    except httpx.InvalidURL as exc:
        raise CliError(f"{base} is not a URL ({exc}).") from None
    if parts.scheme not in ("http", "https") or not parts.host:
        raise CliError(f"{base} is not an http:// or https:// address.")
    # A proxy or a tunnel the user named may reach the daemon on another port: their word holds.
    port = None if given else (parts.port or (443 if parts.scheme == "https" else 80))
    why = f"at {base}" if given else "for this home"
    auth = ProvenKey(token, base, port, why)
    client = httpx.Client(base_url=base, auth=auth, timeout=120)
    return Daemon(client, auth, stale)


def call(daemon: Daemon, method: str, path: str, **kw: Any) -> Any:
    """The daemon's JSON answer; a CliError with one sentence for anything else."""
    where = daemon.client.base_url
    try:
        response = daemon.client.request(method, path, **kw)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise NoDaemon(
            f"{daemon.stale}The daemon is not running (nothing answers at "
            f"{where}). Start it with `.venv/bin/python launch.py` in the "
            f"checkout or `systemctl start civitai-daemon`."
        ) from None
    except httpx.HTTPError as exc:
        if not daemon.auth.proven:
            raise NoDaemon(
                f"No daemon answers {daemon.auth.why}: what answers at {where} broke off instead "
                f"of proving that it holds the key, so the key was not sent."
            ) from None
        raise CliError(
            f"The daemon at {where} broke off its answer to {method} {path} ({type(exc).__name__})."
        ) from None
    try:
        data = response.json()
    except (ValueError, RecursionError):
        data = None
    status = response.status_code
    if status >= 400:
        detail = data.get("detail") if isinstance(data, dict) else None
        if not isinstance(detail, str) or not detail.strip():
            detail = f"The daemon answered {method} {path} with no message this CLI can read"
        raise CliError(f"{one_line(detail)} ({status})")
    if not isinstance(data, dict):
        kind = response.headers.get("content-type") or "no content type"
        raise CliError(
            f"The daemon's answer to {method} {path} is not the JSON object this CLI reads "
            f"({status}, {one_line(kind)}, {len(response.content)} bytes)."
        )
    return data
