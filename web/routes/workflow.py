"""POST /api/workflow: a ComfyUI workflow in, each model it needs answered (and queued)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

import json_body
from errors import InvalidRequest, UnsupportedMediaType
from sources.workflow_jobs import WorkflowJobs, summary
from sources.workflow_parse import read_models
from web.auth import require_key

router = APIRouter(prefix="/api", tags=["workflow"], dependencies=[Depends(require_key)])


async def _read_workflow(request: Request) -> tuple[bytes, str]:
    content_type = json_body.media_type(request.headers.get("content-type"))
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidRequest("Upload the workflow file in a form field named 'file'")
        source = f"The uploaded file {upload.filename!r}"
        return await upload.read(), source
    if json_body.is_json(content_type):
        return await request.body(), "The request body"
    raise UnsupportedMediaType(
        "Send the workflow as JSON (Content-Type: application/json) or upload its file as "
        f"multipart/form-data (field 'file'), not {content_type}"
    )


@router.post("/workflow")
async def workflow(
    request: Request,
    dry_run: bool = Query(False, description="Answer the table without queuing anything"),
) -> dict[str, Any]:
    """The models a ComfyUI workflow (UI or API format) needs, each answered `present` (its
    path), `queued` (the job), `to_queue` (dry run), `no_source` (no URL: the node naming it) or
    `refused` (why); the missing ones with a URL are queued unless `dry_run`."""
    raw, source = await _read_workflow(request)
    models = await read_models(raw, source)  # bounded, linear, and never on the event loop
    rows = await WorkflowJobs(request.app.state.queue).answer(models, dry_run)
    return {"models": rows, "summary": summary(rows), "dry_run": dry_run}
