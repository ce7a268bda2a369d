"""POST /api/workflow: a ComfyUI workflow in, each model it needs answered (and queued)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

import json_body
from auth import require_key
from errors import InvalidRequest, UnsupportedMediaType
from sources.workflow import NotAWorkflow, models_of
from sources.workflow_jobs import WorkflowJobs, summary

router = APIRouter(prefix="/api", tags=["workflow"], dependencies=[Depends(require_key)])


async def _read_workflow(request: Request) -> tuple[Any, str]:
    content_type = json_body.media_type(request.headers.get("content-type"))
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidRequest("Upload the workflow file in a form field named 'file'")
        source = f"The uploaded file {upload.filename!r}"
        return json_body.loads(await upload.read(), source), source
    if json_body.is_json(content_type):
        return json_body.loads(await request.body(), "The request body"), "The request body"
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
    data, source = await _read_workflow(request)
    try:
        models = models_of(data)
    except NotAWorkflow as exc:
        raise InvalidRequest(f"{source} is not a ComfyUI workflow: {exc}") from None
    rows = await WorkflowJobs(request.app.state.queue).answer(models, dry_run)
    return {"models": rows, "summary": summary(rows), "dry_run": dry_run}
