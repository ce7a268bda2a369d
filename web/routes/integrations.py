"""GET /api/integrations/comfyui: the extra_model_paths.yaml block for ComfyUI (issue 16).

Admin only: it shows the host's absolute download_dir.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from library import integrations
from web import auth
from web.auth import require_key

router = APIRouter(prefix="/api", tags=["integrations"], dependencies=[Depends(require_key)])

YAML_TYPE = "text/yaml; charset=utf-8"


require_admin = auth.require_admin("The ComfyUI block shows this machine's folders: it is")


@router.get(
    "/integrations/comfyui",
    dependencies=[Depends(require_admin)],
    response_model=None,
    responses={200: {"content": {"text/yaml": {}, "application/json": {}}}},
)
async def comfyui(
    request: Request, format: Literal["yaml", "json"] = Query("yaml")
) -> Response | dict[str, Any]:
    """The `extra_model_paths.yaml` block that makes ComfyUI read the daemon's folders in the
    current layout (and `folders` overrides); every folder it names is created. `?format=json`
    gives `{"yaml", "base_path", "layout", "folders"}`."""
    settings = request.app.state.live.current
    root = Path(request.app.state.queue.models_root)
    folders = integrations.comfyui_folders(settings.folder_layout)
    await asyncio.to_thread(integrations.make_folders, root, folders)
    text = integrations.comfyui_block(root, folders)
    if format == "json":
        return {
            "yaml": text,
            "base_path": str(root),
            "layout": settings.layout,
            "folders": folders,
        }
    return Response(text, media_type=YAML_TYPE)
