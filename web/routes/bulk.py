"""A Civitai creator's models in bulk: preview them, then queue the ones confirmed (issue 17).

Both are POSTs, so only the admin key may use them (auth.require_key).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.jobs import MAX_ID, JobRequest, canonical_model_type
from errors import InvalidRequest
from sources import bulk
from web.auth import require_key
from web.routes.api import BatchResult

router = APIRouter(prefix="/api/bulk", tags=["bulk"], dependencies=[Depends(require_key)])


def folder_of(value: str | None) -> str | None:
    try:
        return None if value is None else canonical_model_type(value)
    except InvalidRequest as exc:
        raise ValueError(str(exc)) from None


class BulkItem(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a preview's item may be sent back as it is

    modelVersionId: int = Field(gt=0, le=MAX_ID, strict=True)  # noqa: N815
    fileId: int | None = Field(None, gt=0, le=MAX_ID, strict=True)  # noqa: N815
    model_type: str | None = Field(None, description="This item's folder; else the body's.")

    @field_validator("model_type")
    @classmethod
    def _model_type(cls, value: str | None) -> str | None:
        return folder_of(value)


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BulkItem] = Field(min_length=1, max_length=bulk.MAX_MODELS)
    track: bool = Field(False, strict=True, description="Track each for updates once verified.")
    model_type: str | None = Field(
        None, description="The folder of every item; left out: each model's type on Civitai."
    )
    priority: int = Field(5, ge=0, le=100, strict=True)

    @field_validator("model_type")
    @classmethod
    def _model_type(cls, value: str | None) -> str | None:
        return folder_of(value)


@router.post("/preview")
async def preview(body: bulk.BulkFilter, request: Request) -> dict[str, Any]:
    """A creator's models on Civitai (following its cursor, within bounds): each one's newest
    version and primary model file, its size, whether it is already downloaded or queued; and
    the totals. Nothing is queued. NSFW models only while show_nsfw is on."""
    state = request.app.state
    return await bulk.preview(state.civitai, state.store, body.within(state.settings.show_nsfw))


@router.post("", status_code=202, response_model=BatchResult)
async def queue(body: BulkRequest, request: Request) -> Any:
    """Queue the confirmed items as a batch: a file already queued returns its job, one
    completed and in place its job with `duplicate` true; answered like /api/batch."""
    entries = []
    for index, item in enumerate(body.items):
        fields: dict[str, Any] = {
            "modelVersionId": item.modelVersionId,
            "track": body.track,
            "priority": body.priority,
        }
        if item.fileId is not None:
            fields["fileId"] = item.fileId
        if kind := item.model_type or body.model_type:
            fields["model_type"] = kind
        entries.append((index, JobRequest.model_validate(fields)))
    jobs, errors = await request.app.state.queue.submit_many(entries, source="bulk")
    if not jobs:
        return JSONResponse(
            {"detail": "No item can be queued", "jobs": [], "errors": errors}, status_code=422
        )
    return {"jobs": jobs, "errors": errors}
