"""The `store` key: a shared S3-compatible bucket for a fleet of daemons (SPEC §15).

Set in config.json only (a store address changed over HTTP could send every file elsewhere), read
again on SIGHUP. Its credentials come from config.json or, overriding it, the environment's
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; they are shown only as `{"set": true}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from config import url_secrets

ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"
CREDENTIALS = {"access_key_id": ACCESS_KEY_ENV, "secret_access_key": SECRET_KEY_ENV}


class StoreSettings(BaseModel):
    """Where the fleet's shared copies live: `<prefix>sha256/<hex>` in `bucket` at `endpoint`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    endpoint: str = Field(description="The S3 API's URL, e.g. https://s3.example.com:9000.")
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = Field("", max_length=512, description="Key prefix, e.g. models/ (ends in /).")
    region: str = Field("us-east-1", min_length=1, description="auto for Cloudflare R2.")
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        if url_secrets.has_credentials(value):
            raise ValueError("must not hold a user or password: use access_key_id")
        return value.rstrip("/")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value.startswith("/") or "//" in value or (value and not value.endswith("/")):
            raise ValueError("must be empty or a folder-like prefix such as models/ (ends in /)")
        return value

    def secret_values(self) -> list[str]:
        """Its credentials, for the log redactor."""
        values = [self.access_key_id, self.secret_access_key]
        return [v.get_secret_value() for v in values if v and v.get_secret_value()]


def prepare(value: Any, environ: Mapping[str, str]) -> Any:
    """config.json's `store` object as the model takes it: credentials as secrets, the
    environment's over config.json's."""
    if not isinstance(value, dict):
        return value
    value = dict(value)
    for key, env in CREDENTIALS.items():
        if environ.get(env):
            value[key] = environ[env]
        if isinstance(value.get(key), str):
            value[key] = SecretStr(value[key])
    return value


def shown(store: StoreSettings | None) -> dict[str, Any] | None:
    """How GET /api/settings shows it: credentials only as set or not."""
    if store is None:
        return None
    out = store.model_dump(mode="json")
    for key in CREDENTIALS:
        value = getattr(store, key)
        out[key] = {"set": bool(value and value.get_secret_value())}
    return out
