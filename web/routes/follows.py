"""Follows (issue 28): rules that follow a Civitai creator, a saved search or a tag, checked with
the daily update check; a dry run answers what a rule would take now. Reading is for either
key; a change or a check, for the API key (auth.require_key)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from engine.jobs import MAX_ID
from errors import DaemonError
from updater.follow_rules import FollowChange, FollowRule, FollowStore, public, rule_of
from updater.follows import check_follow
from web.auth import require_key

FollowId = Annotated[int, Path(ge=1, le=MAX_ID, description="The id POST /api/follows gave.")]
router = APIRouter(prefix="/api/follows", tags=["follows"], dependencies=[Depends(require_key)])


class FollowNotFound(DaemonError):
    status_code = 404

    def __init__(self, follow_id: int) -> None:
        super().__init__(f"No follow {follow_id}")


def store_of(request: Request) -> FollowStore:
    return FollowStore(request.app.state.store)


async def existing(request: Request, follow_id: int) -> dict[str, Any]:
    row = await store_of(request).get(follow_id)
    if row is None:
        raise FollowNotFound(follow_id)
    return row


async def run_check(request: Request, row: dict[str, Any], dry_run: bool, full: bool) -> Any:
    """A check of one rule; a real one waits for a running update check (one at a time)."""
    updater = request.app.state.updater
    ctx = updater.context()
    if dry_run:
        return await check_follow(ctx, store_of(request), row, dry_run=True, full=full)
    async with updater.lock:
        return await check_follow(ctx, store_of(request), row, dry_run=False, full=full)


@router.post("", status_code=201)
async def add(
    rule: FollowRule,
    request: Request,
    dry_run: bool = Query(False, description="Answer what the rule would take now; save nothing."),
) -> Any:
    """Save a follow (201 with it); with dry_run, what it would take now, nothing saved."""
    if dry_run:
        row = {"rule": rule.model_dump_json(), "checked_at": None, "full_pass_at": None}
        return JSONResponse(await run_check(request, row, True, False))
    return public(await store_of(request).add(rule))


@router.get("")
async def follows(request: Request) -> dict[str, Any]:
    """Every follow with its last check and what that found."""
    return {"follows": [public(r) for r in await store_of(request).all()]}


@router.get("/{follow_id}")
async def one(follow_id: FollowId, request: Request) -> dict[str, Any]:
    return public(await existing(request, follow_id))


@router.patch("/{follow_id}")
async def change(follow_id: FollowId, body: FollowChange, request: Request) -> dict[str, Any]:
    """Change a follow's filters or mode; what it follows stays (delete and follow anew)."""
    row = await existing(request, follow_id)
    try:  # the change is checked with the rule it changes: a 422 like the POST's, never a 500
        rule = FollowRule.model_validate(
            rule_of(row).model_dump() | body.model_dump(exclude_unset=True)
        )
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    return public(await store_of(request).change(follow_id, rule))


@router.delete("/{follow_id}")
async def delete(follow_id: FollowId, request: Request) -> dict[str, Any]:
    """Stop following; what it queued stays queued, what it downloaded stays."""
    await existing(request, follow_id)
    await store_of(request).delete(follow_id)
    return {"deleted": follow_id}


@router.post("/{follow_id}/check")
async def check(
    follow_id: FollowId,
    request: Request,
    dry_run: bool = Query(False, description="What it would take now; nothing queued."),
    full: bool = Query(False, description="Walk the whole listing, as the weekly full pass."),
) -> dict[str, Any]:
    """Check one follow now (queued or notified as the daily check would), or a dry run."""
    row = await existing(request, follow_id)
    return await run_check(request, row, dry_run, full)
