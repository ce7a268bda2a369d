"""A ComfyUI custom-node folder: copy or link it into ComfyUI's `custom_nodes/`. It adds no node;
it adds routes under `/civitai_daemon/` to ComfyUI's server that forward to the daemon with the
daemon's key (kept in ComfyUI's process, never sent to the page), and a frontend extension
(`web/`) with the "Fetch missing models" command, menu entry and sidebar tab.

ComfyUI loads this file with `importlib.util.spec_from_file_location(<folder name>, …/__init__.py)`
and reads `NODE_CLASS_MAPPINGS` and `WEB_DIRECTORY` from it (ComfyUI's nodes.py,
`load_custom_node`); it serves `WEB_DIRECTORY` at `/extensions/<folder name>/` (server.py,
`PromptServer.add_routes`).

Must not import: daemon, main, engine, sources, library, web, config, notify, updater, errors,
database, events, job_secrets, json_body, safefs, logger, schema, cli, install, launch, run_tests,
webhook_server, tests, bench, fastapi
"""

from __future__ import annotations

from .routes import register

NODE_CLASS_MAPPINGS: dict[str, type] = {}  # no node: only routes and a frontend extension
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
WEB_DIRECTORY = "./web"

try:  # inside ComfyUI: its running server (server.py, `PromptServer.__init__` sets `instance`)
    from server import PromptServer
except ImportError:  # imported outside ComfyUI (tests, linters): nothing to register with
    PromptServer = None
if PromptServer is not None and getattr(PromptServer, "instance", None) is not None:
    register(PromptServer.instance.routes)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
