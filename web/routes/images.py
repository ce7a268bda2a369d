"""GET /api/civitai/image: a Civitai preview as a thumbnail, through the daemon's cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from sources import thumbnails
from web.auth import require_key

router = APIRouter(prefix="/api/civitai", tags=["browse"], dependencies=[Depends(require_key)])

MAX_URL = 4096
CACHE_CONTROL = "private, max-age=86400"


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return etag in tags or "*" in tags


@router.get(
    "/image",
    response_class=Response,
    responses={200: {"content": {thumbnails.MEDIA_TYPE: {}}}, 304: {"description": "Unchanged"}},
)
async def image(
    request: Request,
    url: Annotated[str, Query(min_length=1, max_length=MAX_URL)],
    width: Annotated[int, Query(ge=1, le=100_000)] = 320,
) -> Response:
    """The image at `url` (on Civitai's image hosts only; a video: its still) as WebP at most
    `width` pixels wide, rounded down to a served width (64 to 1024)."""
    cache = request.app.state.thumbnails
    cache.check(url)
    width = thumbnails.allowed_width(width)
    etag = f'"{thumbnails.cache_key(url, width)}"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    data = await cache.get(url, width)
    return Response(content=data, media_type=thumbnails.MEDIA_TYPE, headers=headers)
