"""A model named only by its file name (a ComfyUI workflow's loader with no URL), looked for on
Civitai and on the Hugging Face Hub; the person picks one of the answers.

Civitai is searched as the Browse tab searches it, by the words of the file's stem (its search
matches words of a model's name; its file names seldom are the one a workflow uses), and every
file of the models found is offered. The Hub has no search by file name, so it is asked as
huggingface_hub asks it (src/huggingface_hub/hf_api.py): `HfApi.list_models(search=…,
sort="downloads", limit=…)` is `GET /api/models?search=…&sort=downloads&limit=…` (a substring of
the repo id), then `HfApi.model_info(repo_id, files_metadata=True)` is
`GET /api/models/{repo_id}?blobs=true`, whose `sha` is the commit and whose `siblings` are the
files (`ModelInfo.__init__`: `rfilename`, `size`, `blobId`, and `lfs` {`sha256`, `size`,
`pointerSize`} for an LFS file). Only a file of exactly that name is kept, pinned to the commit,
with the LFS SHA256 when the Hub gives one, so its download is verified as any Hub download
(sources/huggingface.py). Bounded: a few searches (the stem, then shorter forms) and a few repos
listed per name; answers kept CACHE_TTL seconds. hf_token goes only to hf_base_url's origin.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import errors
from library.layout import Layout
from sources.browse import Browser, Search
from sources.civitai import USER_AGENT, retry_after_seconds
from sources.huggingface import SHA256, HubClient, HubError, HubFile, parse_hub_path

log = logging.getLogger("civitai.by_file_name")

PUBLIC_HUB = "https://huggingface.co"  # a job's URL as a person reads it; asked of hf_base_url
MAX_NAME = 200  # characters of a file name asked for
MAX_QUERIES = 3  # searches of the Hub per name: the stem, then shorter forms
MAX_REPOS = 5  # repos whose files are listed per name
MIN_QUERY = 3  # shorter search words match too much of the Hub to be worth a request
CIVITAI_LIMIT = 10  # Civitai models offered per name
CACHE_TTL = 300.0  # seconds a Hub answer is reused; read at each call
CACHE_ENTRIES = 128
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def file_part(name: str) -> str:
    """The file of a workflow's name: `SD1.5/x.safetensors` → `x.safetensors`."""
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def stem_of(name: str) -> str:
    return re.sub(r"\.[^.]+$", "", file_part(name))


def civitai_words(name: str) -> str:
    """Civitai's search matches words of a model's name: the stem split at _ - . and space."""
    return " ".join(w for w in re.split(r"[_\-.\s]+", stem_of(name)) if w)


def hub_queries(name: str) -> list[str]:
    """The Hub's searches for a file name, in order: the stem, its words joined by `-` (as repo
    names are), then shorter by a word each; those too short to be worth asking left out."""
    stem = stem_of(name)
    words = [w for w in re.split(r"[_\-\s]+", stem) if w]
    found = [stem, "-".join(words)] + ["-".join(words[:k]) for k in range(len(words) - 1, 0, -1)]
    out: list[str] = []
    for query in found:
        if len(query) >= MIN_QUERY and query.lower() not in (q.lower() for q in out):
            out.append(query)
    return out[:MAX_QUERIES]


def checked_name(name: str) -> str:
    """The file name asked for, or InvalidRequest saying why not."""
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 for c in name):
        raise errors.InvalidRequest(
            f"name: give a model's file name of 1 to {MAX_NAME} characters, no control characters"
        )
    if len(stem_of(name)) < 2:
        raise errors.InvalidRequest(f"name: {name!r} has no file name to search for")
    return name


class HubNotListed(HubError):
    """The Hub's 4xx (other than 429) to a listing: that repo or search is left out."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"The Hugging Face Hub answered {status} {code}".strip())


class HubSearch:
    """Finds a file name's exact matches on the Hub; keeps each answer CACHE_TTL seconds."""

    def __init__(self, hub: HubClient) -> None:
        self.hub = hub
        self.cache: OrderedDict[tuple[str, str | None, str], tuple[float, Any]] = OrderedDict()

    async def find(self, name: str) -> tuple[list[dict[str, Any]], bool]:
        """(matches, cached): each match `{source, repo, revision, path, size, sha256, gated,
        url, page}`, the repos in the Hub's order (most downloaded first)."""
        key = (self.hub.base_url, self.hub.token, file_part(name))
        hit = self.cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_TTL:
            self.cache.move_to_end(key)
            return [dict(m) for m in hit[1]], True
        matches = await self._find(file_part(name))
        self.cache[key] = (time.monotonic(), matches)
        self.cache.move_to_end(key)
        while len(self.cache) > CACHE_ENTRIES:
            self.cache.popitem(last=False)
        return [dict(m) for m in matches], False

    async def _find(self, wanted: str) -> list[dict[str, Any]]:
        listed: list[str] = []
        for query in hub_queries(wanted):
            budget = MAX_REPOS - len(listed)
            if budget <= 0:
                break
            found = await self._get("/api/models", {"search": query, "sort": "downloads"}, budget)
            repos = [r for r in self._repo_ids(found) if r not in listed][:budget]
            listed += repos
            infos = await asyncio.gather(*(self._info(repo) for repo in repos))
            matches = []
            for repo, info in zip(repos, infos, strict=True):
                matches += self._matches(repo, info, wanted)
            if matches:
                return matches
        return []

    async def _get(self, path: str, params: dict[str, str], limit: int | None = None) -> Any:
        url = self.hub.base_url + path
        if limit is not None:
            params = {**params, "limit": str(limit)}
        headers = {"User-Agent": USER_AGENT}
        response = await self.hub.ask("GET", url, params=params, headers=headers)
        status = response.status_code
        if status == 429:
            raise errors.RateLimited(retry_after_seconds(response), "The Hugging Face Hub")
        if status >= 500:
            raise errors.ServerError(status, where="The Hugging Face Hub")
        if status != 200:
            raise HubNotListed(status, response.headers.get("x-error-code", ""))
        try:
            return response.json()
        except ValueError:
            raise HubError(f"The Hugging Face Hub answered {path} without JSON") from None

    async def _info(self, repo: str) -> dict[str, Any] | None:
        """model_info(repo, files_metadata=True); None for a repo it will not show us (private,
        gone since the search): the other repos still count."""
        path = "/api/models/" + "/".join(quote(part, safe="") for part in repo.split("/"))
        try:
            info = await self._get(path, {"blobs": "true"})
        except HubNotListed as exc:
            log.info("the Hub would not list the files of %s: %s", repo, exc)
            return None
        return info if isinstance(info, dict) else None

    @staticmethod
    def _repo_ids(found: Any) -> list[str]:
        if not isinstance(found, list):
            raise HubError("The Hugging Face Hub answered its model search without a list")
        ids = [m.get("id") for m in found if isinstance(m, dict)]
        return [i for i in ids if isinstance(i, str) and REPO_ID.match(i) and ".." not in i]

    def _matches(self, repo: str, info: dict[str, Any] | None, wanted: str) -> list[dict[str, Any]]:
        """The repo's files named exactly `wanted` (in any of its folders)."""
        if info is None:
            return []
        commit = info.get("sha") if isinstance(info.get("sha"), str) else None
        revision = commit if commit and re.fullmatch(r"[0-9a-f]{40}", commit) else "main"
        out = []
        for sibling in info.get("siblings") or []:
            path = sibling.get("rfilename") if isinstance(sibling, dict) else None
            if not isinstance(path, str) or file_part(path) != wanted:
                continue
            resolve = HubFile("", repo, revision, path).resolve_path()
            try:
                parse_hub_path(resolve)  # a `..` or empty segment is no file to offer
            except ValueError:
                continue
            lfs = sibling.get("lfs") if isinstance(sibling.get("lfs"), dict) else {}
            sha = str(lfs.get("sha256") or "").lower()
            size = sibling.get("size") if isinstance(sibling.get("size"), int) else None
            out.append(
                {
                    "source": "huggingface",
                    "repo": repo,
                    "revision": revision,
                    "path": path,
                    "size": size if size is not None else lfs.get("size"),
                    "sha256": sha if SHA256.match(sha) else None,
                    "gated": info.get("gated") or False,
                    "url": PUBLIC_HUB + resolve,
                    "page": f"{PUBLIC_HUB}/{repo}",
                }
            )
        return out


async def find_file(
    name: str,
    browser: Browser,
    hub: HubSearch,
    nsfw: bool,
    layout: Layout,
) -> dict[str, Any]:
    """Civitai's and the Hub's answers for a file name, each item marked by its `source`; a
    source that could not be asked is named in `unavailable` with why, the other still answers."""
    name = checked_name(name)
    words = civitai_words(name)
    search = Search.checked(query=words, limit=CIVITAI_LIMIT)
    civitai, found = await asyncio.gather(
        browser.search(search, nsfw, layout), hub.find(name), return_exceptions=True
    )
    items: list[dict[str, Any]] = []
    unavailable: list[dict[str, str]] = []
    for source, answer in (("civitai", civitai), ("huggingface", found)):
        if isinstance(answer, errors.DaemonError):
            unavailable.append({"source": source, "detail": str(answer)})
        elif isinstance(answer, BaseException):
            raise answer
        elif source == "civitai":
            items += [{**m, "source": "civitai"} for m in answer["items"]]
        else:
            items += answer[0]
    return {
        "name": name,
        "searched": {"civitai": words, "huggingface": hub_queries(name)},
        "items": items,
        "unavailable": unavailable,
    }
