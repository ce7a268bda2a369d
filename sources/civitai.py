"""The Civitai API client: where Civitai's HTTP answers become our errors (SPEC §13)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

import errors
from config.settings import Settings
from engine.jobs import JobRequest, safe_filename
from sources.versions import is_model_file, newest_version, usable_files

log = logging.getLogger("civitai.client")

# Civitai's model types as `/api/v1/models?types=` takes them (another name is Civitai's 400):
# its `ModelType` enum (civitai/civitai packages/civitai-db-schema/src/enums.ts), in its order;
# tests/test_civitai_types.py checks this against the copy in tests/fixtures.
LIST_TYPES = (
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

USER_AGENT = "civitai-daemon/0.1 (self-hosted model downloader; +https://github.com/)"
CIVITAI_HOSTS = {
    "civitai.com",
    "www.civitai.com",
    "api.civitai.com",
    "civitai.green",  # Civitai's safe-for-work site
    "www.civitai.green",
    "civitai.red",  # Civitai's NSFW site since 2026
    "www.civitai.red",
}
T = TypeVar("T")
MAX_PAGES = 20  # of one batch of ids: a cursor that never ends stops here
BY_HASH_PATH = "/api/v1/model-versions/by-hash"
BY_HASH_BATCH = 100  # the most SHA256s Civitai takes in one by-hash POST


@dataclass
class Resolved:
    """Where a job's bytes come from and what they must hash to."""

    download_url: str
    filename: str | None
    model_id: int | None = None
    version_id: int | None = None
    file_id: int | None = None
    size: int | None = None
    sha256: str | None = None
    model_name: str | None = None
    version_name: str | None = None
    info: dict[str, Any] | None = field(default=None, repr=False)
    exact_size: bool = False  # `size` is the file's size in bytes (not Civitai's rounded KB)
    git_sha1: str | None = None  # a Hugging Face file kept in git: its git blob SHA-1 (ETag)

    @property
    def verified_by(self) -> str | None:
        """What the bytes are checked against: "sha256", "git-sha1" (the git blob SHA-1 and the
        exact size), "size" (exact, no hash), or None."""
        if self.sha256:
            return "sha256"
        if self.git_sha1:
            return "git-sha1"
        return "size" if self.exact_size and self.size else None

    @property
    def dedupe_key(self) -> str:
        if self.version_id:
            return f"civitai:{self.version_id}:{self.file_id or 'primary'}"
        return f"url:{self.download_url}"


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_for(response: httpx.Response, have_token: bool) -> errors.DaemonError | None:
    """The error an answer of Civitai stands for, or None when it is a success."""
    status = response.status_code
    if status < 400:
        return None
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            said = body.get("message") or body.get("error") or ""
            if isinstance(said, dict):  # zod's check of a query: {"issues": [{"message": …}]}
                issues = [i for i in said.get("issues") or [] if isinstance(i, dict)]
                said = "; ".join(str(i.get("message")) for i in issues) or said
            message = str(said)
    except ValueError:
        body = None
    if status == 401:
        if "disabled downloads" in message:
            return errors.DownloadsDisabled()
        return errors.TokenRequired(have_token)
    if status == 403:
        page = "html" in response.headers.get("content-type", "")
        if response.headers.get("cf-mitigated") == "challenge" or page:
            return errors.CloudflareChallenge()  # Cloudflare's page, not Civitai's answer
        if isinstance(body, dict) and "early access" in str(body.get("error", "")).lower():
            return errors.EarlyAccess(body.get("deadline"))
        if "disabled downloads" in message:
            return errors.DownloadsDisabled()
        return errors.NoAccess(message, have_token)
    if status == 404:
        return errors.FileNotFound(message or response.request.url.path)
    if status == 410:
        return errors.Archived()
    if status == 429:
        return errors.RateLimited(retry_after_seconds(response))
    if status >= 500:
        return errors.ServerError(status)
    return errors.CivitaiError(f"Civitai answered {status}: {message or response.reason_phrase}")


def require_http(url: str) -> None:
    """A redirect may lead only to http(s): file://, ftp:// and the like fail at once (no
    attempt can ever succeed), not after every retry."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise errors.SchemeRefused(scheme or "(no scheme)")


def backoff(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter: attempt 1 → up to 1 s, 2 → 2 s, 3 → 4 s, …"""
    return random.uniform(base / 2, min(cap, base * 2 ** (attempt - 1)))


async def with_retries(
    fn: Callable[[], Awaitable[T]], attempts: int = 4, base: float = 1.0, max_wait: float = 120
) -> T:
    """Call `fn` until it succeeds or fails for good; honours Retry-After on 429."""
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except errors.DaemonError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            wait = exc.retry_after if exc.retry_after is not None else backoff(attempt, base)
            log.info("retrying in %.1f s: %s", min(wait, max_wait), exc)
            await asyncio.sleep(min(wait, max_wait))
    raise AssertionError("unreachable")


def pick_file(version: dict[str, Any], file_id: int | None, **match: str) -> dict[str, Any]:
    """The file a request means: `fileId`, else one matching the download URL's query, else
    the primary model file (Civitai may leave the `primary` key out), else the first model file.
    Training data is never picked unless the request names it: a version's only "primary" file
    can be a training-data zip."""
    files = version.get("files") or []
    if not files:
        raise errors.FileNotFound(f"version {version.get('id')} has no files")
    if file_id is not None:
        for f in files:
            if f.get("id") == file_id:
                return f
        ids = ", ".join(str(f.get("id")) for f in files)
        raise errors.FileNotFound(
            f"version {version.get('id')} has no file {file_id} (its files: {ids})"
        )
    if match:
        for f in files:
            meta = f.get("metadata") or {}
            fields = {"type": f.get("type"), **{k: meta.get(k) for k in ("format", "size", "fp")}}
            if all(str(fields.get(k) or "").lower() == v.lower() for k, v in match.items()):
                return f
    usable = usable_files(version)
    if not usable:
        raise errors.OnlyTrainingData(version.get("id"), files)
    models = [f for f in usable if is_model_file(f)]
    for group in (models, usable):
        for f in group:
            if f.get("primary"):
                return f
        if group:
            return group[0]
    raise AssertionError("unreachable")


def next_cursor(metadata: Any) -> str | None:
    """Civitai's `metadata.nextCursor`, else the `cursor` of its `metadata.nextPage` URL."""
    if not isinstance(metadata, dict):
        return None
    cursor = metadata.get("nextCursor")
    if cursor not in (None, ""):
        return str(cursor)
    page = metadata.get("nextPage")
    if isinstance(page, str) and page:
        found = parse_qs(urlsplit(page).query).get("cursor")
        if found and found[0]:
            return found[0]
    return None


def list_page(data: Any) -> tuple[list[dict[str, Any]], str | None]:
    """A list answer's items (the objects among them) and its next cursor; NotJSON when it is
    not of that shape (a JSON array, a string, `items` or `metadata` of the wrong type)."""
    items = data.get("items") if isinstance(data, dict) else None
    metadata = data.get("metadata") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(items, list | None):
        raise errors.NotJSON("an answer that is not a list of items")
    if not isinstance(metadata, dict | None):
        raise errors.NotJSON("an answer whose metadata is not an object")
    return [i for i in items or [] if isinstance(i, dict)], next_cursor(metadata)


class CivitaiClient:
    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self.http = http
        # Other sources of job URLs (sources/): each `owns(url)`, `resolve(request)`, and
        # gives `headers_for(url)` its own token for its own host.
        self.sources: list[Any] = []
        self.apply(settings)

    def source_for(self, url: str | None) -> Any | None:
        """The source (sources/) a URL belongs to, or None: Civitai's or a direct one. Asked
        first: a source's own address (origin and port) is never Civitai's."""
        if not url:
            return None
        return next((s for s in self.sources if s.owns(url)), None)

    def apply(self, settings: Settings) -> None:
        """Settings changed while running: the next request uses the new token and root."""
        self.settings = settings
        self.base_url = settings.civitai_base_url.rstrip("/")
        self.host = urlsplit(self.base_url).hostname or "civitai.com"
        self.hosts = CIVITAI_HOSTS | {self.host}

    @property
    def token(self) -> str | None:
        t = self.settings.civitai_token
        return t.get_secret_value() if t and t.get_secret_value() else None

    def headers_for(self, url: str) -> dict[str, str]:
        """Our User-Agent everywhere; the token only to the Civitai host itself."""
        headers = {"User-Agent": USER_AGENT}
        if (source := self.source_for(url)) is not None:
            headers.update(source.headers_for(url))  # its token to its own host only
        elif self.token and urlsplit(url).hostname == self.host:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def is_civitai_url(self, url: str) -> bool:
        return (urlsplit(url).hostname or "").lower() in self.hosts

    # JSON API ---------------------------------------------------------------------------

    async def get_json(
        self, path: str, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """Civitai's JSON answer to a GET of `path`, or to a POST of `body` when one is given."""
        url = f"{self.base_url}{path}"
        headers = self.headers_for(url)
        try:
            if body is None:
                response = await self.http.get(url, params=params, headers=headers)
            else:
                response = await self.http.post(url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise errors.NetworkError(
                f"Civitai did not answer in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise errors.NetworkError(f"Cannot reach Civitai at {self.host}: {exc}") from None
        error = error_for(response, self.token is not None)
        if error is not None:
            raise error
        content_type = response.headers.get("content-type", "")
        if "json" not in content_type:
            raise errors.NotJSON(
                "an HTML page" if "html" in content_type else content_type or "no data"
            )
        try:
            return response.json()
        except ValueError:
            raise errors.NotJSON("broken JSON") from None

    async def get_model(self, model_id: int) -> dict[str, Any]:
        try:
            return await self.get_json(f"/api/v1/models/{model_id}")
        except errors.NotFoundOnCivitai:
            raise errors.ModelNotFound(model_id) from None

    async def get_models(self, ids: list[int]) -> tuple[list[dict[str, Any]], int]:
        """Up to 100 models by id, NSFW ones included (Civitai hides them without `nsfw=true`),
        following the cursor when Civitai answers over more than one page; and the number of
        requests that took."""
        params: dict[str, Any] = {"ids": ",".join(map(str, ids)), "limit": 100, "nsfw": "true"}
        items: list[dict[str, Any]] = []
        async for page, found, more in self.model_pages(params, MAX_PAGES):
            items += found
            if not more:
                return items, page
        log.warning("models %s..%s: more than %d pages; the rest not read", ids[0], ids[-1], page)
        return items, MAX_PAGES

    async def model_pages(
        self, params: dict[str, Any], max_pages: int, path: str = "/api/v1/models"
    ) -> AsyncIterator[tuple[int, list[dict[str, Any]], bool]]:
        """Each page of a Civitai list, following its cursor, at most `max_pages` of them:
        (page number from 1, its items, whether Civitai offers another). A cursor seen before
        ends the walk, as one that never ends would loop."""
        seen: set[str] = set()
        for page in range(1, max_pages + 1):
            items, cursor = list_page(await self.get_json(path, params))
            more = cursor is not None and cursor not in seen
            yield page, items, more
            if not more:
                return
            seen.add(cursor)
            params = {**params, "cursor": cursor}

    async def get_version(self, version_id: int) -> dict[str, Any]:
        try:
            return await self.get_json(f"/api/v1/model-versions/{version_id}")
        except errors.NotFoundOnCivitai:
            raise errors.ModelVersionNotFound(version_id) from None

    async def by_hash(self, sha256: str) -> dict[str, Any] | None:
        try:
            return await self.get_json(f"/api/v1/model-versions/by-hash/{sha256}")
        except errors.NotFoundOnCivitai:
            return None

    async def by_hashes(self, hashes: list[str]) -> dict[str, dict[str, Any]]:
        """SHA256 (lower case) → the version holding a file of it, for up to 100 hashes in one
        `POST /api/v1/model-versions/by-hash` (civitai/civitai src/pages/api/v1/model-versions/
        by-hash/index.ts: a JSON list in, the published versions found out)."""
        found: dict[str, dict[str, Any]] = {}
        answer = await self.get_json(BY_HASH_PATH, body=[h.upper() for h in hashes])
        for version in answer if isinstance(answer, list) else []:
            for f in (version.get("files") or []) if isinstance(version, dict) else []:
                sha = str(((f.get("hashes") or {}).get("SHA256")) or "").lower()
                if sha in hashes:
                    found.setdefault(sha, version)
        return found

    # Resolution -------------------------------------------------------------------------

    def parse_url(self, url: str) -> tuple[int | None, int | None, int | None, dict[str, str]]:
        """(modelId, modelVersionId, fileId, file match) from a civitai.com page or download URL."""
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = unquote(parts.path)
        if m := re.fullmatch(r"/models/(\d+)(?:/[^/]*)?/?", path):
            version = query.get("modelVersionId")
            return int(m[1]), int(version) if version and version.isdigit() else None, None, {}
        if m := re.fullmatch(r"/api/download/models/(\d+)/?", path):
            file_id = query.get("fileId")
            match = {k: query[k] for k in ("type", "format", "size", "fp") if k in query}
            return None, int(m[1]), int(file_id) if file_id and file_id.isdigit() else None, match
        raise errors.InvalidRequest(
            f"{url} is not a Civitai model page (…/models/ID) or download URL "
            f"(…/api/download/models/VERSION_ID)"
        )

    async def resolve(self, request: JobRequest) -> Resolved:
        """Ask Civitai which file a request means, its name, size and SHA256."""
        model_id, version_id, file_id, match = (
            request.modelId,
            request.modelVersionId,
            request.fileId,
            {},
        )
        if request.url and not (model_id or version_id):
            if (source := self.source_for(request.url)) is not None:
                return await source.resolve(request)
            if not self.is_civitai_url(request.url):
                return self.resolve_direct(request)
            model_id, version_id, url_file, match = self.parse_url(request.url)
            file_id = file_id or url_file
        if version_id:
            version = await self.get_version(version_id)
            model = version.get("model") or {}
            model_id = model_id or version.get("modelId")
        else:
            assert model_id is not None
            model = await self.get_model(model_id)
            newest = newest_version(model)
            if newest is None:
                raise errors.NoDownloadableVersion(model_id)
            version = {**newest, "model": {"name": model.get("name"), "type": model.get("type")}}
        f = pick_file(version, file_id, **match)
        sha = (f.get("hashes") or {}).get("SHA256")
        size_kb = f.get("sizeKB")
        return Resolved(
            download_url=f"{self.base_url}/api/download/models/{version['id']}?fileId={f['id']}",
            filename=request.filename or safe_filename(f.get("name") or "", f"{version['id']}.bin"),
            model_id=model_id,
            version_id=version["id"],
            file_id=f["id"],
            size=round(size_kb * 1024) if isinstance(size_kb, int | float) else None,
            sha256=request.sha256 or (sha.lower() if sha else None),
            model_name=model.get("name"),
            version_name=version.get("name"),
            info=version,
        )

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        allowed = [h.lower() for h in self.settings.allowed_hosts]
        return any(host == h or host.endswith("." + h) for h in allowed)

    async def check_redirect(self, url: str) -> None:
        """A redirect of a direct download: to an allowed host, or to a public address."""
        host = (urlsplit(url).hostname or "").lower()
        if self.host_allowed(host):
            return
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, None)
            except OSError:
                raise errors.NetworkError(f"Cannot resolve {host}") from None
            addresses = [ipaddress.ip_address(i[4][0]) for i in infos]
        if host == "localhost" or any(not a.is_global for a in addresses):
            raise errors.RedirectRefused(host)

    def resolve_direct(self, request: JobRequest) -> Resolved:
        """A direct file URL: allowed only from allowed_hosts."""
        assert request.url
        host = (urlsplit(request.url).hostname or "").lower().rstrip(".")
        if not self.host_allowed(host):
            raise errors.HostNotAllowed(host, self.settings.allowed_hosts)
        name = request.filename
        if not name:
            tail = unquote(urlsplit(request.url).path.rsplit("/", 1)[-1])
            name = safe_filename(tail) if tail else None
        return Resolved(download_url=request.url, filename=name, sha256=request.sha256)

    async def signed_link(self, download_url: str) -> str:
        """Ask Civitai's download endpoint for the signed CDN URL (one hit on the daily quota)."""
        url = download_url
        for _ in range(5):
            try:
                request = self.http.build_request("GET", url, headers=self.headers_for(url))
                response = await self.http.send(request, follow_redirects=False, stream=True)
            except httpx.TimeoutException:
                raise errors.NetworkError(
                    "Civitai's download endpoint did not answer in time"
                ) from None
            except httpx.TransportError as exc:
                raise errors.NetworkError(f"Cannot reach Civitai at {self.host}: {exc}") from None
            try:
                if response.is_redirect:
                    location = str(response.url.join(response.headers["location"]))
                    require_http(location)
                    if "/login" in urlsplit(location).path:
                        raise errors.TokenRequired(self.token is not None)
                    if urlsplit(location).hostname == self.host:
                        url = location  # an internal hop; keep asking Civitai
                        continue
                    return location
                if response.status_code >= 400:
                    await response.aread()
                    error = error_for(response, self.token is not None)
                    assert error is not None
                    raise error
                return url  # served directly, no CDN hop
            finally:
                await response.aclose()
        raise errors.NetworkError("Civitai's download endpoint redirected too many times")
