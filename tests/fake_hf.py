"""A fake Hugging Face Hub over real HTTP, answering `resolve` as huggingface.co does.

Two real servers on loopback: the Hub (127.0.0.1) and a CDN on a *different host* (127.0.0.3,
another port), as huggingface.co and its LFS/Xet CDN are. HEAD or GET on
`/<repo>/resolve/<rev>/<path>` (also under `/datasets/` and `/spaces/`):

- an LFS file: 302 to the CDN, a signed URL that expires, with `X-Repo-Commit`,
  `X-Linked-Etag` (the file's SHA256, quoted) and `X-Linked-Size`;
- a file kept in git: 200 with the bytes from the Hub itself, `ETag` its git blob SHA-1;
- a renamed repository: 307 to the new name (a relative Location, as the Hub does);
- a gated repository: 401 `X-Error-Code: GatedRepo` without a token, 403 with a token that has
  no access; an unknown repo 401 `RepoNotFound`; 404 `RevisionNotFound` / `EntryNotFound`.

The Hub's API as huggingface_hub reads it (src/huggingface_hub/hf_api.py; the shapes are the
keys its `ModelInfo.__init__` and `RepoSibling` read, no recorded answer):

- `GET /api/models?search=&sort=downloads&limit=` (`HfApi.list_models`): the model repos whose id
  holds `search` (case-insensitive), most downloaded first, each `{_id, id, modelId, likes,
  downloads, private, tags, library_name, createdAt}`; no `sha` and no `siblings`, as the Hub
  lists them without `full`/`expand`;
- `GET /api/models/<repo>[/revision/<rev>]?blobs=true` (`HfApi.model_info(files_metadata=True)`):
  `{…, sha, gated, siblings: [{rfilename, size, blobId, lfs?: {sha256, size, pointerSize}}]}`
  (without `blobs` only `rfilename`); 401 `RepoNotFound` for an unknown repo. A gated repo's
  info is public, as on the Hub; only its files need the token.

The CDN refuses any `Authorization` header (a signed URL must not carry a token), honours Range
and If-Range, and answers 403 to an expired link. `upload` makes a new commit on `main`, so a
test can move `main` while a download runs; old commits keep their files.

    hub = FakeHub().start()
    hub.add_repo("acme/vae", {"vae.safetensors": b"..."})
    hub.fault("cdn", drop_after=1000)         # the next CDN answer dies after 1000 bytes
    hub.fault("hub", serve=b"other", get_only=True)  # the next GET of a git file, other bytes
    hub.upload("acme/vae", "vae.safetensors", b"new")   # main moves to a new commit
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

TOKEN = "hf_fake_token_with_access_0123456789"
NO_ACCESS_TOKEN = "hf_fake_token_without_access_98765"
SIGNING_KEY = b"fake-hf-cdn-key"
LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf", ".onnx", ".parquet")


def git_blob_sha1(content: bytes) -> str:
    """The ETag the Hub gives a file kept in git: its git blob id."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Fault:
    target: str  # "hub" (resolve answers), "cdn" (file bytes) or "api" (/api/models answers)
    status: int | None = None
    error_code: str | None = None
    drop_after: int | None = None  # close the connection after this many body bytes
    corrupt: bool = False  # flip the first bytes of the body
    serve: bytes | None = None  # send these bytes instead of the file's (headers still its own)
    get_only: bool = False  # leave HEAD answers alone: the size and ETag the Hub announces hold
    rate: int | None = None  # bytes/s of this answer
    times: int = 1


@dataclass
class Request:
    server: str
    method: str
    path: str
    headers: dict[str, str]
    sent: int = 0


@dataclass
class Repo:
    gated: bool = False
    lfs: set[str] = field(default_factory=set)  # paths kept in LFS
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit → tree
    branches: dict[str, str] = field(default_factory=dict)  # main → commit
    downloads: int = 0  # the Hub's 30-day count: list_models(sort="downloads") orders by it


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class FakeHub:
    def __init__(self, cdn_host: str = "127.0.0.3") -> None:
        self.cdn_host = cdn_host
        self.repos: dict[str, Repo] = {}  # "datasets/acme/x", "acme/x", "gpt2"
        self.renamed: dict[str, str] = {}  # old repo id → new
        self.blobs: dict[str, bytes] = {}  # sha256 → bytes
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self.rate: int | None = None  # CDN bytes/s per answer, for every answer
        self.link_ttl = 3600.0
        self.git_etags = True  # False: a file kept in git is served with no ETag at all
        self.link_generation = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._servers: list[_Server] = []
        self._commits = 0

    def start(self) -> FakeHub:
        hub = self._serve("127.0.0.1", "hub")
        try:
            cdn = self._serve(self.cdn_host, "cdn")
        except OSError:
            self.cdn_host = "127.0.0.1"
            cdn = self._serve(self.cdn_host, "cdn")
        self.base_url = f"http://127.0.0.1:{hub.server_address[1]}"
        self.cdn_url = f"http://{self.cdn_host}:{cdn.server_address[1]}"
        return self

    def _serve(self, host: str, role: str) -> _Server:
        handler = type(f"hf{role}Handler", (_Handler,), {"fake": self, "role": role})
        server = _Server((host, 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._servers.append(server)
        return server

    def stop(self) -> None:
        self.stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Repositories -------------------------------------------------------------------------

    def _new_commit(self) -> str:
        self._commits += 1
        return hashlib.sha1(b"commit %d" % self._commits).hexdigest()

    def add_repo(
        self,
        repo: str,
        files: dict[str, bytes],
        gated: bool = False,
        lfs: set[str] | None = None,
        kind: str = "",
        downloads: int = 0,
    ) -> str:
        """A repository with one commit on main; `kind` "datasets/" or "spaces/". Paths ending
        in a model suffix are in LFS unless `lfs` names them. Returns the commit."""
        lfs = {p for p in files if p.endswith(LFS_SUFFIXES)} if lfs is None else lfs
        with self.lock:
            commit = self._new_commit()
            self.repos[kind + repo] = Repo(
                gated, lfs, {commit: dict(files)}, {"main": commit}, downloads
            )
            for path in lfs:
                self.blobs[hashlib.sha256(files[path]).hexdigest()] = files[path]
        return commit

    def upload(self, repo: str, path: str, content: bytes, kind: str = "") -> str:
        """Re-upload a file: a new commit on main; older commits keep their files."""
        with self.lock:
            spec = self.repos[kind + repo]
            commit = self._new_commit()
            spec.commits[commit] = {**spec.commits[spec.branches["main"]], path: content}
            spec.branches["main"] = commit
            if path in spec.lfs:
                self.blobs[hashlib.sha256(content).hexdigest()] = content
        return commit

    def commit_of(self, repo: str, branch: str = "main", kind: str = "") -> str:
        with self.lock:
            return self.repos[kind + repo].branches[branch]

    def fault(self, target: str, **kw: Any) -> Fault:
        f = Fault(target=target, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def take_fault(self, target: str, method: str = "GET") -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.get_only and method != "GET":
                    continue
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

    def requests_to(self, server: str, path_part: str = "") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.server == server and path_part in r.path]

    def sign(self, sha: str) -> str:
        expires = int(time.time() + self.link_ttl)
        msg = f"{sha}:{expires}:{self.link_generation}".encode()
        sig = hmac.new(SIGNING_KEY, msg, "sha256").hexdigest()
        return f"{self.cdn_url}/blobs/{sha}?Expires={expires}&g={self.link_generation}&sig={sig}"

    def link_valid(self, sha: str, query: dict[str, str]) -> bool:
        try:
            expires, generation = int(query["Expires"]), int(query["g"])
        except (KeyError, ValueError):
            return False
        msg = f"{sha}:{expires}:{generation}".encode()
        good = hmac.new(SIGNING_KEY, msg, "sha256").hexdigest()
        return (
            hmac.compare_digest(good, query.get("sig", ""))
            and expires > time.time()
            and generation == self.link_generation
        )


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    role: str
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.record = Request(self.role, self.command, self.path, headers)
        with self.fake.lock:
            self.fake.requests.append(self.record)
        try:
            self._hub() if self.role == "hub" else self._cdn()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_HEAD = do_GET  # noqa: N815

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, message.encode(), headers)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _api(self) -> None:
        """`/api/models` (list_models) and `/api/models/<repo>[/revision/<rev>]` (model_info)."""
        fault = self.fake.take_fault("api", self.command)
        if fault is not None and fault.status:
            return self._error(fault.status, fault.error_code or "", "injected")
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        rest = [unquote(p) for p in url.path.removeprefix("/api/models").split("/") if p]
        with self.fake.lock:
            repos = {k: v for k, v in self.fake.repos.items() if not k.startswith(KIND_PREFIXES)}
        if not rest:
            search = query.get("search", "").lower()
            found = [(i, r) for i, r in repos.items() if search in i.lower()]
            if query.get("sort") == "downloads":
                found.sort(key=lambda item: -item[1].downloads)
            limit = int(query.get("limit", "1000"))
            return self._json(200, [_listed(i, r) for i, r in found[:limit]])
        rev = "main"
        if len(rest) > 2 and rest[-2] == "revision":
            rest, rev = rest[:-2], rest[-1]
        repo_id = "/".join(rest)
        repo = repos.get(repo_id)
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository not found")
        commit = repo.branches.get(rev) or (rev if rev in repo.commits else None)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        blobs = query.get("blobs", "").lower() == "true"
        tree = repo.commits[commit]
        siblings = [_sibling(p, tree[p], p in repo.lfs, blobs) for p in sorted(tree)]
        info = {**_listed(repo_id, repo), "sha": commit, "gated": "manual" if repo.gated else False}
        self._json(200, {**info, "author": repo_id.split("/")[0], "siblings": siblings})

    def _hub(self) -> None:
        if self.path.startswith("/api/models"):
            return self._api()
        parts = urlsplit(self.path).path.split("/")[1:]
        kind = parts[0] + "/" if parts and parts[0] in ("datasets", "spaces") else ""
        parts = parts[1:] if kind else parts
        if "resolve" not in parts[:3]:
            return self._send(404, b"not a resolve URL")
        at = parts.index("resolve")
        repo_id, rev = "/".join(parts[:at]), unquote(parts[at + 1])
        path = "/".join(unquote(p) for p in parts[at + 2 :])
        fault = self.fake.take_fault("hub", self.command)
        if fault is not None and fault.status:
            return self._error(fault.status, fault.error_code or "", "injected")
        if repo_id in self.fake.renamed:
            new = self.fake.renamed[repo_id]
            rest = "/".join(parts[at:])
            return self._send(307, b"", {"Location": f"/{kind}{new}/{rest}"})
        repo = self.fake.repos.get(kind + repo_id)
        auth = self.headers.get("Authorization")
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository not found")
        if repo.gated and auth != f"Bearer {TOKEN}":
            status = 401 if auth is None else 403
            message = f"Access to model {repo_id} is restricted. You must have access to it."
            return self._error(status, "GatedRepo", message)
        commit = repo.branches.get(rev) or (rev if rev in repo.commits else None)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        content = repo.commits[commit].get(path)
        if content is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist", commit)
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if path in repo.lfs:
            sha = hashlib.sha256(content).hexdigest()
            headers |= {
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(content)),
                "ETag": f'"{sha}"',
                "Location": self.fake.sign(sha),
            }
            return self._send(302, b"", headers)
        etag = f'"{git_blob_sha1(content)}"' if self.fake.git_etags else ""
        self._bytes(content, etag, headers, fault)

    def _cdn(self) -> None:
        parts = urlsplit(self.path)
        sha = parts.path.removeprefix("/blobs/")
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if "Authorization" in self.headers:
            return self._send(400, b"Only one auth mechanism allowed")
        content = self.fake.blobs.get(sha)
        if content is None or not self.fake.link_valid(sha, query):
            return self._send(403, b"<Error><Code>AccessDenied</Code></Error>")
        fault = self.fake.take_fault("cdn", self.command)
        if fault is not None and fault.status:
            return self._send(fault.status, b"injected")
        self._bytes(content, f'"{sha[:32]}"', {"Accept-Ranges": "bytes"}, fault)

    def _bytes(self, data: bytes, etag: str, headers: dict[str, str], fault: Fault | None) -> None:
        headers = {**headers, "Content-Type": "application/octet-stream"}
        if etag:
            headers["ETag"] = etag
        if fault is not None and fault.serve is not None:
            data = fault.serve  # what the announced size and ETag do not describe
        size, start, end, status = len(data), 0, len(data) - 1, 200
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", (rng or "").strip())
        if m and (if_range is None or if_range == etag):
            start = int(m[1])
            if start >= size:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
            end = min(int(m[2]), size - 1) if m[2] else size - 1
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        body = data[start : end + 1]
        if fault is not None and fault.corrupt:
            body = bytes(b ^ 0xFF for b in body[:64]) + body[64:]
        headers["Content-Length"] = str(len(body))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        limit = fault.drop_after if fault and fault.drop_after is not None else len(body)
        rate = (fault.rate if fault and fault.rate else None) or self.fake.rate
        chunk = 64 * 1024 if rate is None else max(1024, rate // 20)
        sent, started = 0, time.monotonic()
        while sent < min(limit, len(body)) and not self.fake.stopping.is_set():
            n = min(chunk, min(limit, len(body)) - sent)
            self.wfile.write(body[sent : sent + n])
            sent += n
            self.record.sent += n
            if rate and (ahead := sent / rate - (time.monotonic() - started)) > 0:
                time.sleep(ahead)
        if sent < len(body):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


KIND_PREFIXES = ("datasets/", "spaces/")
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n"


def _listed(repo_id: str, repo: Repo) -> dict[str, Any]:
    """A repo as list_models shows it (no files, no commit)."""
    return {
        "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
        "id": repo_id,
        "modelId": repo_id,
        "likes": 0,
        "downloads": repo.downloads,
        "private": False,
        "tags": ["safetensors"],
        "library_name": "diffusers",
        "createdAt": "2024-01-02T03:04:05.000Z",
    }


def _sibling(path: str, content: bytes, lfs: bool, blobs: bool) -> dict[str, Any]:
    """A file of model_info's `siblings`: with `blobs`, its size and git blob id, and for an LFS
    file its `lfs` (the blob id is then the pointer file's)."""
    if not blobs:
        return {"rfilename": path}
    if not lfs:
        return {"rfilename": path, "size": len(content), "blobId": git_blob_sha1(content)}
    sha = hashlib.sha256(content).hexdigest()
    pointer = LFS_POINTER.format(sha, len(content)).encode()
    return {
        "rfilename": path,
        "size": len(content),
        "blobId": git_blob_sha1(pointer),
        "lfs": {"sha256": sha, "size": len(content), "pointerSize": len(pointer)},
    }


def hub_url(base: str, repo: str, path: str, rev: str = "main", form: str = "resolve") -> str:
    """A file URL as a person copies it from the Hub: `<base>/<repo>/<form>/<rev>/<path>`."""
    return f"{base}/{repo}/{form}/{quote(rev, safe='')}/{quote(path)}"
