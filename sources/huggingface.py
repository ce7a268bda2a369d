"""Hugging Face Hub files: which bytes (pinned to a commit), which hash, which token for which host.

A job `url` such as `https://huggingface.co/<repo>/resolve/<rev>/<path>` (or its `/blob/` form,
or under `/datasets/` or `/spaces/`) is resolved as huggingface_hub's `get_hf_file_metadata`
does (file_download.py): a HEAD with `Accept-Encoding: identity` that follows only redirects on
the Hub itself (a renamed repo, a revision name), never the one to the CDN; `X-Repo-Commit` pins
the download to `<hf_base_url>/<repo>/resolve/<commit>/<path>`, so the file cannot change
between attempts; `X-Linked-Size` (else Content-Length) is the size; `X-Linked-Etag` of an
LFS/Xet file is its SHA256. A file in git itself has no linked etag: its `ETag` is its git blob
SHA-1, `sha1("blob <size>" NUL content)` (huggingface_hub's file_download.py: `hf_hub_url`'s
docstring, "An object's ETag is: its git-sha1 if stored in git, or its sha256 if stored in
git-lfs"; `get_hf_file_metadata` takes `X-Linked-Etag` else `ETag`, and
`_get_metadata_or_catch_error` refuses a file without one, as it could not "reliably ensure
reproducibility"), so such a file is verified by that SHA-1 (`verified_by: "git-sha1"`) and its
size; by its size only when the Hub sends no SHA-1 ETag. HTTP answers become errors here
(utils/_http.py's `hf_raise_for_status`: `X-Error-Code` GatedRepo, RepoNotFound,
RevisionNotFound, EntryNotFound).

The token (hf_token, or HF_TOKEN) goes only to hf_base_url's origin: the CDN the Hub redirects
to gets none, as huggingface_hub drops `authorization` when the location's netloc differs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

import errors
from config.settings import Settings
from engine.jobs import JobRequest, safe_filename
from sources.civitai import USER_AGENT, CivitaiClient, Resolved, require_http, retry_after_seconds

log = logging.getLogger("civitai.huggingface")


class HubError(errors.DaemonError):
    status_code = 502


class HubGated(HubError):
    status_code = 403  # a retry helps once the licence is accepted and the token set

    def __init__(self, page: str, have_token: bool) -> None:
        why = "hf_token (or HF_TOKEN) has no access" if have_token else "no token is set"
        super().__init__(
            f"{page} is a gated or private repository and {why}: accept the licence on {page} "
            f"and set hf_token (or HF_TOKEN) to a token of that account, then retry the job."
        )


class HubNotFound(HubError):
    status_code = 404
    retry_blocked = "The Hugging Face Hub has no such repository, revision or file."

    def __init__(self, what: str) -> None:
        super().__init__(f"Not found on the Hugging Face Hub: {what}")


class GitBlobMismatch(errors.DownloadError):
    retry_blocked = (
        "The file was fetched twice and its git blob SHA-1 differed from the Hub's both times."
    )

    def __init__(self, expected: str, actual: str, kept: str) -> None:
        super().__init__(
            f"Git blob SHA-1 mismatch: expected {expected}, got {actual} (the Hub's ETag of a file "
            f"kept in git); the bytes are kept as {kept}."
        )


HUB_HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}
CDN_DOMAINS = (".huggingface.co", ".hf.co")
KINDS = {"datasets": "datasets/", "spaces": "spaces/"}
SHA256 = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
MAX_HOPS = 5  # redirects on the Hub itself (a renamed repo, a branch name) before giving up


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub repository at a revision (a branch, a tag, a commit)."""

    prefix: str  # "" for a model, "datasets/" or "spaces/"
    repo: str  # owner/name, or a bare name for old repos
    revision: str
    path: str  # inside the repo, folders included

    def resolve_path(self, revision: str | None = None) -> str:
        """Built from the decoded parts, each segment quoted: what was judged is what is sent."""
        rev = quote(revision or self.revision, safe="")
        repo = "/".join(quote(part, safe="") for part in self.repo.split("/"))
        path = "/".join(quote(part, safe="") for part in self.path.split("/"))
        return f"/{self.prefix}{repo}/resolve/{rev}/{path}"

    def page(self, base: str) -> str:
        """The repository's page, where a gated repo's licence is accepted."""
        return f"{base}/{self.prefix}{self.repo}"


def _segment_problem(decoded: str, slash_allowed: bool = False) -> str | None:
    """Why a decoded segment cannot stand in a Hub path: a server (or a proxy before it) that
    decodes it would walk up the path, to another file or another API with the token."""
    if "/" in decoded and not slash_allowed:
        return f"{decoded!r} has an encoded slash (%2F)"
    for part in decoded.split("/") if slash_allowed else [decoded]:
        if part in (".", ".."):
            return f"it has a {part!r} segment"
        if not part:
            return "it has an empty segment"
    return None


def parse_hub_path(path: str) -> HubFile | None:
    """A Hub file from a URL's (still quoted) path, or None when it names no file. Each segment
    is decoded before it is judged: ValueError for `.`, `..` or empty segments, or an encoded
    slash (`%2F`) anywhere but in the revision (huggingface_hub quotes `refs/pr/1` so)."""
    parts = path.split("/")[1:] if path.startswith("/") else path.split("/")
    prefix = ""
    if parts and parts[0] in KINDS:
        prefix, parts = KINDS[parts[0]], parts[1:]
    for size in (2, 1):  # owner/name first, then an old repo's bare name
        if len(parts) > size + 2 and parts[size] in ("resolve", "blob"):
            repo, rev, rest = parts[:size], unquote(parts[size + 1]), parts[size + 2 :]
            decoded = [unquote(p) for p in [*repo, *rest]]
            problems = [_segment_problem(p) for p in decoded] + [_segment_problem(rev, True)]
            if problem := next((p for p in problems if p), None):
                raise ValueError(problem)
            return HubFile(prefix, "/".join(decoded[:size]), rev, "/".join(decoded[size:]))
    return None


def is_hub_file(job: dict[str, Any], hf_base_url: str) -> bool:
    """A job whose bytes come from the Hub: its download URL is a pinned Hub file URL."""
    download = str(job.get("download_url") or "")
    base = hf_base_url.rstrip("/") + "/"
    return bool(job.get("url")) and download.startswith(base) and "/resolve/" in download


@dataclass(frozen=True)
class HubMeta:
    """What the Hub says of a file (huggingface_hub's HfFileMetadata)."""

    commit: str
    sha256: str | None  # an LFS/Xet file's X-Linked-Etag; None: a file in git
    size: int | None
    location: str  # the CDN URL of an LFS file, else the Hub URL that serves it
    git_sha1: str | None = None  # a file in git: its ETag, the git blob SHA-1


def normalize_etag(value: str | None) -> str | None:
    """`W/"abc"` → `abc`, as huggingface_hub's _normalize_etag."""
    if not value:
        return None
    return value.removeprefix("W/").strip('"').lower()


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


class HubClient:
    """Asks the Hub about files; owns the hf_token rule. Registers itself as one of the Civitai
    client's `sources`, whose host rules (allowed_hosts, check_redirect) it shares."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient, civitai: CivitaiClient):
        self.http = http
        self.civitai = civitai
        self.apply(settings)
        civitai.sources.append(self)

    def apply(self, settings: Settings) -> None:
        """Settings changed while running: the next request uses the new token and root."""
        self.settings = settings
        self.base_url = settings.hf_base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.host = (parts.hostname or "").lower()
        self.origin = (parts.scheme, self.host, parts.port)

    @property
    def token(self) -> str | None:
        t = self.settings.hf_token
        return t.get_secret_value() if t and t.get_secret_value() else None

    @property
    def local(self) -> bool:
        """hf_base_url is this machine or its network (a test's fake Hub): its CDN may be too."""
        if self.host == "localhost":
            return True
        try:
            return not ipaddress.ip_address(self.host).is_global
        except ValueError:
            return False

    def at_hub(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, (parts.hostname or "").lower(), parts.port) == self.origin

    def owns(self, url: str) -> bool:
        """A URL of the Hub: on huggingface.co (asked of hf_base_url), or on hf_base_url."""
        host = (urlsplit(url).hostname or "").lower()
        return host in HUB_HOSTS or self.at_hub(url)

    def headers_for(self, url: str) -> dict[str, str]:
        """The token only to hf_base_url's origin (scheme, host and port): never to the CDN."""
        if self.token and self.at_hub(url):
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def file_of(self, url: str) -> HubFile:
        try:
            found = parse_hub_path(urlsplit(url).path)
        except ValueError as exc:
            raise errors.InvalidRequest(
                f"{url} is not a Hugging Face file URL: {exc}; name the file itself, as "
                "https://huggingface.co/<owner>/<repo>/resolve/<revision>/<path>"
            ) from None
        if found is None:
            raise errors.InvalidRequest(
                f"{url} is not a Hugging Face file URL: use "
                f"https://huggingface.co/<owner>/<repo>/resolve/<revision>/<path> (or /blob/, "
                f"or under /datasets/ or /spaces/)"
            )
        return found

    # Asking the Hub -------------------------------------------------------------------------

    async def _head(self, url: str) -> httpx.Response:
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        return await self.ask("HEAD", url, headers=headers)

    async def ask(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One request to the Hub, its token added by `headers_for`, no redirect followed; a
        timeout or a failed connection as NetworkError."""
        headers = {**kw.pop("headers", {}), **self.headers_for(url)}
        try:
            return await self.http.request(
                method, url, headers=headers, follow_redirects=False, **kw
            )
        except httpx.TimeoutException as exc:
            raise errors.NetworkError(
                f"The Hugging Face Hub did not answer in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise errors.NetworkError(
                f"Cannot reach the Hugging Face Hub at {self.host}: {exc}"
            ) from None

    async def metadata(self, f: HubFile, revision: str | None = None) -> HubMeta:
        """HEAD on the file, following only redirects on the Hub itself."""
        url = self.base_url + f.resolve_path(revision)
        for _ in range(MAX_HOPS):
            response = await self._head(url)
            location = response.headers.get("location")
            if response.is_redirect and location:
                target = str(response.url.join(location))
                if self.at_hub(target):
                    url = target  # a renamed repo or a revision name: ask again, token kept
                    continue
            if (error := self.error_for(response, f)) is not None:
                raise error
            commit = response.headers.get("x-repo-commit")
            if not commit or not re.fullmatch(r"[0-9a-f]{40}", commit):
                raise HubError(
                    f"{url} did not answer with the commit (X-Repo-Commit) the Hub sends; "
                    f"check that hf_base_url is the Hugging Face Hub"
                )
            linked = normalize_etag(response.headers.get("x-linked-etag"))
            size = _int(response.headers.get("x-linked-size")) or _int(
                response.headers.get("content-length")
            )
            target = str(response.url.join(location)) if response.is_redirect and location else url
            sha = linked if linked and SHA256.match(linked) else None
            etag = normalize_etag(response.headers.get("etag"))
            blob = etag if sha is None and etag and GIT_SHA1.match(etag) else None
            return HubMeta(commit, sha, size, target, blob)
        raise errors.NetworkError(f"The Hugging Face Hub redirected {url} too many times")

    def error_for(self, response: httpx.Response, f: HubFile) -> errors.DaemonError | None:
        """An answer of the Hub as our error (hf_raise_for_status), or None for a success."""
        status = response.status_code
        if status < 400:
            return None
        code = response.headers.get("x-error-code", "")
        page = f.page(self.base_url)
        if code == "GatedRepo" or (status == 401 and not self.token and code != "RepoNotFound"):
            return HubGated(page, self.token is not None)
        if code == "RepoNotFound" or (status == 401 and code != "EntryNotFound"):
            why = (
                "or it is private and hf_token has no access"
                if self.token
                else ("or it is private: set hf_token (or HF_TOKEN)")
            )
            return HubNotFound(f"no repository {f.prefix}{f.repo} ({why})")
        if code == "RevisionNotFound":
            return HubNotFound(f"{f.prefix}{f.repo} has no revision {f.revision!r}")
        if code == "EntryNotFound" or status == 404:
            return HubNotFound(f"{f.prefix}{f.repo} has no file {f.path!r} at {f.revision}")
        if status == 403:
            return HubGated(page, self.token is not None)
        if status == 429:
            return errors.RateLimited(retry_after_seconds(response), "The Hugging Face Hub")
        if status >= 500:
            return errors.ServerError(status, where="The Hugging Face Hub")
        return HubError(f"The Hugging Face Hub answered {status} for {f.path}")

    async def resolve(self, request: JobRequest) -> Resolved:
        """The file a Hub URL means, pinned to the commit its revision names now."""
        assert request.url
        host = (urlsplit(request.url).hostname or "").lower().rstrip(".")
        if not (self.at_hub(request.url) or self.civitai.host_allowed(host)):
            raise errors.HostNotAllowed(host, self.settings.allowed_hosts)
        f = self.file_of(request.url)
        meta = await self.metadata(f)
        pinned = self.base_url + f.resolve_path(meta.commit)
        if request.sha256 and meta.sha256 and request.sha256 != meta.sha256:
            raise errors.InvalidRequest(
                f"{f.path} at {f.revision} is another file now (SHA256 {meta.sha256}), not the "
                f"sha256 asked ({request.sha256}): leave sha256 out to take it, or ask for the "
                f"commit that had it"
            )
        sha = request.sha256 or meta.sha256
        name = request.filename or safe_filename(f.path.rsplit("/", 1)[-1])
        log.info(
            "%s%s %s at %s: commit %s, %s bytes, %s",
            f.prefix,
            f.repo,
            f.path,
            f.revision,
            meta.commit,
            meta.size,
            f"sha256 {sha}" if sha else f"git blob SHA-1 {meta.git_sha1 or 'not sent (size only)'}",
        )
        return Resolved(
            download_url=pinned,
            filename=name,
            size=meta.size,
            sha256=sha,
            model_name=f"{f.prefix}{f.repo}",
            version_name=f"{f.revision}@{meta.commit[:12]}",
            exact_size=True,
            git_sha1=None if sha else meta.git_sha1,
        )

    async def cdn_link(self, pinned_url: str) -> str:
        """Where the bytes of a pinned Hub URL are now: the CDN's signed (expiring) URL of an
        LFS file, else the Hub URL itself. Asked again when the CDN refuses an old link."""
        f = self.file_of(pinned_url)
        meta = await self.metadata(f)
        if not self.at_hub(meta.location):
            await self.check_cdn(meta.location)
        return meta.location

    async def check_cdn(self, url: str) -> None:
        """The CDN the Hub sends a download to: https, and an allowed host or a public address;
        any http(s) address when hf_base_url itself is local (a fake Hub in a test)."""
        require_http(url)
        if self.local:
            return
        host = (urlsplit(url).hostname or "").lower()
        if urlsplit(url).scheme != "https":
            raise HubError(f"The Hub sent the download to {host} over plain http; refused")
        if host.endswith(CDN_DOMAINS):
            return  # the Hub's own CDNs (cdn-lfs.huggingface.co, cas-bridge.xethub.hf.co)
        await self.civitai.check_redirect(url)


def blob_sha1(path: os.PathLike[str] | str) -> str:
    """A file's git blob id, as the Hub's ETag of a file kept in git: sha1("blob <size>\\0" +
    content). Never read through a link."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        digest = hashlib.sha1(b"blob %d\0" % os.fstat(fd).st_size)
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
