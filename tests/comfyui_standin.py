"""A small stand-in of ComfyUI's server (aiohttp, as ComfyUI's is) serving the real frontend from
PyPI, with the integrations/comfyui package loaded and its routes mounted as ComfyUI mounts them.

Each route is ComfyUI's own, read from comfyanonymous/ComfyUI server.py (`PromptServer.__init__`
and `add_routes`: every non-static route served bare and under /api), app/user_manager.py
(/users, /userdata), app/app_settings.py (/settings) and api_server/routes/internal (/internal/…);
see tests/fixtures/SOURCES.md. Only what the frontend asks while booting, refreshing node
definitions and running our extension is here; anything else is a 404 the test fails on.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import ipaddress
import json
import sys
import threading
import types
import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "integrations" / "comfyui"
OBJECT_INFO = Path(__file__).parent / "fixtures" / "comfyui_object_info_2026-12.json"
# The loaders' inputs whose options are a models folder's files (nodes.py, each loader's
# INPUT_TYPES: folder_paths.get_filename_list("checkpoints") …).
LOADER_FOLDERS = {("CheckpointLoaderSimple", "ckpt_name"): "checkpoints"}
MODEL_SUFFIXES = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


def is_loopback(host: str | None) -> bool:
    """server.py `is_loopback`, for the literal addresses and `localhost` a test uses."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@web.middleware
async def origin_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """server.py `create_origin_only_middleware`, ported: on a loopback Host, a request whose
    Origin names another host:port is refused with 403 (a page elsewhere posting to ComfyUI)."""
    if "Host" in request.headers and "Origin" in request.headers:
        host_domain = request.headers["Host"].lower()
        parsed = urllib.parse.urlparse(request.headers["Origin"])
        origin_domain = parsed.netloc.lower()
        host_parsed = urllib.parse.urlsplit("//" + host_domain)
        loopback = is_loopback(host_parsed.hostname)
        if parsed.port is None:
            host_domain = host_parsed.hostname
        if host_parsed.port is None:
            origin_domain = parsed.hostname
        if loopback and host_domain and origin_domain and host_domain != origin_domain:
            return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    return await handler(request)


def load_package(name: str) -> types.ModuleType:
    """The package loaded as nodes.py `load_custom_node` loads a custom-node folder, with a
    `server` module whose `PromptServer.instance.routes` is the table it registers on."""
    spec = importlib.util.spec_from_file_location(name, PACKAGE / "__init__.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class ComfyStandIn:
    """`ComfyStandIn(static, models).start()`: serves on 127.0.0.1 until `stop()`."""

    def __init__(self, static: Path, models: Path, frontend_version: str) -> None:
        self.static = static
        self.models = models
        self.frontend_version = frontend_version
        self.settings: dict[str, Any] = {
            "Comfy.TutorialCompleted": True,
            "Comfy.Notification.ShowVersionUpdates": False,
        }
        self.userdata: dict[str, bytes] = {}
        self.object_info_calls = 0
        self.loop = asyncio.new_event_loop()
        self.url = ""

    # The routes -----------------------------------------------------------------------------

    def filenames(self, folder: str) -> list[str]:
        """folder_paths.get_filename_list: the model files under the folder, relative, sorted."""
        base = self.models / folder
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and p.suffix in MODEL_SUFFIXES
        )

    def object_info(self) -> dict[str, Any]:
        info = copy.deepcopy(json.loads(OBJECT_INFO.read_text(encoding="utf-8")))
        for (node, field), folder in LOADER_FOLDERS.items():
            info[node]["input"]["required"][field][0] = self.filenames(folder)
        return info

    def routes(self) -> web.RouteTableDef:
        routes = web.RouteTableDef()
        json_ = web.json_response

        @routes.get("/ws")
        async def ws(request: web.Request) -> web.WebSocketResponse:
            sock = web.WebSocketResponse()
            await sock.prepare(request)
            sid = request.rel_url.query.get("clientId") or "standin"
            status = {"exec_info": {"queue_remaining": 0}}
            await sock.send_json({"type": "status", "data": {"status": status, "sid": sid}})
            async for msg in sock:  # the frontend's feature_flags message: answered in kind
                if '"feature_flags"' in msg.data:
                    await sock.send_json({"type": "feature_flags", "data": {}})
            return sock

        @routes.get("/")
        async def root(request: web.Request) -> web.FileResponse:
            return web.FileResponse(self.static / "index.html")

        @routes.get("/features")
        async def features(request: web.Request) -> web.Response:
            return json_({"supports_preview_metadata": True, "max_upload_size": 104857600})

        @routes.get("/users")
        async def users(request: web.Request) -> web.Response:
            return json_({"storage": "server", "migrated": True})  # single-user mode

        @routes.get("/system_stats")
        async def system_stats(request: web.Request) -> web.Response:
            system = {"os": "posix", "ram_total": 1, "ram_free": 1, "comfyui_version": "0.3.0",
                      "python_version": sys.version, "pytorch_version": "2",
                      "embedded_python": False, "argv": ["main.py"]}  # fmt: skip
            device = {"name": "cpu", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0,
                      "torch_vram_total": 0, "torch_vram_free": 0}  # fmt: skip
            return json_({"system": system, "devices": [device]})

        @routes.get("/i18n")
        async def i18n(request: web.Request) -> web.Response:
            return json_({})

        @routes.get("/settings")
        async def settings(request: web.Request) -> web.Response:
            return json_(self.settings)

        @routes.post("/settings")
        async def settings_post(request: web.Request) -> web.Response:
            self.settings.update(await request.json())
            return web.Response()

        @routes.get("/settings/{id}")
        async def setting(request: web.Request) -> web.Response:
            return json_(self.settings.get(request.match_info["id"]))

        @routes.post("/settings/{id}")
        async def setting_post(request: web.Request) -> web.Response:
            self.settings[request.match_info["id"]] = await request.json()
            return web.Response()

        @routes.get("/userdata")
        async def userdata_list(request: web.Request) -> web.Response:
            folder = request.rel_url.query.get("dir", "").strip("/") + "/"
            return json_([k[len(folder) :] for k in self.userdata if k.startswith(folder)])

        @routes.get("/v2/userdata")
        async def userdata_v2(request: web.Request) -> web.Response:
            return json_([])

        @routes.get("/userdata/{file}")
        async def userdata_get(request: web.Request) -> web.Response:
            data = self.userdata.get(request.match_info["file"])
            return web.Response(status=404) if data is None else web.Response(body=data)

        @routes.post("/userdata/{file}")
        async def userdata_post(request: web.Request) -> web.Response:
            name = request.match_info["file"]
            self.userdata[name] = await request.read()
            return json_({"path": name, "size": len(self.userdata[name])})

        @routes.get("/extensions")
        async def extensions(request: web.Request) -> web.Response:
            core = [
                "/" + p.relative_to(self.static).as_posix()
                for p in (self.static / "extensions").rglob("*.js")
            ]
            ours = [
                f"/extensions/civitai_daemon/{p.relative_to(PACKAGE / 'web').as_posix()}"
                for p in (PACKAGE / "web").rglob("*.js")
            ]
            return json_(sorted(core) + sorted(ours))

        @routes.get("/object_info")
        async def object_info(request: web.Request) -> web.Response:
            self.object_info_calls += 1
            return json_(self.object_info())

        @routes.get("/embeddings")
        async def embeddings(request: web.Request) -> web.Response:
            return json_([])

        @routes.get("/experiment/models")
        async def model_folders(request: web.Request) -> web.Response:
            return json_([{"name": "checkpoints", "folders": [str(self.models / "checkpoints")]}])

        @routes.get("/experiment/models/{folder}")
        async def model_files(request: web.Request) -> web.Response:
            names = self.filenames(request.match_info["folder"])
            return json_([{"name": n, "pathIndex": 0} for n in names])

        @routes.get("/global_subgraphs")
        async def global_subgraphs(request: web.Request) -> web.Response:
            return json_({})

        @routes.get("/workflow_templates")
        async def workflow_templates(request: web.Request) -> web.Response:
            return json_({})

        @routes.get("/jobs")
        async def jobs(request: web.Request) -> web.Response:
            page = {"offset": 0, "limit": 0, "total": 0, "has_more": False}
            return json_({"jobs": [], "pagination": page})

        @routes.get("/queue")
        async def queue(request: web.Request) -> web.Response:
            return json_({"queue_running": [], "queue_pending": []})

        @routes.get("/history")
        async def history(request: web.Request) -> web.Response:
            return json_({})

        @routes.get("/prompt")
        async def prompt(request: web.Request) -> web.Response:
            return json_({"exec_info": {"queue_remaining": 0}})

        return routes

    def app(self) -> web.Application:
        app = web.Application(middlewares=[origin_only])
        routes = self.routes()
        server = types.ModuleType("server")
        server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(routes=routes))
        sys.modules["server"] = server
        try:
            load_package("civitai_daemon")  # registers its routes on `routes`, as in ComfyUI
        finally:
            del sys.modules["server"]
        api_routes = web.RouteTableDef()
        for route in routes:  # server.py `add_routes`: each non-static route under /api too
            if isinstance(route, web.RouteDef):
                api_routes.route(route.method, "/api" + route.path)(route.handler, **route.kwargs)
        app.add_routes(api_routes)
        app.add_routes(routes)
        internal = web.Application()
        internal.router.add_get("/folder_paths", self._folder_paths)
        app.add_subapp("/internal", internal)
        app.router.add_static("/extensions/civitai_daemon", PACKAGE / "web")
        templates = _templates_folder()
        app.router.add_static("/templates", templates)
        app.router.add_static("/", self.static)
        return app

    async def _folder_paths(self, request: web.Request) -> web.Response:
        return web.json_response({"checkpoints": [str(self.models / "checkpoints")]})

    # Running --------------------------------------------------------------------------------

    def start(self) -> ComfyStandIn:
        ready = threading.Event()

        async def serve() -> None:
            self.runner = web.AppRunner(self.app(), access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(serve())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(20), "the ComfyUI stand-in did not start"
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _templates_folder() -> Path:
    """The templates ComfyUI serves at /templates (server.py, from comfyui-workflow-templates)."""
    import comfyui_workflow_templates_json

    return Path(comfyui_workflow_templates_json.__file__).parent / "templates"


def template(name: str) -> dict[str, Any]:
    return json.loads((_templates_folder() / f"{name}.json").read_text(encoding="utf-8"))
