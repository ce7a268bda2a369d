"""GET /api/civitai/models: search Civitai from the GUI's Browse tab (issue 18); GET
/api/civitai/state: what is here of one model (the browser extension's badge, issue 25).
Read-only: the viewer key may ask too; queueing a find is POST /api/download, for the API key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from engine.jobs import MAX_ID
from errors import InvalidRequest
from sources.browse import Browser, Search
from sources.page_state import page_state
from web.auth import require_key

router = APIRouter(prefix="/api/civitai", tags=["browse"], dependencies=[Depends(require_key)])


def browser_of(request: Request) -> Browser:
    """The app's one Browser (and its cache), made at the first search."""
    state = request.app.state
    if getattr(state, "browser", None) is None:
        state.browser = Browser(state.civitai, state.store)
    return state.browser


@router.get("/models")
async def search_models(
    request: Request,
    query: Annotated[str, Query(max_length=200, description="Words in the model's name")] = "",
    types: Annotated[list[str] | None, Query(description="LORA, Checkpoint, …")] = None,
    base_models: Annotated[
        list[str] | None, Query(alias="baseModels", description="Base models, e.g. SDXL 1.0")
    ] = None,
    sort: Annotated[str | None, Query(description="Highest Rated, Most Downloaded, Newest")] = None,
    period: Annotated[str | None, Query(description="AllTime, Year, Month, Week, Day")] = None,
    username: Annotated[str, Query(max_length=100, description="A creator's models only")] = "",
    cursor: Annotated[str, Query(max_length=500, description="nextCursor of the page before")] = "",
    limit: Annotated[int, Query(description="Models a page, 1 to 100")] = 20,
) -> dict[str, Any]:
    """Civitai's models that match, in the daemon's shape, each marked "downloaded" or "queued"
    when it is here; `nextCursor` asks for the next page, `cached` says the answer is reused."""
    search = Search.checked(query, types, base_models, sort, period, username, cursor, limit)
    settings = request.app.state.settings
    return await browser_of(request).search(search, settings.show_nsfw, settings.folder_layout)


@router.get("/state")
async def model_state(
    request: Request,
    model_id: Annotated[int | None, Query(alias="modelId", gt=0, le=MAX_ID)] = None,
    version_id: Annotated[int | None, Query(alias="modelVersionId", gt=0, le=MAX_ID)] = None,
) -> dict[str, Any]:
    """What is here of the model a Civitai page names (the browser extension's badge): `state`
    is "queued", "downloaded", "update available" (another version is here and the page's is
    Civitai's newest) or null."""
    if model_id is None and version_id is None:
        raise InvalidRequest("Give a modelId or a modelVersionId (from the page's URL)")
    state = request.app.state
    return await page_state(state.store, state.civitai, model_id, version_id)
