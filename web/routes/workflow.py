"""POST /api/workflow: a ComfyUI workflow in, each model it needs answered (and queued)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from sources.workflow_jobs import WorkflowJobs, summary
from sources.workflow_parse import read_models
from web.auth import require_key
from web.uploads import file_or_json

router = APIRouter(prefix="/api", tags=["workflow"], dependencies=[Depends(require_key)])


@router.post("/workflow")
async def workflow(
    request: Request,
    dry_run: bool = Query(False, description="Answer the table without queuing anything"),
) -> dict[str, Any]:
    """The models a ComfyUI workflow (UI or API format) needs, each answered `present` (its
    path), `queued` (the job), `to_queue` (dry run), `no_source` (no URL: the node naming it) or
    `refused` (why); the missing ones with a URL are queued unless `dry_run`."""
    raw, source = await file_or_json(
        request,
        "workflow file",
        "Send the workflow as JSON (Content-Type: application/json) or upload its file as "
        "multipart/form-data (field 'file')",
    )
    models = await read_models(raw, source)  # bounded, linear, and never on the event loop
    rows = await WorkflowJobs(request.app.state.queue).answer(models, dry_run)
    return {"models": rows, "summary": summary(rows), "dry_run": dry_run}
