"""A fake Civitai that speaks SPEC §13 over real HTTP, with faults a test can inject.

Two real servers on loopback: the API (models, model-versions, by-hash, the download endpoint)
and a CDN on a *different host* (127.0.0.2) that serves the bytes behind signed, expiring URLs,
rejects any `Authorization` header, and honours Range / If-Range like R2 and B2 do.

    fake = FakeCivitai().start()
    fake.add_model(100, "Tiny LoRA", "LORA", versions=[fake.version(200, files=[b"..."])])
    fake.fault("cdn", drop_after=1000)          # next CDN response dies after 1000 bytes
    fake.fault("api", status=503, times=2)       # next two API answers are 503
    fake.fault("download", status=302, location="file:///etc/passwd")   # a hostile redirect
    fake.publish_version(100, fake.version(201, files=[b"new"]))
    fake.add_recorded(json.loads(Path("tests/fixtures/model_1580878_2025-08.json").read_text()))
    fake.version(202, files=[b"..."], media=["mp4", "webp"])   # a video first, then a webp

Preview images live under Civitai's image paths (`/<key>/<uuid>/<options>/<name>`) on the API's
host (the daemon fetches images only from Civitai's image hosts and the configured
civitai_base_url; the CDN serves them too, as a host it must not reach), made with Pillow in the
format their name says; a video answers bytes that are not an image, and its `anim=false` form
(Civitai's still of the first frame) a JPEG.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from PIL import Image

TOKEN = "fake-civitai-token-0123456789"
SIGNING_KEY = b"fake-cdn-signing-key"
LOGIN_REQUIRED = "The creator of this asset requires you to be logged in to download it"
DISABLED = "The creator of this asset has disabled downloads on this file"
# Basic-auth credentials of the CDN's /private/ files (a file host that wants user:pass@ URLs).
PRIVATE_USER, PRIVATE_PASSWORD = "user", "s3cret-pass"
CLOUDFLARE_HTML = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    b"<body>Checking your browser before accessing civitai.com.</body></html>"
)
# The download endpoint's other 403s: a plain refusal, and no access for this account.
FORBIDDEN = {"error": "Forbidden"}
NO_ACCESS = {"error": "Forbidden", "message": "You do not have access to download this file"}

IMAGE_KEY = "xG1nkqKTMzGDvpLrqFT7WA"  # the first path segment of Civitai's image URLs
IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
# The start of an MP4 file: what the image CDN sends for a video asked without `anim=false`.
MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 64
RED, BLUE, GREEN = (200, 30, 30), (30, 30, 200), (30, 160, 60)


def image_bytes(
    fmt: str, color: tuple[int, int, int] = RED, size: tuple[int, int] = (8, 6)
) -> bytes:
    """A real image in `fmt` (png, jpeg, webp, gif), made with Pillow; a gif is animated, its
    first frame `color` and its second blue."""
    out = io.BytesIO()
    first = Image.new("RGB", size, color)
    if fmt == "gif":
        first.save(out, format="GIF", save_all=True, append_images=[Image.new("RGB", size, BLUE)])
    else:
        first.save(out, format=fmt.upper())
    return out.getvalue()


PNG = image_bytes("png", RED, (1, 1))  # the preview of a version without `media`


@dataclass
class Fault:
    """One injected misbehaviour, applied to the next `times` requests of its target."""

    target: str  # "api" (JSON routes), "download" (the 307 endpoint), "cdn" (file bytes), "img"
    status: int | None = None
    retry_after: float | None = None
    body: bytes | None = None
    html: bool = False  # a Cloudflare page instead of what was asked
    challenge: bool = False  # Cloudflare's managed challenge: 403, text/html, cf-mitigated
    drop_after: int | None = None  # close the connection after this many body bytes
    corrupt: bool = False  # flip bytes in the body
    ignore_range: bool = False  # answer 200 with the whole file to a Range request
    stall_after: int | None = None  # stop sending (but keep the socket open) after N bytes
    rate: int | None = None  # bytes/s for this response
    burst: float | None = None  # with rate: sent as rate × burst bytes at once, then silence
    location: str | None = None  # with a 3xx status: where the answer redirects
    times: int = 1


@dataclass
class Request:
    server: str
    method: str
    path: str
    headers: dict[str, str]
    sent: int = 0  # body bytes of a file written for this request
    body: bytes = b""  # what a POST sent

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


@dataclass
class FileSpec:
    id: int
    name: str
    content: bytes
    primary: bool = True
    type: str = "Model"
    format: str = "SafeTensor"
    size: str | None = "pruned"
    fp: str | None = "fp16"
    published_sha256: str | None = None  # a wrong hash, as Civitai sometimes publishes
    advertised_size: int | None = None  # a size the API claims instead of the real one

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest().upper()


@dataclass
class VersionSpec:
    id: int
    name: str
    files: list[FileSpec]
    base_model: str = "SDXL 1.0"
    trained_words: list[str] = field(default_factory=lambda: ["fake"])
    description: str = "<p>made by the fake</p>"
    created_at: str = "2025-05-19T02:43:46.31"  # no Z, two fractional digits, as Civitai does
    images: int = 1
    # Instead of `images` PNGs: one entry per format, "png", "jpeg", "webp", "gif" or "mp4" (a
    # video, `"type": "video"` as Civitai marks them), in this order.
    media: list[str] | None = None
    published_at: str | None = "2025-05-19T02:43:46.31"  # None: a draft
    early_access_until: float | None = None  # Unix time: until then the download answers 403
    usage_control: str | None = None  # "Generation": only generates on Civitai, no download
    image_urls: list[str] | None = None  # instead of both: these URLs as the images (hostile)
    nsfw_level: int = 1  # its images' nsfwLevel: 1 PG, 2 PG-13, 4 R, 8 X, 16 XXX


@dataclass
class ModelSpec:
    id: int
    name: str
    type: str
    versions: list[VersionSpec]  # newest first
    login_required: bool = False
    early_access: bool = False
    disabled: bool = False
    archived: bool = False
    deleted: bool = False
    forbidden: dict[str, Any] | None = None  # the download endpoint's 403 body (FORBIDDEN, …)
    nsfw: bool = False  # left out of /api/v1/models unless the request says nsfw=true
    listed: bool = True  # False: its own page answers, lists leave it out (as Civitai may)
    creator: str = "fake-creator"  # its `creator.username`; `/api/v1/models?username=` lists it
    extra: dict[str, Any] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-answer is part of the game here


class FakeCivitai:
    def __init__(
        self,
        cdn_host: str = "127.0.0.2",
        tls: ssl.SSLContext | None = None,
        tls_api: bool = False,
    ) -> None:
        self.cdn_host = cdn_host
        self.tls = tls  # a server context: the CDN speaks https with its certificate
        self.tls_api = tls_api  # and the API too
        self.open_connections = {"api": 0, "cdn": 0}  # client connections being served now
        self.models: dict[int, ModelSpec] = {}
        # Real recorded answers (tests/fixtures), served as they are: models by id, and the
        # model-versions answers recorded on their own.
        self.recorded: dict[int, dict[str, Any]] = {}
        self.recorded_versions: dict[int, dict[str, Any]] = {}
        self.page_limit = 100  # most items a list page holds, whatever `limit` asks
        # Civitai's `nsfw=false` goes by the images' levels, not the model's flag: True sends
        # NSFW models to a list that asked without them (the daemon must drop them itself).
        self.leak_nsfw = False
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.link_ttl = 3600.0
        self.link_generation = 0
        self.default_rate: int | None = None  # per-connection cap on CDN bytes/s
        self.bytes_sent = 0  # file bytes the CDN has written to sockets
        self.lock = threading.Lock()
        self.images_open = threading.Event()  # cleared: image answers wait until it is set
        self.images_open.set()
        self.by_hash_open = threading.Event()  # cleared: by-hash POSTs wait until it is set
        self.by_hash_open.set()
        self.image_size = (8, 6)  # of every image and still the image host serves
        self.stopping = threading.Event()
        self._servers: list[_Server] = []
        self._next_id = 900_000

    # Lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeCivitai:
        api = self._serve("127.0.0.1", "api")
        try:
            cdn = self._serve(self.cdn_host, "cdn")
        except OSError:  # a loopback without 127.0.0.2: another port still means another origin
            self.cdn_host = "127.0.0.1"
            cdn = self._serve(self.cdn_host, "cdn")
        api_scheme = "https" if self.tls and self.tls_api else "http"
        self.base_url = f"{api_scheme}://127.0.0.1:{api.server_address[1]}"
        scheme = "https" if self.tls else "http"
        self.cdn_url = f"{scheme}://{self.cdn_host}:{cdn.server_address[1]}"
        return self

    def _serve(self, host: str, role: str) -> _Server:
        handler = type(f"{role}Handler", (_Handler,), {"fake": self, "role": role})
        server = _Server((host, 0), handler)
        if self.tls is not None and (role == "cdn" or (role == "api" and self.tls_api)):
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(
            target=server.serve_forever, args=(0.05,), daemon=True, name=f"fake-{role}"
        ).start()
        self._servers.append(server)
        return server

    def stop(self) -> None:
        self.stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeCivitai:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Catalogue --------------------------------------------------------------------------

    def new_id(self) -> int:
        with self.lock:
            self._next_id += 1
            return self._next_id

    def file(self, content: bytes, name: str = "model.safetensors", **kw: Any) -> FileSpec:
        return FileSpec(id=kw.pop("id", None) or self.new_id(), name=name, content=content, **kw)

    def version(
        self, version_id: int, files: list[FileSpec | bytes], name: str | None = None, **kw: Any
    ) -> VersionSpec:
        specs = [
            f if isinstance(f, FileSpec) else self.file(f, name=f"file_{version_id}.safetensors")
            for f in files
        ]
        return VersionSpec(id=version_id, name=name or f"v{version_id}", files=specs, **kw)

    def add_model(
        self, model_id: int, name: str, type: str, versions: list[VersionSpec], **kw: Any
    ) -> ModelSpec:
        spec = ModelSpec(id=model_id, name=name, type=type, versions=versions, **kw)
        with self.lock:
            self.models[model_id] = spec
        return spec

    def add_simple(
        self,
        model_id: int,
        version_id: int,
        content: bytes,
        filename: str = "model.safetensors",
        type: str = "LORA",
        **kw: Any,
    ) -> FileSpec:
        """One model with one version holding one file; returns the file."""
        f = self.file(content, name=filename)
        self.add_model(model_id, f"Model {model_id}", type, [self.version(version_id, [f])], **kw)
        return f

    def publish_version(self, model_id: int, version: VersionSpec) -> None:
        with self.lock:
            self.models[model_id].versions.insert(0, version)

    def end_early_access(self, version_id: int) -> None:
        """The deadline of a version in early access has passed (as if the clock moved on)."""
        found = self.find_version(version_id)
        assert found is not None and found[1].early_access_until is not None
        found[1].early_access_until = time.time() - 1

    def move_early_access(self, version_id: int, until: float | None) -> None:
        """The creator moves a version's early-access end (Unix time; None: no early access)."""
        found = self.find_version(version_id)
        assert found is not None
        with self.lock:
            found[1].early_access_until = until

    def add_recorded(self, data: dict[str, Any]) -> list[int]:
        """Serve a recorded Civitai answer as it is: a models list (each item), one model, or one
        model version (and a model holding just it). Returns the model ids it holds."""
        if "items" in data:
            models = list(data["items"])
        elif "modelVersions" in data:
            models = [data]
        else:
            self.recorded_versions[data["id"]] = data
            nested = {k: v for k, v in data.items() if k != "model"}
            models = [{"id": data["modelId"], **data.get("model", {}), "modelVersions": [nested]}]
        with self.lock:
            for model in models:
                self.recorded[model["id"]] = model
        return [m["id"] for m in models]

    def recorded_version(self, version_id: int) -> dict[str, Any] | None:
        """A recorded version as `/api/v1/model-versions/{id}` answers it."""
        if version_id in self.recorded_versions:
            return self.recorded_versions[version_id]
        for model in self.recorded.values():
            for v in model.get("modelVersions") or []:
                if v.get("id") == version_id:
                    keys = ("name", "type", "nsfw", "poi")
                    return {**v, "model": {k: model.get(k) for k in keys}}
        return None

    def find_version(self, version_id: int) -> tuple[ModelSpec, VersionSpec] | None:
        with self.lock:
            for model in self.models.values():
                for v in model.versions:
                    if v.id == version_id:
                        return model, v
        return None

    def fault(self, target: str, **kw: Any) -> Fault:
        f = Fault(target=target, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def take_fault(self, target: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.target == target and f.times > 0:
                    f.times -= 1
                    if f.times == 0:
                        self.faults.remove(f)
                    return f
        return None

    def expire_links(self) -> None:
        """Every signed CDN URL handed out so far now answers 403."""
        with self.lock:
            self.link_generation += 1

    def requests_to(self, server: str, path_prefix: str = "") -> list[Request]:
        with self.lock:
            return [
                r for r in self.requests if r.server == server and r.path.startswith(path_prefix)
            ]

    # JSON shapes (SPEC §13) -------------------------------------------------------------

    def file_json(self, model: ModelSpec, version: VersionSpec, f: FileSpec) -> dict[str, Any]:
        sha = f.published_sha256 or f.sha256
        data: dict[str, Any] = {
            "id": f.id,
            "sizeKB": (f.advertised_size or len(f.content)) / 1024,
            "name": f.name,
            "type": f.type,
            "pickleScanResult": "Success",
            "virusScanResult": "Success",
            "scannedAt": "2025-05-19T02:43:46.31",
            "metadata": {
                k: v for k, v in (("format", f.format), ("size", f.size), ("fp", f.fp)) if v
            },
            "hashes": {
                "AutoV1": sha[:8],
                "AutoV2": sha[:10],
                "SHA256": sha,
                "CRC32": f"{zlib.crc32(f.content):08X}",
                "BLAKE3": hashlib.blake2b(f.content, digest_size=32).hexdigest().upper(),
                "AutoV3": sha[-12:],
            },
            "downloadUrl": f"{self.base_url}/api/download/models/{version.id}"
            + ("" if f.primary else f"?type={f.type}&format={f.format}"),
        }
        if f.primary:  # Civitai leaves the key out on non-primary files
            data["primary"] = True
        return data

    def version_json(
        self, model: ModelSpec, version: VersionSpec, nested: bool = False
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": version.id,
            "modelId": model.id,
            "name": version.name,
            "createdAt": version.created_at,
            "updatedAt": version.created_at,
            "publishedAt": version.published_at,
            "status": "Published" if version.published_at else "Draft",
            "baseModel": version.base_model,
            "trainedWords": list(version.trained_words),
            "description": version.description,
            "files": [self.file_json(model, version, f) for f in version.files],
            "images": self.images_json(version),
            "downloadUrl": f"{self.base_url}/api/download/models/{version.id}",
        }
        if model.early_access:
            data["availability"] = "EarlyAccess"
        if version.usage_control is not None:
            data["usageControl"] = version.usage_control
        if version.early_access_until is not None:  # today's API: a deadline, kept once passed
            ends = datetime.fromtimestamp(version.early_access_until, UTC)
            data["earlyAccessEndsAt"] = ends.isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"
            )
            in_early_access = version.early_access_until > time.time()
            data["availability"] = "EarlyAccess" if in_early_access else "Public"
        if not nested:
            data["model"] = {
                "name": model.name,
                "type": model.type,
                "nsfw": model.nsfw,
                "poi": False,
            }
        return data

    def images_json(self, version: VersionSpec) -> list[dict[str, Any]]:
        if version.image_urls is not None:
            return [{"url": u, "nsfwLevel": 1, "type": "image"} for u in version.image_urls]
        if version.media is None:
            return [
                {
                    "url": f"{self.base_url}/img/{version.id}/{i}.png",
                    "nsfwLevel": version.nsfw_level,
                    "width": 1,
                    "height": 1,
                    "type": "image",
                }
                for i in range(version.images)
            ]
        return [
            {
                "url": self.image_url(f"{version.id:08x}-0000-4000-8000-{i:012x}", f"{i}.{fmt}"),
                "nsfwLevel": version.nsfw_level,
                "width": 8,
                "height": 6,
                "type": "video" if fmt == "mp4" else "image",
            }
            for i, fmt in enumerate(version.media)
        ]

    def image_url(self, uuid: str, name: str, options: str = "width=450") -> str:
        """An image on the fake's image host, like Civitai's: /<key>/<uuid>/<options>/<name>."""
        return f"{self.base_url}/{IMAGE_KEY}/{uuid}/{options}/{name}"

    def model_json(self, model: ModelSpec) -> dict[str, Any]:
        return {
            "id": model.id,
            "name": model.name,
            "description": "<p>fake</p>",
            "type": model.type,
            "nsfw": model.nsfw,
            "creator": {"username": model.creator},
            "tags": ["fake"],
            "modelVersions": [self.version_json(model, v, nested=True) for v in model.versions],
            **model.extra,
        }

    # CDN links --------------------------------------------------------------------------

    def _sign(self, file_id: int, expires: int, generation: int) -> str:
        msg = f"{file_id}:{expires}:{generation}".encode()
        return hmac.new(SIGNING_KEY, msg, hashlib.sha256).hexdigest()[:32]

    def signed_url(self, f: FileSpec) -> str:
        expires = int(time.time() + self.link_ttl)
        sig = self._sign(f.id, expires, self.link_generation)
        name = quote(f.name, safe="")
        return f"{self.cdn_url}/file/{f.id}/{name}?X-Expires={expires}&X-Signature={sig}"

    def check_signature(self, file_id: int, query: dict[str, list[str]]) -> bool:
        try:
            expires = int(query["X-Expires"][0])
            sig = query["X-Signature"][0]
        except (KeyError, ValueError):
            return False
        if expires < time.time():
            return False
        return hmac.compare_digest(sig, self._sign(file_id, expires, self.link_generation))

    def file_by_id(self, file_id: int) -> FileSpec | None:
        with self.lock:
            for model in self.models.values():
                for v in model.versions:
                    for f in v.files:
                        if f.id == file_id:
                            return f
        return None


# Civitai's model types, as `/api/v1/models?types=` takes them (another name is a 400).
CIVITAI_TYPES = (
    "Checkpoint",
    "TextualInversion",
    "Hypernetwork",
    "AestheticGradient",
    "LORA",
    "LoCon",
    "DoRA",
    "Controlnet",
    "Upscaler",
    "MotionModule",
    "VAE",
    "TextEncoder",
    "UNet",
    "CLIPVision",
    "Poses",
    "Wildcards",
    "Workflows",
    "ComfyWorkflows",
    "Detection",
    "VisionLanguage",
    "CLIP",
    "LLM",
    "Other",
)


def filtered(
    items: list[dict[str, Any]], types: list[str], base_models: list[str]
) -> list[dict[str, Any]]:
    """The models of one of `types` with a version of one of `base_models` (either empty: any)."""
    return [
        m
        for m in items
        if (not types or m.get("type") in types)
        and (
            not base_models
            or any(v.get("baseModel") in base_models for v in m.get("modelVersions") or [])
        )
    ]


def _stat(name: str) -> Any:
    return lambda m: (m.get("stats") or {}).get(name) or 0


def _newest(m: dict[str, Any]) -> tuple[str, int]:
    published = [str(v.get("publishedAt") or "") for v in m.get("modelVersions") or []]
    return max(published, default=""), m.get("id") or 0


# `sort=` as Civitai takes it → the key of its order, largest first (Civitai rates by thumbs up
# since 2024: `rating` is 0 in its answers).
SORTS: dict[str, Any] = {
    "Highest Rated": _stat("thumbsUpCount"),
    "Most Downloaded": _stat("downloadCount"),
    "Newest": _newest,
}
PERIOD_DAYS = {"AllTime": None, "Year": 365, "Month": 30, "Week": 7, "Day": 1}
PERIODS = tuple(PERIOD_DAYS)


def searched(items: list[dict[str, Any]], words: str, period: str) -> list[dict[str, Any]]:
    """The models whose name holds every word of `words` (any case) and, for a `period` other
    than AllTime, with a version published within it."""
    wanted = words.lower().split()
    days = PERIOD_DAYS[period]
    since = "" if days is None else (datetime.now(UTC) - timedelta(days=days)).isoformat()
    return [
        m
        for m in items
        if all(w in str(m.get("name") or "").lower() for w in wanted)
        and (not since or _newest(m)[0] >= since[:19])
    ]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeCivitai
    role: str
    protocol_version = "HTTP/1.1"
    server_version = "FakeCivitai/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.fake.lock:
            self.fake.open_connections[self.role] += 1

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.fake.lock:
                self.fake.open_connections[self.role] -= 1

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        try:
            if self.role == "api":
                self._api()
            else:
                self._cdn()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        """`POST /api/v1/model-versions/by-hash`: a JSON list of at most 100 SHA256 hashes; the
        published versions holding a file of one of them (civitai/civitai
        src/pages/api/v1/model-versions/by-hash/index.ts), in one answer; unknown ones are left
        out. A 400 for anything else, as Civitai's zod check answers."""
        self._record()
        length = int(self.headers.get("Content-Length") or 0)
        self.record.body = self.rfile.read(length) if length else b""
        if urlsplit(self.path).path != "/api/v1/model-versions/by-hash" or self.role != "api":
            return self._json(404, {"error": "Not found"})
        self.fake.by_hash_open.wait(30)  # a test holds the answer to stop a scan midway
        if self._apply_status_fault(self.fake.take_fault("api")):
            return
        try:
            hashes = json.loads(self.record.body)
            assert isinstance(hashes, list) and len(hashes) <= 100
            assert all(isinstance(h, str) and len(h) == 64 for h in hashes)
        except (ValueError, AssertionError):
            error = "Request must include an array of SHA256 Hashes."
            return self._json(400, {"error": error})
        wanted = {h.upper() for h in hashes}
        found = [
            self.fake.version_json(model, v)
            for model in list(self.fake.models.values())
            if not model.deleted
            for v in model.versions
            for f in v.files
            if f.sha256 in wanted
        ]
        self._json(200, found)

    def _record(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.record = Request(self.role, self.command, self.path, headers)
        with self.fake.lock:
            self.fake.requests.append(self.record)

    # Responses ----------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers=headers)

    def _apply_status_fault(self, fault: Fault | None) -> bool:
        """Answer with the fault's status or HTML page; True when the request is done."""
        if fault is None:
            return False
        if fault.challenge:
            headers = {"cf-mitigated": "challenge", "Cache-Control": "no-store"}
            self._send(403, CLOUDFLARE_HTML, "text/html; charset=UTF-8", headers)
            return True
        if fault.html:
            self._send(200 if fault.status is None else fault.status, CLOUDFLARE_HTML, "text/html")
            return True
        if fault.status is not None:
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            if fault.location is not None:
                headers["Location"] = fault.location
            body = (
                fault.body
                if fault.body is not None
                else json.dumps({"error": f"fake fault {fault.status}"}).encode()
            )
            self._send(fault.status, body, headers=headers)
            return True
        return False

    # API ----------------------------------------------------------------------------------

    def _api(self) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        if path.startswith("/api/download/models/"):
            return self._download(path, query)
        if path == "/login":
            return self._send(200, b"<html><body>Log in to Civitai</body></html>", "text/html")
        if path.startswith(("/img/", f"/{IMAGE_KEY}/", "/redirect")):
            return self._cdn()  # the image host; an open redirect as on the CDN
        if self._apply_status_fault(self.fake.take_fault("api")):
            return
        if m := re.fullmatch(r"/api/v1/models/(\d+)", path):
            if int(m[1]) in self.fake.recorded:
                return self._json(200, self.fake.recorded[int(m[1])])
            model = self.fake.models.get(int(m[1]))
            if model is None or model.deleted:
                return self._json(404, {"error": f"No model with id {m[1]}"})
            return self._json(200, self.fake.model_json(model))
        if path == "/api/v1/models":
            return self._models_list(query)
        if path == "/api/v1/creators":
            return self._creators(query)
        if m := re.fullmatch(r"/api/v1/model-versions/by-hash/([0-9A-Fa-f]+)", path):
            wanted = m[1].upper()
            for model in list(self.fake.models.values()):
                for v in model.versions:
                    for f in v.files:
                        if wanted in (f.sha256, f.sha256[:10]):
                            return self._json(200, self.fake.version_json(model, v))
            return self._json(404, {"error": f"Model not found for hash {m[1]}"})
        if m := re.fullmatch(r"/api/v1/model-versions/(\d+)", path):
            if (recorded := self.fake.recorded_version(int(m[1]))) is not None:
                return self._json(200, recorded)
            found = self.fake.find_version(int(m[1]))
            if found is None or found[0].deleted:
                return self._json(404, {"error": f"Model version not found {m[1]}"})
            return self._json(200, self.fake.version_json(*found))
        return self._json(404, {"error": "Not found"})

    def _models_list(self, query: dict[str, list[str]]) -> None:
        """`/api/v1/models`: by `ids`, by `username`, else every listed model (a search);
        filtered by `query` (words of the name), `types`, `baseModels`, `period`; in the order
        of `sort`. NSFW models only with `nsfw=true` (unless `leak_nsfw`), unlisted ones never;
        at most `limit` items a page (capped at `page_limit`), the rest behind `nextCursor` and
        `nextPage` as Civitai gives them."""
        ids = [int(i) for raw in query.get("ids", []) for i in raw.split(",") if i.strip()]
        nsfw = query.get("nsfw", [""])[0].lower() == "true" or self.fake.leak_nsfw
        items = []
        for i in ids:
            if i in self.fake.recorded:
                data = self.fake.recorded[i]
                if nsfw or not data.get("nsfw"):
                    items.append(data)
                continue
            model = self.fake.models.get(i)
            if model is None or model.deleted or not model.listed or (model.nsfw and not nsfw):
                continue
            items.append(self.fake.model_json(model))
        if query.get("username"):
            items = self._by_creator(query["username"][0], nsfw)
        elif not ids:
            items = self._everything(nsfw)
        bad = [t for t in query.get("types", []) if t not in CIVITAI_TYPES]
        sort = query.get("sort", ["Highest Rated"])[0]
        period = query.get("period", ["AllTime"])[0]
        if bad or sort not in SORTS or period not in PERIODS:  # Civitai's zod check: a 400
            what = f"type {bad[0]}" if bad else f"sort {sort}" if sort not in SORTS else period
            return self._json(400, {"error": {"issues": [{"message": f"Invalid {what}"}]}})
        items = filtered(items, query.get("types", []), query.get("baseModels", []))
        if tag := query.get("tag", [""])[0].lower():  # `tag=`: the models carrying that tag
            items = [m for m in items if tag in [str(t).lower() for t in m.get("tags") or []]]
        items = searched(items, query.get("query", [""])[0], period)
        if "sort" in query:  # else in the order the catalogue holds them, as before
            items = sorted(items, key=SORTS[sort], reverse=True)
        try:  # Civitai answers a limit or cursor it cannot read with its zod 400
            limit = min(int(query.get("limit", ["100"])[0]), self.fake.page_limit)
            cursor = query.get("cursor", [""])[0]
            start = int(cursor.split("|")[0]) if cursor else 0
        except ValueError:
            return self._json(400, {"error": {"issues": [{"message": "Invalid cursor"}]}})
        metadata: dict[str, Any] = {"currentPage": 1, "pageSize": limit}
        if start + limit < len(items):  # Civitai's cursors are opaque: "22138|364671|25494"
            metadata["nextCursor"] = f"{start + limit}|{len(items)}|fake"
            kept = [(k, v) for k, values in query.items() if k != "cursor" for v in values]
            next_query = urlencode([*kept, ("page", 1), ("cursor", metadata["nextCursor"])])
            metadata["nextPage"] = f"{self.fake.base_url}/api/v1/models?{next_query}"
        self._json(200, {"items": items[start : start + limit], "metadata": metadata})

    def _everything(self, nsfw: bool) -> list[dict[str, Any]]:
        """Every listed model, recorded ones first; NSFW ones only with `nsfw`."""
        made = [
            self.fake.model_json(m)
            for m in list(self.fake.models.values())
            if m.listed and not m.deleted
        ]
        return [m for m in [*self.fake.recorded.values(), *made] if nsfw or not m.get("nsfw")]

    def _by_creator(self, username: str, nsfw: bool) -> list[dict[str, Any]]:
        """`/api/v1/models?username=`: the creator's listed models (recorded ones by their
        `creator.username`), NSFW ones only with `nsfw=true`; an unknown name lists nothing."""
        name = username.lower()
        recorded = [
            m
            for m in self.fake.recorded.values()
            if str((m.get("creator") or {}).get("username", "")).lower() == name
        ]
        made = [
            self.fake.model_json(m)
            for m in list(self.fake.models.values())
            if m.creator.lower() == name and m.listed and not m.deleted
        ]
        return [m for m in recorded + made if nsfw or not m.get("nsfw")]

    def _creators(self, query: dict[str, list[str]]) -> None:
        """`/api/v1/creators?query=`: the creators whose name holds the query, with their
        model counts and the models link, as Civitai answers."""
        wanted = query.get("query", [""])[0].lower()
        counts: dict[str, int] = {}
        for m in self.fake.recorded.values():
            name = str((m.get("creator") or {}).get("username", ""))
            counts[name] = counts.get(name, 0) + 1
        for model in list(self.fake.models.values()):
            counts[model.creator] = counts.get(model.creator, 0) + 1
        items = [
            {
                "username": name,
                "modelCount": n,
                "link": f"{self.fake.base_url}/api/v1/models?username={quote(name)}",
            }
            for name, n in counts.items()
            if name and wanted in name.lower()
        ]
        self._json(200, {"items": items, "metadata": {"totalItems": len(items)}})

    def _download(self, path: str, query: dict[str, list[str]]) -> None:
        if "Mozilla" in self.headers.get("User-Agent", ""):
            return self._send(
                307, headers={"Location": f"{self.fake.base_url}/login?returnUrl={quote(path)}"}
            )
        if self._apply_status_fault(self.fake.take_fault("download")):
            return
        m = re.fullmatch(r"/api/download/models/(\d+)", path)
        found = self.fake.find_version(int(m[1])) if m else None
        if found is None:
            return self._json(404, {"error": "File not found"})
        model, version = found
        auth = self.headers.get("Authorization", "")
        token_ok = auth == f"Bearer {TOKEN}" or query.get("token") == [TOKEN]
        if auth and not token_ok:
            return self._json(401, {"error": "Unauthorized", "message": LOGIN_REQUIRED})
        if model.login_required and not token_ok:
            return self._json(401, {"error": "Unauthorized", "message": LOGIN_REQUIRED})
        if model.disabled or version.usage_control not in (None, "Download"):
            return self._json(401, {"error": "Unauthorized", "message": DISABLED})
        if model.early_access:
            return self._json(
                403, {"error": "Early Access", "deadline": "2099-01-01T00:00:00.000Z"}
            )
        if version.early_access_until is not None and version.early_access_until > time.time():
            deadline = self.fake.version_json(model, version)["earlyAccessEndsAt"]
            return self._json(403, {"error": "Early Access", "deadline": deadline})
        if model.forbidden is not None:
            return self._json(403, model.forbidden)
        if model.archived:
            return self._json(410, {"error": "Model archived"})
        files = version.files
        if "fileId" in query:
            files = [f for f in files if str(f.id) == query["fileId"][0]]
            if not files:
                return self._json(404, {"error": "File not found"})
        # Without fileId the real server picks by the user's preferences: here, the first file.
        return self._send(307, headers={"Location": self.fake.signed_url(files[0])})

    # CDN ----------------------------------------------------------------------------------

    def _cdn(self) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        if path.startswith("/img/"):
            return self._send(200, PNG, "image/png")
        if path.startswith(f"/{IMAGE_KEY}/"):
            return self._image(path)
        if path == "/redirect":  # an open redirect, as some file hosts have
            return self._send(302, headers={"Location": query["to"][0]})
        if m := re.fullmatch(r"/private/(\d+)/(.+)", path, re.S):
            return self._private(int(m[1]))
        m = re.fullmatch(r"/file/(\d+)/(.+)", path, re.S)
        f = self.fake.file_by_id(int(m[1])) if m else None
        if f is None:
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
        if "Authorization" in self.headers:
            # R2/B2 refuse a second credential beside the signature.
            return self._send(
                400, b"<Error><Code>InvalidArgument</Code></Error>", "application/xml"
            )
        if not self.fake.check_signature(f.id, query):
            return self._send(403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml")
        fault = self.fake.take_fault("cdn")
        if self._apply_status_fault(fault):
            return
        self._serve_bytes(f, fault)

    def _image(self, path: str) -> None:
        """Civitai's image CDN: the format the name says; a video's `anim=false` form a JPEG
        of its first frame, its plain form video bytes; a fault ("img") answers instead."""
        if self._apply_status_fault(self.fake.take_fault("img")):
            return
        self.fake.images_open.wait(30)  # a test holds image answers to make requests overlap
        options, name = path.split("/")[-2:]
        fmt = name.rsplit(".", 1)[-1].lower()
        size = self.fake.image_size
        if "anim=false" in options.split(","):
            return self._send(200, image_bytes("jpeg", GREEN, size), "image/jpeg")
        if fmt == "mp4":
            return self._send(200, MP4, "video/mp4")
        if fmt not in IMAGE_TYPES:
            return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
        self._send(200, image_bytes(fmt, RED, size), IMAGE_TYPES[fmt])

    def _private(self, file_id: int) -> None:
        """A file behind HTTP Basic auth, as a user's own file host serves it."""
        wanted = base64.b64encode(f"{PRIVATE_USER}:{PRIVATE_PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {wanted}":
            return self._send(401, b"login needed", "text/plain", {"WWW-Authenticate": "Basic"})
        f = self.fake.file_by_id(file_id)
        if f is None:
            return self._send(404, b"no such file", "text/plain")
        self._serve_bytes(f, self.fake.take_fault("cdn"))

    def _serve_bytes(self, f: FileSpec, fault: Fault | None) -> None:
        data, size = f.content, len(f.content)
        etag = f'"{f.sha256[:16].lower()}"'
        headers = {
            "ETag": etag,
            "Last-Modified": "Mon, 19 May 2025 02:43:46 GMT",
            "Accept-Ranges": "bytes",
        }
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        ignore = fault is not None and fault.ignore_range
        if rng and not ignore and (if_range is None or if_range == etag):
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m:
                start = int(m[1])
                if start >= size:
                    return self._send(
                        416, b"", "application/octet-stream", {"Content-Range": f"bytes */{size}"}
                    )
                end = min(int(m[2]), size - 1) if m[2] else size - 1
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        body = data[start : end + 1]
        if fault is not None and fault.corrupt:
            body = bytes(b ^ 0xFF for b in body[:64]) + body[64:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        # Raw UTF-8 in the header, as Civitai's CDN sends it (http.server would insist on latin-1).
        shown = "".join(c for c in f.name if c >= " " and c != '"')
        disposition = f'Content-Disposition: attachment; filename="{shown}"\r\n'
        self._headers_buffer.append(disposition.encode("utf-8"))
        self.end_headers()
        if self.command == "HEAD":
            return
        self._write_body(body, fault)

    def _write_body(self, body: bytes, fault: Fault | None) -> None:
        limit = fault.drop_after if fault and fault.drop_after is not None else None
        stall = fault.stall_after if fault and fault.stall_after is not None else None
        rate = (fault.rate if fault and fault.rate else None) or self.fake.default_rate
        chunk = 64 * 1024 if rate is None else max(1024, rate // 20)
        if rate and fault and fault.burst:  # a bursty slow link: a lump, then nothing for a while
            chunk = int(rate * fault.burst)
        sent, started = 0, time.monotonic()
        view = memoryview(body)
        while sent < len(body):
            if self.fake.stopping.is_set():
                break
            n = min(chunk, len(body) - sent)
            if limit is not None:
                n = min(n, limit - sent)
            if stall is not None:
                n = min(n, stall - sent)
            if n <= 0:
                break
            self.wfile.write(view[sent : sent + n])
            sent += n
            with self.fake.lock:
                self.fake.bytes_sent += n
                self.record.sent += n
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        if stall is not None and sent >= stall:
            self.wfile.flush()
            # Keep the socket open and silent until the client gives up or the fake stops.
            self.fake.stopping.wait(120)
        if sent < len(body):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
