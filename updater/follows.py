"""Checking follows (issue 28): each rule's listing walked newest first along Civitai's cursor,
stopping at the first model seen before; a new model's version taken once (queued in `download`
mode, listed in `notify` mode) or held while in early access.

A check with nothing new costs one request per follow. The first check of a follow (and a full
pass, once a week) walks the whole listing, within MAX_PAGES: the first records what exists as
seen (or takes it all, with `backlog: "take"`); a full pass finds the models an incremental walk
cannot (a draft published later sorts below models already seen) and, for a creator, compares
the listing with the model count Civitai's creators search gives, as `?username=` is known to
miss models.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import errors
from database import utcnow
from engine.jobs import JobRequest, model_type_from_civitai
from events import SummaryEvent
from sources import bulk
from sources.civitai import list_page, pick_file
from sources.versions import (
    FAR_FUTURE,
    early_access_until,
    is_downloadable,
    newest_version,
    parse_time,
)
from updater.context import CheckContext, CheckResult
from updater.follow_rules import FollowRule, FollowStore, rule_of

log = logging.getLogger("civitai.follows")

PAGE_SIZE = 50  # models a page of an incremental walk: a day's new models fit in one
FULL_PAGE_SIZE = 100  # of a first check or a full pass (Civitai's largest page)
MAX_PAGES = 10  # requests of one walk at most
FULL_PASS_DAYS = 7  # a full pass at most this long after the last one
ITEMS_KEPT = 50  # items of a check kept in the follow's last result
CONCURRENCY = 3  # follows checked at once: a few requests at a time, as the update check


@dataclass
class Walk:
    models: list[dict[str, Any]] = field(default_factory=list)  # not seen before, newest first
    seen: dict[int, int] = field(default_factory=dict)  # every model listed: its newest version
    listed: int = 0
    pages: int = 0
    limit_hit: bool = False


def listing_params(rule: FollowRule, show_nsfw: bool, full: bool) -> dict[str, Any]:
    """Civitai's `/api/v1/models` query of a follow, newest first whatever the saved sort: only
    that order lets a check stop at the first model it has seen."""
    params: dict[str, Any] = {
        rule.kind: rule.subject,
        "sort": "Newest",
        "limit": FULL_PAGE_SIZE if full else PAGE_SIZE,
        "nsfw": "true" if rule.nsfw and show_nsfw else "false",
    }
    for key in ("period", "types", "baseModels"):  # lists as repeated keys, as Civitai takes them
        if value := getattr(rule, key):
            params[key] = value
    return params


def newest_id(model: dict[str, Any]) -> int:
    ids = [v.get("id") for v in model.get("modelVersions") or [] if isinstance(v, dict)]
    return max((i for i in ids if isinstance(i, int)), default=0)


async def walk(ctx: CheckContext, rule: FollowRule, seen: dict[int, int], full: bool) -> Walk:
    """The listing until the first model seen before with no version since (all of it, within
    MAX_PAGES, when `full`). A model seen before with a newer version moves up a list by latest
    version: it is passed over, not a new model."""
    params = listing_params(rule, ctx.settings.show_nsfw, full)

    async def listed() -> Walk:
        out = Walk()
        async for page, items, more in ctx.civitai.model_pages(params, MAX_PAGES):
            out.pages = page
            for model in items:
                model_id = model.get("id")
                if not isinstance(model_id, int):
                    continue
                out.listed += 1
                version = newest_id(model)
                if model_id in seen and version <= seen[model_id] and not full:
                    return out
                out.seen[model_id] = max(version, seen.get(model_id, 0))
                if model_id not in seen and model_id not in {m["id"] for m in out.models}:
                    out.models.append(model)
            if not more:
                return out
        out.limit_hit = True
        return out

    found = await ctx.ask(listed)
    ctx.result.requests += max(0, found.pages - 1)  # the first is counted by ask()
    return found


def choose(model: dict[str, Any], rule: FollowRule, ctx: CheckContext) -> dict[str, Any]:
    """What the follow would take of a new model: its newest published version (of the rule's
    base models) and that version's primary model file, with its size and folder; `state` says
    "new", "held" (early access, `until`), "filtered" or "unavailable" (with `problem`)."""
    kind = model.get("type")
    model_type = model_type_from_civitai(kind)
    item: dict[str, Any] = {
        "modelId": model.get("id"),
        "name": model.get("name"),
        "type": kind,
        "creator": (model.get("creator") or {}).get("username"),
        "model_type": model_type,
        "folder": ctx.settings.folder_layout.folder(model_type),
        "state": "new",
    }
    if model.get("nsfw") and not (rule.nsfw and ctx.settings.show_nsfw):
        return item | {"state": "filtered", "problem": "NSFW (show_nsfw is off or nsfw not asked)"}
    if rule.types and kind not in rule.types:
        return item | {"state": "filtered", "problem": f"of type {kind}"}
    versions = [v for v in model.get("modelVersions") or [] if isinstance(v, dict)]
    if rule.baseModels:
        versions = [v for v in versions if v.get("baseModel") in rule.baseModels]
    now = datetime.now(UTC)
    version = newest_version({"modelVersions": versions}, now, early=True)
    if version is None or not is_downloadable(version):
        problem = "no published version with a file to download (drafts, generation only)"
        return item | {"state": "unavailable", "problem": problem}
    item |= {
        "modelVersionId": version.get("id"),
        "versionName": version.get("name"),
        "baseModel": version.get("baseModel"),
    }
    try:
        f = pick_file(version, None)
    except errors.DaemonError as exc:
        return item | {"state": "unavailable", "problem": str(exc)}
    size_kb = f.get("sizeKB")
    item |= {
        "fileId": f.get("id"),
        "filename": f.get("name"),
        "size": round(size_kb * 1024) if isinstance(size_kb, int | float) else None,
    }
    if rule.max_size and (item["size"] or 0) > rule.max_size:
        return item | {"state": "filtered", "problem": f"larger than max_size {rule.max_size}"}
    if (until := early_access_until(version, now)) is not None:
        return item | {"state": "held", "until": None if until == FAR_FUTURE else until}
    return item


async def take(ctx: CheckContext, rule: FollowRule, items: list[dict[str, Any]]) -> None:
    """Queue (download mode) or mark notified (notify mode) each "new" item."""
    new = [i for i in items if i["state"] == "new"]
    if rule.mode == "notify":
        for item in new:
            item["state"] = "notified"
        return
    entries = [
        (
            n,
            JobRequest(
                modelVersionId=i["modelVersionId"],
                fileId=i["fileId"],
                model_type=i["model_type"],
                track=rule.track,
            ),
        )
        for n, i in enumerate(new)
    ]
    if not entries:
        return
    jobs, problems = await ctx.queue.submit_many(entries, source="follow")
    failed = {p["index"]: p["detail"] for p in problems}
    done = iter(jobs)
    for n, item in enumerate(new):
        if n in failed:
            item.update(state="failed", problem=failed[n])
        else:
            item.update(state="queued", job_id=next(done)["id"])


async def recheck_held(
    ctx: CheckContext, rule: FollowRule, held: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The follow's held versions asked again (one request for up to 100 models): one whose
    early access has ended is taken now; one still waiting keeps its (maybe moved) date."""
    if not held:
        return []
    ids = sorted({h["modelId"] for h in held})
    models: dict[int, dict[str, Any]] = {}
    for start in range(0, len(ids), 100):
        found, pages = await ctx.ask(lambda b=ids[start : start + 100]: ctx.civitai.get_models(b))
        ctx.result.requests += pages - 1
        models |= {m["id"]: m for m in found if isinstance(m.get("id"), int)}
    items = []
    for row in held:
        model = models.get(row["modelId"])
        if model is None:
            continue  # hidden or gone: asked again next check
        item = choose(model, rule, ctx)
        if item.get("modelVersionId") != row["modelVersionId"]:
            # A newer version came meanwhile: it is what the follow takes (or holds) now, and
            # the one held before is no longer asked about.
            item["supersedes"] = row["modelVersionId"]
        items.append(item)
    return items


def due_full_pass(row: dict[str, Any], now: datetime) -> bool:
    last = parse_time(row.get("full_pass_at"))
    return last is None or now - last >= timedelta(days=FULL_PASS_DAYS)


async def creator_gap(ctx: CheckContext, rule: FollowRule, listed: int) -> str | None:
    """Civitai's creators search's model count for a followed creator against what its listing
    showed (a full pass without filters only): the sentence when the listing showed fewer."""
    if rule.kind != "username" or rule.types or rule.baseModels:
        return None
    data = await ctx.ask(
        lambda: ctx.civitai.get_json("/api/v1/creators", {"query": rule.username, "limit": 100})
    )
    items, _ = list_page(data)
    wanted = str(rule.username).lower()
    counts = [c.get("modelCount") for c in items if str(c.get("username")).lower() == wanted]
    count = counts[0] if counts and isinstance(counts[0], int) else None
    if count is None or count <= listed:
        return None
    return (
        f"Civitai counts {count} models by {rule.username}, its listing showed {listed}: "
        f"{count - listed} hidden from lists (NSFW without show_nsfw, or missed by Civitai)"
    )


async def check_follow(
    ctx: CheckContext, follows: FollowStore, row: dict[str, Any], dry_run: bool, full: bool = False
) -> dict[str, Any]:
    """One follow's check (dry_run: what it would take now, nothing queued or recorded)."""
    rule = rule_of(row)
    first = row.get("checked_at") is None
    full = full or first or due_full_pass(row, datetime.now(UTC))
    before = ctx.result.requests
    seen = await follows.seen(row["id"]) if "id" in row else {}
    taken = {t["modelVersionId"]: t for t in await follows.taken(row["id"])} if "id" in row else {}
    found = await walk(ctx, rule, seen, full)
    items = [choose(m, rule, ctx) for m in found.models]
    for item in items:
        if first and rule.backlog == "skip" and item["state"] in ("new", "held"):
            item.update(state="existing", problem="listed before the follow's first check")
        elif (old := taken.get(item.get("modelVersionId"))) is not None:
            item.update(state="taken", job_id=old["job_id"])  # by an earlier check
    held = [t for t in taken.values() if t["state"] == "held"]
    listed_ids = {i.get("modelVersionId") for i in items}
    items += [
        i for i in await recheck_held(ctx, rule, held) if i.get("modelVersionId") not in listed_ids
    ]
    gap = await creator_gap(ctx, rule, found.listed) if full and not first else None
    await bulk.mark_holdings(ctx.store, items)  # "new" ones already here: queued/downloaded
    if not dry_run:
        await take(ctx, rule, items)
    still_held = {t for t, v in taken.items() if v["state"] == "held"}
    result = {
        "follow_id": row.get("id"),
        "title": rule.title(),
        "mode": rule.mode,
        "checked_at": utcnow(),
        "dry_run": dry_run,
        "full_pass": full,
        "requests": ctx.result.requests - before,
        "listed": found.listed,
        "limit_hit": found.limit_hit,
        "new": [i for i in items if i["state"] in ("queued", "notified", "new")],
        "held": [i for i in items if i["state"] == "held"],
        "newly_held": [
            i for i in items if i["state"] == "held" and i["modelVersionId"] not in still_held
        ],
        "gap": gap,
        "items": items[:ITEMS_KEPT],
    }
    if not dry_run and "id" in row:
        keep = ("queued", "notified", "held")
        rows = [
            {
                "modelVersionId": i["modelVersionId"],
                "modelId": i["modelId"],
                "state": i["state"],
                "until": i.get("until"),
                "job_id": i.get("job_id"),
                "item": i,
                "taken_at": None if i["state"] == "held" else utcnow(),
            }
            for i in items
            if i["state"] in keep
            and (
                i["state"] == "held"
                or taken.get(i["modelVersionId"], {}).get("state") != i["state"]
            )
        ]
        rows += [
            {"modelVersionId": i["supersedes"], "modelId": i["modelId"], "state": "superseded"}
            for i in items
            if i.get("supersedes")
        ]
        stored = {k: v for k, v in result.items() if k != "newly_held"}
        await follows.record(row["id"], found.seen, rows, stored, full)
    return result


async def check_follows(ctx: CheckContext) -> list[dict[str, Any]]:
    """Every follow, CONCURRENCY at a time, each with its own count of requests; one follow's
    failure never stops the rest. The results in the follows' order."""
    follows = FollowStore(ctx.store)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(row: dict[str, Any]) -> dict[str, Any]:
        own = replace(ctx, result=CheckResult(started_at=ctx.result.started_at))
        async with semaphore:
            try:
                result = await check_follow(own, follows, row, dry_run=False)
                # The check's record keeps what each follow found; every model it listed stays
                # in the follow's own last result (a first check can list hundreds).
                return {k: v for k, v in result.items() if k != "items"}
            except Exception as exc:  # one follow's failure (or surprise) never stops the rest
                if isinstance(exc, errors.DaemonError):
                    log.warning("follow %s not checked: %s", row["id"], exc)
                else:
                    log.exception("follow %s: its check failed", row["id"])
                detail = str(exc) if isinstance(exc, errors.DaemonError) else repr(exc)
                own.result.errors.append({"follow": row["id"], "detail": detail})
                return {"follow_id": row["id"], "title": title_of(row), "error": detail}
            finally:
                ctx.result.requests += own.result.requests
                ctx.result.errors += own.result.errors

    return list(await asyncio.gather(*(one(row) for row in await follows.all())))


def title_of(row: dict[str, Any]) -> str:
    try:
        return rule_of(row).title()
    except ValueError:  # a rule this version cannot read
        return f"follow {row['id']}"


def held_update(update: dict[str, Any]) -> bool:
    """An update the check did not queue because its version is still in early access."""
    return update.get("job_id") is None and bool(update.get("early_access_until"))


# What the notify targets need to tell an update (notify/webhooks.py `_update_text`).
UPDATE_FIELDS = (
    "model_name",
    "modelId",
    "version_name",
    "new_version_id",
    "job_id",
    "policy",
    "early_access_until",
)


def summary_text(follows: list[dict[str, Any]], updates: list[dict[str, Any]]) -> str | None:
    """One sentence for a check: "3 new models from creator X, 2 updates, 1 held in early access
    until …"; None when it found nothing."""
    parts = []
    for f in follows:
        n = len(f.get("new") or [])
        if n:
            verb = "to notify" if f.get("mode") == "notify" else "queued"
            parts.append(f"{n} new model{'s' * (n != 1)} from {f['title']} ({verb})")
    queued = [u for u in updates if u.get("job_id") is not None]
    if queued:
        parts.append(f"{len(queued)} update{'s' * (len(queued) != 1)}")
    # Not queued: held in early access, or listed only (policy notify, a file not tracked).
    listed = [u for u in updates if u.get("job_id") is None and not u.get("early_access_until")]
    if listed:
        parts.append(f"{len(listed)} update{'s' * (len(listed) != 1)} listed only")
    held = [i.get("until") for f in follows for i in f.get("newly_held") or []]
    held += [u["early_access_until"] for u in updates if held_update(u)]
    if held:
        dates = sorted(d for d in held if d and d != FAR_FUTURE)
        until = f" until {dates[0][:10]}" if dates else ""
        parts.append(f"{len(held)} held in early access{until}")
    return ", ".join(parts) if parts else None


def publish_summary(ctx: CheckContext, follows: list[dict[str, Any]]) -> dict[str, Any]:
    """The check's one notification (`check.summary`): its sentence and what it counts."""
    summary = {
        "text": summary_text(follows, ctx.result.updates),
        "started_at": ctx.result.started_at,
        "updates": len(ctx.result.updates),
        "new_models": sum(len(f.get("new") or []) for f in follows),
        "held": sum(len(f.get("newly_held") or []) for f in follows)
        + sum(held_update(u) for u in ctx.result.updates),
        # Each update as the notify targets tell it (queued, listed only, held until …).
        "update_items": [{k: u.get(k) for k in UPDATE_FIELDS} for u in ctx.result.updates[:20]],
        "follows": [
            {k: f.get(k) for k in ("follow_id", "title", "mode", "new", "newly_held", "error")}
            for f in follows
        ],
        "errors": len(ctx.result.errors),
    }
    ctx.bus.publish(SummaryEvent(summary))
    return summary
