"""Searching Civitai for the GUI's Browse tab (issue 18): Civitai's `/api/v1/models` list,
answered in the daemon's own shape, cached per query for a few minutes.

What is cached is Civitai's answer, already shaped; whether a model is downloaded or queued
here is marked on every answer afresh, from the completed files and the active jobs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from html import unescape
from html.parser import HTMLParser
from typing import Any

import errors
from database import Store
from engine.jobs import ACTIVE_SQL, model_type_from_civitai
from library.catalog import is_nsfw_image
from library.layout import Layout
from sources.civitai import LIST_TYPES, CivitaiClient, list_page, with_retries
from sources.versions import early_access

CACHE_TTL = 300.0  # seconds an answer is reused; read at each call (a test may shorten it)
CACHE_ENTRIES = 128  # most queries kept; the least recently used goes first
SORTS = ("Highest Rated", "Most Downloaded", "Newest")
PERIODS = ("AllTime", "Year", "Month", "Week", "Day")
TYPES = LIST_TYPES  # Civitai's model types, as its list takes them
STATS = ("downloadCount", "rating", "ratingCount", "thumbsUpCount", "favoriteCount")


class SearchRefused(errors.CivitaiError):
    """Civitai's 400: the search as asked (a filter value, a cursor) is not one it takes."""

    status_code = 422

    def __init__(self, said: str) -> None:
        super().__init__(f"Civitai refused the search: {said}")


class SearchRateLimited(errors.CivitaiError):
    """Not retried: the person searching waits, as Civitai asks, and searches again."""

    status_code = 429

    def __init__(self, retry_after: float | None) -> None:
        wait = f"in {retry_after:g} s" if retry_after else "in a while"
        super().__init__(f"Civitai is rate limiting searches (429); search again {wait}.")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Search:
    """One search, its values checked and put in one order (the cache key)."""

    query: str = ""
    types: tuple[str, ...] = ()
    base_models: tuple[str, ...] = ()
    sort: str = "Highest Rated"
    period: str = "AllTime"
    username: str = ""
    cursor: str = ""
    limit: int = 20

    @classmethod
    def checked(
        cls,
        query: str = "",
        types: list[str] | None = None,
        base_models: list[str] | None = None,
        sort: str | None = None,
        period: str | None = None,
        username: str = "",
        cursor: str = "",
        limit: int = 20,
    ) -> Search:
        """Refuses an unknown sort, period or type naming the ones allowed; a type in any case."""
        by_lower = {t.lower(): t for t in TYPES}
        named = []
        for t in types or []:
            if t.strip().lower() not in by_lower:
                raise errors.InvalidRequest(
                    f"types: {t!r} is not a Civitai model type; use one of {', '.join(TYPES)}"
                )
            named.append(by_lower[t.strip().lower()])
        sort = sort or cls.sort
        if sort not in SORTS:
            raise errors.InvalidRequest(f"sort: {sort!r} is not one of {', '.join(SORTS)}")
        period = period or cls.period
        if period not in PERIODS:
            raise errors.InvalidRequest(f"period: {period!r} is not one of {', '.join(PERIODS)}")
        if not 1 <= limit <= 100:
            raise errors.InvalidRequest(f"limit: {limit} is not between 1 and 100")
        return cls(
            query=query.strip(),
            types=tuple(sorted(set(named))),
            base_models=tuple(sorted({b.strip() for b in base_models or [] if b.strip()})),
            sort=sort,
            period=period,
            username=username.strip(),
            cursor=cursor.strip(),
            limit=limit,
        )

    def params(self, nsfw: bool) -> dict[str, Any]:
        """The query of Civitai's `/api/v1/models`: lists as repeated keys, empty ones left out."""
        params: dict[str, Any] = {
            "limit": self.limit,
            "sort": self.sort,
            "period": self.period,
            "nsfw": "true" if nsfw else "false",
        }
        for key, value in (
            ("query", self.query),
            ("username", self.username),
            ("cursor", self.cursor),
            ("types", list(self.types)),
            ("baseModels", list(self.base_models)),
        ):
            if value:
                params[key] = value
        return params


def cover(model: dict[str, Any], nsfw: bool) -> dict[str, Any] | None:
    """The first image of the first version that has one to show (a safe one unless `nsfw`)."""
    for version in model.get("modelVersions") or []:
        for image in (version.get("images") or []) if isinstance(version, dict) else []:
            if not isinstance(image, dict) or not image.get("url"):
                continue
            if nsfw or not is_nsfw_image(image):
                return {
                    "url": image["url"],
                    "type": "video" if image.get("type") == "video" else "image",
                    "width": image.get("width"),
                    "height": image.get("height"),
                }
    return None


DESCRIPTION_MAX = 4000  # characters of a model's description kept for the dialog
STRIP_IMAGES = 8  # example images of a version in the dialog
PAGE = "https://civitai.com/models/{}"  # a model's page on Civitai


class _Text(HTMLParser):
    """Civitai's description HTML as plain text: its words only (a script's or a style's are
    dropped), a new line for each paragraph, line break or list item. Nothing of it is markup
    when shown: the GUI sets it as text."""

    BREAKS = {"p", "br", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def plain_text(value: Any) -> str:
    """A description as text a person reads (see _Text); "" for none."""
    if not isinstance(value, str) or not value.strip():
        return ""
    parser = _Text()
    try:
        parser.feed(value)
        parser.close()
    except Exception:  # noqa: BLE001 - broken HTML: its text without the tags, as a last resort
        return unescape(value)[:DESCRIPTION_MAX]
    lines = [" ".join(line.split()) for line in "".join(parser.parts).split("\n")]
    return "\n".join(line for line in lines if line)[:DESCRIPTION_MAX]


def strip(version: dict[str, Any], nsfw: bool) -> list[dict[str, Any]]:
    """A version's example images for the dialog: an NSFW one is blurred unless `nsfw`."""
    out = []
    for image in version.get("images") or []:
        if isinstance(image, dict) and isinstance(image.get("url"), str) and image["url"]:
            kind = "video" if image.get("type") == "video" else "image"
            out.append(
                {"url": image["url"], "type": kind, "blur": is_nsfw_image(image) and not nsfw}
            )
        if len(out) == STRIP_IMAGES:
            break
    return out


def shape_file(f: dict[str, Any]) -> dict[str, Any]:
    size_kb = f.get("sizeKB")
    sha = (f.get("hashes") or {}).get("SHA256")
    meta = f.get("metadata") if isinstance(f.get("metadata"), dict) else {}
    return {
        "format": meta.get("format") if isinstance(meta.get("format"), str) else None,
        "fp": meta.get("fp") if isinstance(meta.get("fp"), str) else None,
        "pruned": meta.get("size") if isinstance(meta.get("size"), str) else None,
        "id": f.get("id"),
        "name": f.get("name"),
        "type": f.get("type"),
        "size": round(size_kb * 1024) if isinstance(size_kb, int | float) else None,
        "primary": bool(f.get("primary")),
        "sha256": sha.lower() if isinstance(sha, str) else None,
    }


def shape_version(version: dict[str, Any], now: datetime, nsfw: bool = False) -> dict[str, Any]:
    in_early_access, until = early_access(version, now)
    words = version.get("trainedWords") or []
    return {
        "trainedWords": [w.strip() for w in words if isinstance(w, str) and w.strip()],
        "images": strip(version, nsfw),
        "id": version.get("id"),
        "name": version.get("name"),
        "baseModel": version.get("baseModel"),
        "publishedAt": version.get("publishedAt"),
        "earlyAccessEndsAt": until if in_early_access else None,
        "state": None,
        "files": [shape_file(f) for f in version.get("files") or [] if isinstance(f, dict)],
    }


def shape_model(model: dict[str, Any], nsfw: bool, now: datetime) -> dict[str, Any]:
    """One item of Civitai's list in the daemon's shape (the agreed API of issue 18); its
    `folder` and `state` are set for each answer (the layout can change while cached)."""
    model_type = model_type_from_civitai(model.get("type"))
    stats = model.get("stats") or {}
    return {
        "id": model.get("id"),
        "name": model.get("name"),
        "type": model.get("type"),
        "description": plain_text(model.get("description")),
        "page": PAGE.format(model["id"]) if isinstance(model.get("id"), int) else None,
        "model_type": model_type,
        "folder": None,
        "creator": (model.get("creator") or {}).get("username"),
        "nsfw": bool(model.get("nsfw")),
        "stats": {key: stats.get(key) or 0 for key in STATS},
        "image": cover(model, nsfw),
        "state": None,
        "versions": [
            shape_version(v, now, nsfw)
            for v in model.get("modelVersions") or []
            if isinstance(v, dict)
        ],
    }


def shape(data: Any, nsfw: bool) -> tuple[list[dict[str, Any]], str | None]:
    """(items, nextCursor) of a list answer; NSFW models dropped here too unless `nsfw`."""
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise errors.NotJSON("data without a list of models")
    models, cursor = list_page(data)
    now = datetime.now(UTC)
    items = [shape_model(m, nsfw, now) for m in models if nsfw or not m.get("nsfw")]
    return items, cursor


async def mark_states(store: Store, items: list[dict[str, Any]]) -> None:
    """Set `state` of each version ("queued": an active job has it; "downloaded": a completed
    file) and of each model (the same for any of its versions, or an active job of the model
    whose version Civitai has not told yet). Queued wins: it is what is happening now."""
    version_ids = [v["id"] for m in items for v in m["versions"] if isinstance(v["id"], int)]
    model_ids = [m["id"] for m in items if isinstance(m["id"], int)]
    if not items:
        return

    def op(db: Any) -> tuple[set[int], set[int], set[int]]:
        marks = ",".join("?" * len(version_ids)) or "null"
        done = {
            r[0]
            for r in db.execute(
                f"select distinct modelVersionId from completed where modelVersionId in ({marks})",
                version_ids,
            )
        }
        models = ",".join("?" * len(model_ids)) or "null"
        active = db.execute(
            f"select modelVersionId, modelId from jobs where {ACTIVE_SQL} and "
            f"(modelVersionId in ({marks}) or modelId in ({models}))",
            [*version_ids, *model_ids],
        ).fetchall()
        return done, {r[0] for r in active if r[0]}, {r[1] for r in active if r[1]}

    done, queued, queued_models = await store.read(op)
    for model in items:
        for version in model["versions"]:
            vid = version["id"]
            version["state"] = "queued" if vid in queued else "downloaded" if vid in done else None
        states = {v["state"] for v in model["versions"]}
        if "queued" in states or model["id"] in queued_models:
            model["state"] = "queued"
        elif "downloaded" in states:
            model["state"] = "downloaded"


class Browser:
    """Searches Civitai with the daemon's token; keeps each answer CACHE_TTL seconds."""

    def __init__(self, civitai: CivitaiClient, store: Store) -> None:
        self.civitai = civitai
        self.store = store
        self.cache: OrderedDict[tuple[Any, ...], tuple[float, Any]] = OrderedDict()

    async def search(self, search: Search, nsfw: bool, layout: Layout) -> dict[str, Any]:
        key = (self.civitai.base_url, nsfw, search)
        hit = self.cache.get(key)
        cached = hit is not None and time.monotonic() - hit[0] < CACHE_TTL
        if cached:
            assert hit is not None
            self.cache.move_to_end(key)
            items, cursor = hit[1]
        else:
            data = await self.fetch(search.params(nsfw))
            items, cursor = shape(data, nsfw)
            self.cache[key] = (time.monotonic(), (items, cursor))
            self.cache.move_to_end(key)
            while len(self.cache) > CACHE_ENTRIES:
                self.cache.popitem(last=False)
        answer = [
            {**m, "folder": layout.folder(m["model_type"]), "versions": [*map(dict, m["versions"])]}
            for m in items
        ]
        await mark_states(self.store, answer)
        return {"items": answer, "nextCursor": cursor, "cached": cached}

    async def fetch(self, params: dict[str, Any]) -> Any:
        """Civitai's answer; a failed attempt that may pass is tried once more at once, but a
        rate limit is passed on (the person waits, not the request)."""
        try:
            return await with_retries(lambda: self._get(params), attempts=2, base=0.5, max_wait=1.0)
        except (SearchRateLimited, errors.Retryable):
            raise
        except errors.CivitaiError as exc:
            raise SearchRefused(str(exc)) from None

    async def _get(self, params: dict[str, Any]) -> Any:
        try:
            return await self.civitai.get_json("/api/v1/models", params)
        except errors.RateLimited as exc:
            raise SearchRateLimited(exc.retry_after) from None
