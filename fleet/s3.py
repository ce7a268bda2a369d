"""The shared store's bucket: one boto3 client per `store` setting, called on threads.

boto3 is imported on first use only: it takes about half a second to import, and a daemon
without a store never pays it. Credentials are always given to the client (or requests go
unsigned): boto3 never looks for others (its chain would ask a cloud metadata address).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from config.store import StoreSettings

PRESIGN_SECONDS = 6 * 3600  # a presigned GET lives this long: a job that outlasts it falls back
PART_BYTES = 64 * 1024 * 1024  # multipart chunks (S3 allows 10,000 parts: files up to 640 GB)


class StoreUnavailable(Exception):
    """The store did not answer as S3 does (down, refused, misconfigured)."""


class UploadStopped(Exception):
    """The daemon is stopping: the upload is abandoned (and retried at the next start)."""


class Bucket:
    """`store`'s bucket: HEAD, presigned GET and multipart upload of `<prefix>sha256/<hex>`."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    def key(self, sha256: str) -> str:
        return f"{self.settings.prefix}sha256/{sha256.lower()}"

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = _make_client(self.settings)
            return self._client

    def head(self, key: str) -> dict[str, Any] | None:
        """The object's head (its metadata, size), or None when the bucket has no such key."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client().head_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StoreUnavailable(f"the store answered {code or 'an error'}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(str(exc)) from None

    def presign(self, key: str) -> str:
        """A GET URL that needs no other credential: the engine fetches it like any link."""
        return self.client().generate_presigned_url(
            "get_object",
            Params={"Bucket": self.settings.bucket, "Key": key},
            ExpiresIn=PRESIGN_SECONDS,
        )

    def upload(self, path: Path, key: str, metadata: dict[str, str], stop: threading.Event) -> None:
        """Upload `path` in parts (several at once); `stop` set abandons it (and its parts)."""
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        def progress(_: int) -> None:
            if stop.is_set():
                raise UploadStopped()

        config = TransferConfig(
            multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=4
        )
        extra = {"Metadata": metadata, "ContentType": "application/octet-stream"}
        try:
            self.client().upload_file(
                str(path),
                self.settings.bucket,
                key,
                ExtraArgs=extra,
                Config=config,
                Callback=progress,
            )
        except (ClientError, BotoCoreError) as exc:
            raise StoreUnavailable(str(exc)) from None
        except Exception as exc:
            if stop.is_set():
                raise UploadStopped() from None
            if isinstance(exc, OSError):
                raise
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None


def object_metadata(fields: dict[str, Any]) -> dict[str, str]:
    """S3 user metadata (x-amz-meta-*): ASCII only, so each value is percent-encoded."""
    return {k: quote(str(v), safe="/:?=&@+,;") for k, v in fields.items() if v is not None}


def _make_client(settings: StoreSettings) -> Any:
    import boto3  # here, not at the top: see the module's docstring
    from botocore import UNSIGNED
    from botocore.config import Config

    key_id, secret = settings.access_key_id, settings.secret_access_key
    signed = bool(key_id and secret and key_id.get_secret_value())
    config = Config(
        signature_version="s3v4" if signed else UNSIGNED,
        s3={"addressing_style": "path"},  # MinIO, SeaweedFS and R2 all take bucket-in-path
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        # Checksums only where S3 requires them: other S3-compatible stores refuse some of the
        # newer default ones.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        ignore_configured_endpoint_urls=True,
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.endpoint,
        region_name=settings.region,
        aws_access_key_id=key_id.get_secret_value() if signed and key_id else None,
        aws_secret_access_key=secret.get_secret_value() if signed and secret else None,
        config=config,
    )
