"""The daemon's home and its config.json, as one typed, validated object (SPEC §2, §3)."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

import safefs
from config import rules, url_secrets
from config import store as store_config
from config.store import StoreSettings
from library.layout import Layout

log = logging.getLogger("civitai.settings")

REPO_DIR = Path(__file__).resolve().parent.parent
HOME_ENV = "CIVITAI_DAEMON_HOME"
TOKEN_ENV = "CIVITAI_TOKEN"
HF_TOKEN_ENV = "HF_TOKEN"  # as huggingface_hub reads it
SECRET_KEYS = (
    "civitai_token",
    "api_token",
    "viewer_token",
    "webhook_secret",
    "hf_token",
    "metrics_token",
)


class ConfigError(Exception):
    """config.json cannot be used as it is; the message says which key and why."""


class UpdateCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = True
    hour: int = Field(4, ge=0, le=23)
    minute: int = Field(0, ge=0, le=59)
    second: int = Field(0, ge=0, le=59)


class NotifyTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["discord", "telegram"]
    url: str | None = None
    bot_token: SecretStr | None = None
    chat_id: str | int | None = None
    api_base: str = "https://api.telegram.org"


class Settings(BaseModel):
    """Everything in config.json. Built once at start and passed down."""

    model_config = ConfigDict(extra="ignore", strict=True, validate_default=True)

    host: str = Field("127.0.0.1", description="Address to bind; loopback by default.")
    active_port: int | None = Field(
        None, ge=1, le=65535, description="Port; null picks a free one in 8100–8200."
    )
    download_dir: str = Field(
        "data/models",
        description="Models go to <download_dir>/<folder of their type>/<filename>; the folder "
        "follows `layout`.",
    )
    layout: Literal["default", "comfyui", "a1111", "forge"] = Field(
        "default",
        description="Folder names of the app that reads download_dir: default (<model_type>/), "
        "comfyui (download_dir = ComfyUI's models/), a1111 or forge (download_dir = the webui "
        "folder).",
    )
    folders: dict[str, str] = Field(
        default_factory=dict,
        description="Per-type folder overrides, relative to download_dir, e.g. "
        '{"checkpoint": "models/Stable-diffusion/sdxl"}.',
    )
    workers: int = Field(2, ge=1, le=32, description="Concurrent downloads.")
    retries: int = Field(5, ge=1, le=100, description="Attempts per job for retryable failures.")
    timeout: int | float = Field(
        60, gt=0, le=3600, description="Seconds without a byte before a connection is dead."
    )
    throttle: int = Field(0, ge=0, le=10**12, description="Total rate cap in bytes/s; 0 = none.")
    webhook_url: str | None = Field(None, description="Outbound webhook target.")
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC key for outbound signatures and inbound verification."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Level of logs/download.log."
    )
    manifest_mode: Literal["replace", "append"] = Field(
        "replace", description="How the updater records a new version in manifest.json."
    )
    civitai_base_url: str = Field("https://civitai.com", description="Civitai API root.")
    civitai_token: SecretStr | None = Field(
        None, description="Civitai API key; the CIVITAI_TOKEN environment variable overrides."
    )
    hf_base_url: str = Field(
        "https://huggingface.co",
        description="Hugging Face Hub root: a job url on huggingface.co is asked of this address.",
    )
    hf_token: SecretStr | None = Field(
        None,
        description="Hugging Face token (gated and private repos), sent only to hf_base_url's "
        "host; the HF_TOKEN environment variable overrides.",
    )
    api_token: SecretStr | None = Field(
        None, description="Key for this daemon's own API; generated on first start."
    )
    viewer_token: SecretStr | None = Field(
        None, description="Optional read-only key for dashboards: GETs, the feed and the GUI."
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Optional bearer token of a Prometheus scraper: opens GET /metrics and "
        "nothing else.",
    )
    root_path: str = Field(
        "",
        description="URL prefix behind a reverse proxy that serves a sub-path, e.g. /civitai.",
    )
    trusted_hosts: list[str] = Field(
        default_factory=list,
        description="Extra names the Host header may carry (loopback names always may).",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins of other pages allowed to call the API with a key, e.g. the browser "
        "extension's chrome-extension://<id> (CORS): http(s), chrome-extension or moz-extension.",
    )
    update_check: UpdateCheck = Field(
        default_factory=UpdateCheck, description="Daily update check time (local)."
    )
    old_versions: Literal["keep", "delete", "archive"] = Field(
        "keep", description="Fate of the old file after an update in replace mode."
    )
    connections: int = Field(
        4, ge=1, le=16, description="Parallel Range connections for one file of 64 MiB or more."
    )
    save_metadata: bool = Field(
        True,
        description="Write <stem>.civitai.info, A1111's <stem>.json and <stem>.preview.png "
        "beside each model.",
    )
    auto_scan: bool = Field(
        True,
        description="Scan download_dir at start and after each daily update check: hash the "
        "model files the daemon did not download and ask Civitai about them (POST /api/scan "
        "scans on demand either way).",
    )
    link_duplicates: bool = Field(
        True,
        description="A download whose SHA256 is already on disk elsewhere under download_dir "
        "becomes a hard link to that file instead of a second download.",
    )
    show_nsfw: bool = Field(
        False,
        description="Browse tab: show models Civitai marks NSFW (off: Civitai is asked without "
        "them and any it sends anyway are dropped).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["civitai.com", "huggingface.co"],
        description="Hosts a direct url job may start from.",
    )
    notify: list[NotifyTarget] = Field(
        default_factory=list, description="Extra notification targets (Discord, Telegram)."
    )
    store: StoreSettings | None = Field(
        None,
        description="A shared S3 bucket for a fleet of daemons (endpoint, bucket, prefix, region, "
        "access_key_id, secret_access_key): set in config.json only, read again on SIGHUP.",
    )

    # Not a config key: where this config came from.
    home: Path = Field(default=REPO_DIR, exclude=True)
    # Hidden keys (HIDDEN_CONFIG_KEYS): read from config.json when there, never written into
    # it nor shown on the settings page.
    thumbnail_cache_bytes: int = Field(
        200 * 1024 * 1024,
        ge=0,
        le=2**40,
        exclude=True,
        description="Most bytes of Browse thumbnails kept under data/thumbnails/.",
    )

    @field_validator("civitai_base_url", "webhook_url", "hf_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [origin_of(v) for v in value]

    @field_validator("root_path")
    @classmethod
    def _root_path(cls, value: str) -> str:
        if value and (not value.startswith("/") or value.endswith("/") or "//" in value):
            raise ValueError("must be empty or a path like /civitai (leading /, no trailing /)")
        return value

    @field_validator("folders")
    @classmethod
    def _folders(cls, value: dict[str, str]) -> dict[str, str]:
        Layout("default", value)  # raises ValueError naming the key or folder that is wrong
        return value

    @field_validator("host")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    def resolve(self, path: str) -> Path:
        """A config path, absolute, relative paths taken from the home."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.home / p

    @property
    def models_dir(self) -> Path:
        return self.resolve(self.download_dir)

    @property
    def folder_layout(self) -> Layout:
        return Layout(self.layout, self.folders)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def config_path(self) -> Path:
        return self.home / "config.json"

    @property
    def manifest_path(self) -> Path:
        return self.home / "manifest.json"

    def weak_keys(self) -> list[str]:
        """A sentence for each key the daemon checks that is too easy to guess."""
        said = []
        for key in rules.CHECKED_KEYS:
            value = getattr(self, key)
            problem = value and rules.weak_key(key, value.get_secret_value())
            if problem:
                said.append(problem)
        return said

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor."""
        values = [self.civitai_token, self.api_token, self.viewer_token, self.webhook_secret]
        values += [self.hf_token, self.metrics_token]
        values += [t.bot_token for t in self.notify]
        found = [v.get_secret_value() for v in values if v and v.get_secret_value()]
        found += url_secrets.secret_parts(self.webhook_url)
        found += self.store.secret_values() if self.store else []
        for target in self.notify:
            found += url_secrets.secret_parts(target.url) + url_secrets.secret_parts(
                target.api_base
            )
        return found


ORIGIN = re.compile(
    r"(?P<scheme>https?|chrome-extension|moz-extension)://(?P<host>[a-z0-9.-]+|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?/?",
    re.I,
)


def origin_of(value: str) -> str:
    """An origin as a browser sends it (`scheme://host[:port]`, lower case, no path), or
    ValueError naming what is wrong: only web pages' and browser extensions' origins."""
    m = ORIGIN.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(
            f"{value!r} is not an origin: write scheme://host[:port] with no path, the scheme "
            "http, https, chrome-extension or moz-extension"
        )
    port = f":{m['port']}" if m["port"] else ""
    return f"{m['scheme'].lower()}://{m['host'].lower()}{port}"


HIDDEN_CONFIG_KEYS = ("thumbnail_cache_bytes",)
CONFIG_KEYS = [n for n in Settings.model_fields if n != "home" and n not in HIDDEN_CONFIG_KEYS]


def default_config() -> dict[str, Any]:
    """config.json as written into a new home."""
    # `update_check.second` is optional (tests schedule a check seconds ahead); SPEC's default
    # update_check has hour and minute only.
    return Settings().model_dump(mode="json", exclude={"home": True, "update_check": {"second"}})


def local_url(host: str, port: int) -> str:
    """The address a program on this machine uses to reach a daemon bound to `host`."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def resolve_home(arg: str | os.PathLike | None = None) -> Path:
    """--home, else $CIVITAI_DAEMON_HOME, else the repo folder."""
    chosen = arg or os.environ.get(HOME_ENV) or REPO_DIR
    return Path(chosen).expanduser().resolve()


def ensure_home(home: Path) -> None:
    """Create the home and its default files where missing; never touch existing ones."""
    home.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "logs"):
        (home / sub).mkdir(exist_ok=True)
    if not (home / "config.json").exists():
        write_json_atomic(home / "config.json", default_config(), mode=0o600)
    if not (home / "manifest.json").exists():
        write_json_atomic(home / "manifest.json", [])


def write_json_atomic(path: Path, data: Any, mode: int | None = None) -> None:
    """Write JSON to a temp file beside `path`, fsync it, then rename over `path`."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    safefs.write_atomic(path, text.encode("utf-8"), mode)


def read_config(home: Path) -> dict[str, Any]:
    path = home / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}). Fix the file or delete it.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object of settings, not {type(data).__name__}")
    return data


def update_config(home: Path, **changes: Any) -> None:
    """Set keys in config.json, keeping every other key and value as it was."""
    data = read_config(home)
    data.update(changes)
    write_json_atomic(home / "config.json", data, mode=0o600)


_UNION_MEMBER = re.compile(r"^(int|float|str|bool|none|list\[.*\]|dict\[.*\]|.*\[.*\])$", re.I)


HIDDEN_KEYS = {*SECRET_KEYS, "bot_token", *store_config.CREDENTIALS}


def _hide_secrets(value: Any) -> Any:
    """A value as shown in an error, each secret in it (at any depth) as <hidden>: a target
    given as an object instead of a list still holds its bot_token."""
    if isinstance(value, dict):
        return {
            k: "<hidden>" if k in HIDDEN_KEYS and v is not None else _hide_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hide_secrets(v) for v in value]
    return value


def describe_errors(path: Path | str, errors: list[dict[str, Any]]) -> str:
    """One line per bad key: the key, its value, and what is allowed (after `path: `, when
    `path` is not empty)."""
    lines: dict[str, tuple[Any, list[str]]] = {}
    for error in errors:
        loc = [str(p) for p in error["loc"] if not _UNION_MEMBER.match(str(p))]
        key = ".".join(loc)
        allowed = error["msg"]
        if error["type"] in ("literal_error", "enum"):
            allowed = "one of " + error["ctx"]["expected"]
        value = error.get("input")
        if isinstance(value, SecretStr) or any(p in HIDDEN_KEYS for p in loc):
            value = "<hidden>"
        value = _hide_secrets(value)
        if isinstance(value, str) and "://" in value and url_secrets.has_credentials(value):
            value = f"<a URL with a credential: {url_secrets.hint(value)}>"
        if allowed not in lines.setdefault(key, (value, []))[1]:
            lines[key][1].append(allowed)
    out = []
    prefix = f"{path}: " if str(path) else ""
    for key, (value, allowed) in lines.items():
        field = Settings.model_fields.get(key.split(".")[0])
        hint = f" ({field.description})" if field and field.description else ""
        out.append(
            f"{prefix}key '{key}' has value {json.dumps(value, default=str)}: "
            f"{' or '.join(allowed)}{hint}"
        )
    return "\n".join(out)


def load_settings(home: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate config.json; raise ConfigError naming the bad key and value."""
    data = read_config(home)
    for key in sorted(set(data) - set(CONFIG_KEYS) - set(HIDDEN_CONFIG_KEYS)):
        log.warning("%s: unknown key '%s' is ignored", home / "config.json", key)
    return validate_config(home, data, environ)


def validate_config(
    home: Path,
    data: dict[str, Any],
    environ: Mapping[str, str] | None = None,
    where: str | None = None,
) -> Settings:
    """The settings `data` (config.json's object) makes, or ConfigError naming each bad key, its
    value and what is allowed, after `where` (default: the config.json path)."""
    environ = os.environ if environ is None else environ
    known = {k: v for k, v in data.items() if k in CONFIG_KEYS or k in HIDDEN_CONFIG_KEYS}
    if environ.get(TOKEN_ENV):
        known["civitai_token"] = environ[TOKEN_ENV]
    if environ.get(HF_TOKEN_ENV):
        known["hf_token"] = environ[HF_TOKEN_ENV]
    if known.get("store") is not None:
        known["store"] = store_config.prepare(known["store"], environ)
    label = str(home / "config.json") if where is None else where
    try:
        settings = _validate(copy.deepcopy(known), home)
    except ValidationError as exc:
        raise ConfigError(describe_errors(label, exc.errors(include_url=False))) from None
    problem = rules.download_dir_problem(settings.models_dir, home)
    if problem:
        prefix = f"{label}: " if label else ""
        raise ConfigError(
            f"{prefix}key 'download_dir' has value {json.dumps(settings.download_dir)}: it "
            f"{problem}. Give it a folder of its own (e.g. /srv/models) in {home / 'config.json'}."
        )
    return settings


def _validate(known: dict[str, Any], home: Path) -> Settings:
    # JSON types are checked strictly (a "2" is not a 2), but secrets and paths come as str.
    for key in SECRET_KEYS:
        if isinstance(known.get(key), str):
            known = {**known, key: SecretStr(known[key])}
    for target in known.get("notify") or []:
        if isinstance(target, dict) and isinstance(target.get("bot_token"), str):
            target["bot_token"] = SecretStr(target["bot_token"])
    return Settings.model_validate({**known, "home": home})


def ensure_api_token(settings: Settings) -> Settings:
    """Generate and save the API key on first start."""
    if settings.api_token and settings.api_token.get_secret_value():
        return settings
    token = secrets.token_urlsafe(32)
    update_config(settings.home, api_token=token)
    return settings.model_copy(update={"api_token": SecretStr(token)})
