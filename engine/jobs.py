"""What a job is: its request, its states and their transitions, its public shape (SPEC §5)."""

from __future__ import annotations

import json
import re
import unicodedata
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from errors import InvalidRequest
from library.layout import TYPE_RE as MODEL_TYPE_RE  # a model type: one plain folder name
from library.layout import WINDOWS_RESERVED, model_type_of
from sources.air import is_air, parse_air

MAX_ID = (
    2**63 - 1
)  # SQLite's largest integer: ids and offsets beyond it are refused, not crashed on
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class JobStatus(StrEnum):
    QUEUED = "queued"  # waiting for a worker
    DOWNLOADING = "downloading"  # a worker is resolving or transferring it
    # An attempt failed with a retryable error; the worker waits until `next_attempt_at`.
    WAITING = "waiting"
    VERIFYING = "verifying"  # all bytes are on disk; the SHA256 is being finished and checked
    COMPLETED = "completed"  # the verified file is at its final path
    FAILED = "failed"  # gave up; `error` says why and what to do
    CANCELLED = "cancelled"  # stopped by a person; its .part is removed
    # Stopped by a person, to go on later: its .part and saved parts are kept, no worker claims
    # it (not at a restart either) until it is resumed (back to `queued`).
    PAUSED = "paused"


# Jobs that hold their file: the same file asked again returns them; a cancel stops them.
ACTIVE = (
    JobStatus.QUEUED,
    JobStatus.DOWNLOADING,
    JobStatus.WAITING,
    JobStatus.VERIFYING,
    JobStatus.PAUSED,
)
RUNNING = (JobStatus.DOWNLOADING, JobStatus.WAITING, JobStatus.VERIFYING)  # a worker holds it
PAUSABLE = (JobStatus.QUEUED, *RUNNING)
REORDERABLE = (JobStatus.QUEUED, JobStatus.PAUSED, JobStatus.WAITING)  # priority can change
ACTIVE_SQL = "status in ({})".format(", ".join(f"'{s.value}'" for s in ACTIVE))
RUNNING_SQL = "status in ('downloading', 'waiting', 'verifying')"  # a worker holds the job

TRANSITIONS: dict[JobStatus, set[JobStatus]] = {
    JobStatus.QUEUED: {
        JobStatus.DOWNLOADING,
        JobStatus.CANCELLED,
        JobStatus.FAILED,
        JobStatus.PAUSED,
    },
    JobStatus.DOWNLOADING: {
        JobStatus.WAITING,  # a retryable failure: wait, then try again
        JobStatus.VERIFYING,
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.QUEUED,  # the daemon is stopping: back to the queue, progress kept
        JobStatus.PAUSED,  # a person paused it: progress kept
    },
    JobStatus.WAITING: {
        JobStatus.DOWNLOADING,  # the next attempt starts
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.QUEUED,  # the daemon is stopping: the next start tries again
        JobStatus.PAUSED,
    },
    JobStatus.VERIFYING: {
        JobStatus.COMPLETED,
        JobStatus.DOWNLOADING,  # the hash did not match: fetch once more
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.QUEUED,
        JobStatus.PAUSED,
    },
    JobStatus.PAUSED: {
        JobStatus.QUEUED,  # resumed: it goes on from the saved bytes
        JobStatus.CANCELLED,
        JobStatus.FAILED,  # stopped, but its .part could not be kept as it was
    },
    JobStatus.COMPLETED: set(),
    JobStatus.FAILED: {JobStatus.QUEUED},  # retry
    JobStatus.CANCELLED: {JobStatus.QUEUED},  # retry
}


class IllegalTransition(RuntimeError):
    def __init__(self, job_id: int, old: str, new: str) -> None:
        super().__init__(f"Job {job_id} cannot go from {old} to {new}")


def check_transition(job_id: int, old: str, new: JobStatus) -> None:
    """Refuse a move the state machine does not allow, with a sentence saying which."""
    if new not in TRANSITIONS[JobStatus(old)]:
        raise IllegalTransition(job_id, old, new)


def canonical_model_type(value: str) -> str:
    """A model type from what a person or Civitai calls it: Civitai's names (LORA,
    TextualInversion), an app's folder (Stable-diffusion, loras, models/Lora) or a type."""
    if not isinstance(value, str):
        raise InvalidRequest("model_type must be a string such as 'lora' or 'checkpoint'")
    mapped = model_type_of(value)
    if value.strip().lower() in WINDOWS_RESERVED:
        raise InvalidRequest(
            f"model_type {value!r} is not allowed: it is a device name on Windows, not a folder"
        )
    if mapped is None or not MODEL_TYPE_RE.fullmatch(mapped):
        raise InvalidRequest(
            f"model_type {value!r} is not allowed: use a type such as 'lora', 'checkpoint' or "
            f"'vae', an app's folder name such as 'Stable-diffusion' or 'loras', or a lower-case "
            f"name of letters, digits, '-' or '_' (at most 32)"
        )
    return mapped


def model_type_from_civitai(kind: Any) -> str:
    """The folder for a Civitai model `type` (LORA → lora, TextualInversion → embedding); a type
    this daemon does not know goes to `other` unless it is itself a usable folder name."""
    try:
        return canonical_model_type(str(kind or "other"))
    except InvalidRequest:
        return "other"


MAX_NAME_BYTES = 200
# Names the daemon gives files beside a model `<stem>.<ext>` (metadata.py: its sidecars, and the
# previews older versions wrote; runner.py: `<name>.part`). A model so named would be replaced by
# another model's preview, or removed when that model's download starts.
PREVIEW_SUFFIX = ".preview.png"
# Names older versions of the daemon wrote (the image as served): still shown, still deleted.
OLD_PREVIEW_SUFFIXES = (
    ".preview.jpeg",
    ".preview.jpg",
    ".preview.webp",
    ".preview.gif",
    ".preview.mp4",
    ".preview.webm",
)
# A1111's `<stem>.json` (library/a1111.py) is not refused here: Hugging Face files such as
# `config.json` are downloaded under their names. It cannot take a model's place all the same: it
# is written only over nothing or over A1111 metadata (a config there is left alone), never over
# the model itself, and a download never lands over an existing file (runner.py `place`).
SIDECAR_SUFFIXES = (".civitai.info", PREVIEW_SUFFIX, *OLD_PREVIEW_SUFFIXES, ".part")


def _sidecar_suffix(name: str) -> str | None:
    lowered = name.lower()  # case-insensitive disks (Windows, macOS) take M.Preview.PNG too
    return next((s for s in SIDECAR_SUFFIXES if lowered.endswith(s)), None)


def unsafe_filename_reason(name: str) -> str | None:
    """Why `name` cannot be used as given, or None when it is a plain file name."""
    if not name or not name.strip():
        return "it is empty"
    if "\x00" in name:
        return "it contains a NUL byte"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if name in (".", "..") or ".." in name.split("."):
        return "it contains '..'"
    if name.startswith("."):
        return "it starts with a dot"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "it contains control characters"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    if name.split(".")[0].strip().lower() in WINDOWS_RESERVED:
        return "it is a reserved device name on Windows"
    if suffix := _sidecar_suffix(name):
        return f"it ends in {suffix!r}, the name of a sidecar or partial file of another model"
    return None


def safe_filename(name: str, fallback: str = "download.bin") -> str:
    """Make a server-given name safe: no folders, no dots first, no control bytes, not too long."""
    name = name.replace("\\", "/").split("/")[-1]
    name = "".join(c for c in name if unicodedata.category(c) != "Cc")
    name = name.replace("..", "_").strip().lstrip(".").strip()
    if not name:
        return fallback
    if name.split(".")[0].strip().lower() in WINDOWS_RESERVED:
        name = "_" + name
    if _sidecar_suffix(name):  # m.preview.png → m.preview_png: no other model's sidecar name
        stem, _, ext = name.rpartition(".")
        name = f"{stem}_{ext}"
    while len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if dot and len(ext) < 16 and stem:
            name = stem[:-1] + "." + ext
        else:
            name = name[:-1]
    return name


class JobRequest(BaseModel):
    """One download request (SPEC §5), from the API, a batch, the manifest or a webhook."""

    model_config = ConfigDict(extra="ignore")

    model_type: str | None = Field(
        None,
        description="Folder under download_dir, e.g. lora, checkpoint, vae. Left out: the "
        "model's type on Civitai decides (required for a direct URL off Civitai).",
    )
    # Strict: `true` is not version 1 and "2011" is not 2011; JSON integers only.
    modelVersionId: int | None = Field(
        None, gt=0, le=MAX_ID, strict=True, description="A Civitai model version id."
    )  # noqa: N815
    modelId: int | None = Field(
        None, gt=0, le=MAX_ID, strict=True, description="A Civitai model id: its newest version."
    )  # noqa: N815
    url: str | None = Field(
        None,
        description="A civitai.com page/download URL, a direct URL, or a Civitai AIR (urn:air:…).",
    )
    air: str | None = Field(
        None,
        description="A Civitai AIR, urn:air:<ecosystem>:<type>:civitai:<modelId>@<versionId> "
        "(without @<versionId>: the newest version); its type gives model_type when none is "
        "given.",
    )
    fileId: int | None = Field(  # noqa: N815
        None, gt=0, le=MAX_ID, strict=True, description="Which file of the version."
    )
    sha256: str | None = Field(None, description="Expected SHA256 (hex).")
    filename: str | None = Field(None, description="File name to save as.")
    priority: int = Field(5, ge=0, le=100, strict=True, description="Lower runs first.")
    track: bool = Field(
        False,
        strict=True,
        description="Once the file is verified, add or update its model's manifest.json entry "
        "so the update checker follows it.",
    )
    # A folder under the type's folder (a ComfyUI workflow's `SD1.5/x.safetensors`), set only by
    # the daemon itself (sources/workflow_jobs.py), checked there: not a field of the API.
    _subfolder: str | None = PrivateAttr(None)
    # The exact folder (relative to download_dir) a library import puts the file in, whatever the
    # layout says (library/portable.py checks it): not a field of the API either.
    _folder: str | None = PrivateAttr(None)

    @field_validator("model_type", mode="before")
    @classmethod
    def _model_type(cls, value: Any) -> str | None:
        if value is None:
            return None
        try:
            return canonical_model_type(value)
        except InvalidRequest as exc:
            raise ValueError(str(exc)) from None

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not SHA256_RE.fullmatch(value):
            raise ValueError("must be 64 hexadecimal characters")
        return value.lower()

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str | None) -> str | None:
        if value is None:
            return None
        reason = unsafe_filename_reason(value)
        if reason:
            raise ValueError(f"{value!r} cannot be used as a file name: {reason}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if is_air(value):
            return value.strip() if value else value  # an AIR: read by _apply_air
        if value is not None and not re.match(r"^https?://[^/\s]+", value.strip()):
            raise ValueError("must be an http:// or https:// URL")
        return value.strip() if value else value

    @model_validator(mode="after")
    def _one_source(self) -> JobRequest:
        self._apply_air()
        if not (self.modelVersionId or self.modelId or self.url):
            raise ValueError("give one of modelVersionId, modelId or url (or a Civitai AIR in air)")
        return self

    def _apply_air(self) -> None:
        """An AIR (in `air`, or as the `url`) names the model, version and file, and the
        folder when none is given; ids given beside it must agree with it."""
        if self.url and is_air(self.url):
            if self.air and self.air.strip() != self.url:
                raise ValueError("url and air name two different AIRs: give one")
            self.air, self.url = self.url, None
        if self.air is None:
            return
        try:
            air = parse_air(self.air)
        except InvalidRequest as exc:
            raise ValueError(f"air: {exc}") from None
        self.air = self.air.strip()
        for field, value in (
            ("modelId", air.model_id),
            ("modelVersionId", air.version_id),
            ("fileId", air.file_id),
        ):
            given = getattr(self, field)
            if value is not None and given is not None and given != value:
                raise ValueError(f"{field} {given} disagrees with the AIR's {value}: give one")
            if value is not None and not (field == "modelId" and air.version_id):
                setattr(self, field, value)  # a version names its model: Civitai's says which
        if self.model_type is None and air.model_type is not None:
            try:
                self.model_type = canonical_model_type(air.model_type)
            except InvalidRequest:
                pass  # a type naming no usable folder: Civitai's type decides


def describe_errors(errors: list[dict[str, Any]]) -> str:
    """Pydantic errors as one readable sentence per field: `model_type: is required`."""
    parts = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")]
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "json_invalid":
            error = (e.get("ctx") or {}).get("error", "syntax")
            msg, loc = f"the request body is not valid JSON ({error})", []
        elif e.get("type") == "missing":
            msg = "is required"
        elif e.get("type") == "int_type":
            given = json.dumps(e.get("input"), default=str)[:40]
            msg = f"must be an integer such as 123, not {given}"
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


class Job(BaseModel):
    """The job object of the API, WebSocket and webhooks (SPEC §5): no internal columns."""

    id: int
    status: str
    model_type: str
    modelId: int | None = None  # noqa: N815
    modelVersionId: int | None = None  # noqa: N815
    fileId: int | None = None  # noqa: N815
    filename: str | None = None
    path: str | None = None
    sha256: str | None = None
    # What the bytes are checked against: "sha256", or "size" for a file with no published
    # hash (a Hugging Face file kept in git, not LFS); null: nothing is known to check.
    verified_by: str | None = None
    priority: int
    bytes_done: int = 0
    bytes_total: int | None = None
    speed_bps: float = 0
    attempts: int = 0
    max_attempts: int | None = None  # while waiting: the attempts allowed (config `retries`)
    next_attempt_at: str | None = None  # while waiting: when the next attempt starts (UTC)
    error: str | None = None
    model_name: str | None = None
    version_name: str | None = None
    created_at: str
    updated_at: str | None = None
    completed_at: str | None = None
    duplicate: bool = False  # true: this file was already completed; no new job was made
    linked_from: str | None = None  # a hard link to this file, the same bytes (link_duplicates)
    retryable: bool = False  # failed or cancelled, and a retry can help
    why_not_retryable: str | None = None  # a failed job that a retry cannot help: why


def public_job(row: dict[str, Any]) -> dict[str, Any]:
    """The job object of the API, WebSocket and webhooks: no internal columns, no secrets."""
    job = {k: row.get(k) for k in Job.model_fields}
    job["bytes_done"] = job["bytes_done"] or 0
    job["speed_bps"] = round(job["speed_bps"] or 0)
    job["duplicate"] = bool(job["duplicate"])
    blocked = row.get("retry_blocked") if row.get("status") == JobStatus.FAILED else None
    job["retryable"] = row.get("status") in (JobStatus.FAILED, JobStatus.CANCELLED) and not blocked
    job["why_not_retryable"] = blocked
    return job
