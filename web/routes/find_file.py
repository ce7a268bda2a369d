"""GET /api/search/file: a model's file name looked for on Civitai and on the Hugging Face Hub
(the ComfyUI package's "Download into ComfyUI's folders", issue 25). Read-only: the viewer key
may ask too; queueing the one a person picks is another request, for the API key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from sources.by_file_name import HubSearch, find_file
from web.auth import require_key
from web.routes.browse import browser_of

router = APIRouter(prefix="/api/search", tags=["browse"], dependencies=[Depends(require_key)])


def hub_search_of(request: Request) -> HubSearch:
    """The app's one HubSearch (and its cache), made at the first search."""
    state = request.app.state
    if getattr(state, "hub_search", None) is None:
        state.hub_search = HubSearch(state.hub)
    return state.hub_search


@router.get("/file")
async def search_file(
    request: Request,
    name: Annotated[str, Query(description="A model file name: sd_xl_base_1.0.safetensors")] = "",
) -> dict[str, Any]:
    """Civitai's models matching the words of the name (every file of theirs, as Browse answers
    them) and the Hub's files of exactly that name, each item marked by `source` ("civitai" or
    "huggingface"); `unavailable` names a source that could not be asked, and why."""
    settings = request.app.state.settings
    return await find_file(
        name,
        browser_of(request),
        hub_search_of(request),
        settings.show_nsfw,
        settings.folder_layout,
    )
