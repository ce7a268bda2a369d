"""POST /api/library/relayout: the completed files moved into a layout's folders, after the plan
was seen (issue 16). Admin only: it moves files and may save the layout."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from errors import InvalidRequest
from library import relayout
from library.layout import Layout
from web.auth import require_key

# A POST: require_key lets only the API key (admin) through; the viewer key gets 403.
router = APIRouter(prefix="/api", tags=["library"], dependencies=[Depends(require_key)])


class RelayoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    layout: Literal["default", "comfyui", "a1111", "forge"] | None = Field(
        None, description="The layout to move to; default: the configured one."
    )
    folders: dict[str, str] | None = Field(
        None, description="Per-type folder overrides; default: the configured ones."
    )
    confirm: bool = Field(False, description="false: only show the plan; true: apply it.")


class PlannedFile(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int  # the completed row (its newest, when a path has several)
    model_type: str
    from_: str = Field(alias="from")
    to: str
    sidecars: list[str]  # the sidecar names that move with it
    reason: str | None = None  # why it stays; absent when it moves


class RelayoutAnswer(BaseModel):
    layout: str
    download_dir: str  # the real download_dir: every path below starts with it
    folders: dict[str, str]
    confirmed: bool
    moves: list[PlannedFile]  # the plan: what would move (empty once confirmed)
    stays: list[PlannedFile]  # the plan: what cannot move, and why
    moved: list[PlannedFile]  # confirmed: what moved
    skipped: list[PlannedFile]  # confirmed: what stayed, and why
    layout_saved: bool  # confirmed with a layout or folders: saved as the configured layout


@router.post(
    "/library/relayout",
    response_model=RelayoutAnswer,
    response_model_by_alias=True,
    responses={
        403: {"description": "The viewer key may not move files"},
        422: {"description": "An unknown layout or a folder outside download_dir"},
    },
)
async def relayout_library(body: RelayoutRequest, request: Request) -> dict[str, Any]:
    """Move the completed files into the folders of a layout (the configured one unless the
    body names one), with their sidecars. Without `confirm` nothing is touched: the answer is
    the plan, each file's from and to, or why it stays. With `"confirm": true` the plan is made
    again and applied, and a layout or folders named in the body become the configured ones
    (as PATCH /api/settings saves them), so new jobs follow."""
    state = request.app.state
    current = state.live.current
    name = body.layout or current.layout
    folders = body.folders if body.folders is not None else current.folders
    try:
        target = Layout(name, folders)
    except ValueError as exc:
        raise InvalidRequest(f"folders: {exc}") from None
    queue = state.queue
    answer: dict[str, Any] = {"layout": name, "folders": folders, "confirmed": body.confirm}
    answer["download_dir"] = str(queue.models_root)  # the paths below start with it
    answer |= {"moves": [], "stays": [], "moved": [], "skipped": [], "layout_saved": False}
    async with state.relayout_lock:  # one move of the library at a time
        if not body.confirm:
            moves = await relayout.make_plan(
                state.store, target, queue.settings.models_dir, queue.models_root
            )
            answer["moves"] = [m.public() for m in moves if m.reason is None]
            answer["stays"] = [m.public() for m in moves if m.reason is not None]
            return answer
        named = {"layout": body.layout, "folders": body.folders}
        if changes := {k: v for k, v in named.items() if v is not None}:
            await state.live.patch(changes)  # first: new jobs go to the new folders meanwhile
            answer["layout_saved"] = True
        done = await relayout.apply(
            state.store, target, queue.settings.models_dir, queue.models_root
        )
    answer["moved"] = [m.public() for m in done.moved]
    answer["skipped"] = [m.public() for m in done.skipped]
    return answer
