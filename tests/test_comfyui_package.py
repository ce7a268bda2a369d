"""The ComfyUI package (integrations/comfyui) in ComfyUI's real frontend from PyPI, the version
ComfyUI's requirements.txt pinned (1.45.15) and the latest, against tests/comfyui_standin.py and
the real daemon: a template's missing model goes from "missing" to listed in its loader."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import types
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.comfyui_standin import ComfyStandIn, template

PINNED = "1.45.15"  # ComfyUI's requirements.txt: comfyui-frontend-package==1.45.15
TAB_ID = "civitai-daemon-fetch"
# The two 404s of a fresh ComfyUI user folder (tests in COMFYUI-FRONTEND.md), allowed by name.
HARMLESS_404 = {"/user.css", "/api/userdata/user.css", "/api/userdata/comfy.templates.json"}
SDXL = "sd_xl_base_1.0.safetensors"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _static(root: Path) -> Path:
    return root / "comfyui_frontend_package" / "static"


@pytest.fixture(scope="session")
def frontends(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """version → the frontend's static folder: the dev dependency (the latest) and the pinned
    one, installed from PyPI into a folder of this session (the wheel holds only static files)."""
    from importlib.metadata import version

    import comfyui_frontend_package

    from install import find_uv

    found = {version("comfyui-frontend-package"): Path(comfyui_frontend_package.__file__).parent}
    found = {v: p / "static" for v, p in found.items()}
    target = tmp_path_factory.mktemp("frontend-pinned")
    uv = shutil.which("uv") or find_uv()
    spec = f"comfyui-frontend-package=={PINNED}"
    done = subprocess.run(
        [uv, "pip", "install", "--no-deps", "--target", str(target), spec],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"{spec} could not be installed from PyPI: {done.stderr}"
    found[PINNED] = _static(target)
    assert len(found) == 2, f"the latest frontend is the pinned one: {found}"
    return found


class Watch:
    """Every request of the page: off loopback → aborted and recorded; an error answer not
    allowlisted by name → recorded. The test fails on either."""

    def __init__(self, page) -> None:
        self.outside: list[tuple[str, str]] = []
        self.errors: list[str] = []
        page.context.route("**/*", self._route)
        page.on("response", self._response)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _route(self, route) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.outside.append((route.request.method, route.request.url))
            route.abort()

    def _response(self, response) -> None:
        path = urlsplit(response.url).path
        if response.status >= 400 and path not in HARMLESS_404:
            self.errors.append(f"{response.status} {response.request.method} {path}")

    def unexpected(self) -> list[str]:
        # The frontend's missing-model check asks huggingface.co for the size of each model the
        # workflow names (a HEAD of its URL): blocked, and allowed by name; anything else fails.
        outside = [
            f"{method} {url}"
            for method, url in self.outside
            if not (method == "HEAD" and url.startswith("https://huggingface.co/"))
        ]
        return outside + self.errors


def boot(page, standin: ComfyStandIn) -> Watch:
    watch = Watch(page)
    page.goto(standin.url + "/")
    page.wait_for_function("() => window.app && window.app.graph && window.app.extensionManager")
    page.wait_for_function(
        "() => app.extensions.some((e) => e.name === 'CivitaiDaemon.FetchMissingModels')"
    )
    return watch


def open_tab(page):
    # The frontend gives every registered sidebar tab a command Workspace.ToggleSidebarTab.<id>
    # (ComfyUI_frontend, src/stores/workspace/sidebarTabStore.ts `registerSidebarTab`).
    page.evaluate(
        f"() => app.extensionManager.command.execute('Workspace.ToggleSidebarTab.{TAB_ID}')"
    )
    return page.locator("table.civitai-daemon-models")


@pytest.mark.parametrize("which", ["latest", PINNED])
def test_a_templates_missing_checkpoint_is_fetched_verified_and_listed_in_its_loader(
    which, frontends, browser, hf, daemon, tmp_path, monkeypatch
):
    """image_sdxl_simple names sd_xl_base_1.0.safetensors with its Hub URL; ComfyUI lacks it.
    The sidebar says "missing"; one click fetches it through the package's route; the daemon
    verifies it into the stand-in's checkpoints folder; after Comfy.RefreshNodeDefinitions the
    loader lists it and the sidebar says so."""
    version = PINNED if which == PINNED else next(v for v in frontends if v != PINNED)
    blob = os.urandom(400_000)
    hf.add_repo("stabilityai/stable-diffusion-xl-base-1.0", {SDXL: blob})
    hf.rate = 100_000  # bytes/s: four seconds of download, long enough to see its progress
    models = tmp_path / "comfy" / "models"
    (models / "checkpoints").mkdir(parents=True)
    d = daemon(layout="comfyui", download_dir=str(models), hf_base_url=hf.base_url)
    monkeypatch.setenv("CIVITAI_DAEMON_URL", d.base_url)
    monkeypatch.setenv("CIVITAI_DAEMON_KEY", d.token)
    standin = ComfyStandIn(frontends[version], models, version).start()
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        watch = boot(page, standin)
        page.evaluate("(wf) => app.loadGraphData(wf)", template("image_sdxl_simple"))
        table = open_tab(page)
        row = table.locator(f'tr[data-model="{SDXL}"]')
        row.get_by_text("missing").wait_for()
        assert "checkpoints" in row.inner_text()
        calls_before = standin.object_info_calls
        panel = page.locator(".civitai-daemon-panel")
        panel.get_by_role("button", name="Fetch missing models").click()
        row.get_by_text(re.compile(r"^downloading \d+%$")).wait_for()  # the job's progress
        row.get_by_text("listed in ComfyUI").wait_for(timeout=40_000)
        ARTIFACTS.mkdir(exist_ok=True)  # the README's screenshot is taken from this one
        page.screenshot(
            path=str(ARTIFACTS / f"comfyui-fetch-missing-{which}.png"),
            clip={"x": 0, "y": 0, "width": 1280, "height": 280},
        )
        on_disk = models / "checkpoints" / SDXL
        assert hashlib.sha256(on_disk.read_bytes()).digest() == hashlib.sha256(blob).digest()
        assert standin.object_info_calls > calls_before  # the refresh asked ComfyUI again
        offered = page.evaluate(
            "() => app.graph.nodes.find((n) => n.type === 'CheckpointLoaderSimple')"
            ".widgets[0].options.values"
        )
        assert SDXL in offered
        assert (
            "Every model is listed in ComfyUI."
            in page.locator(".civitai-daemon-message").inner_text()
        )
        html = page.content()
        assert d.token not in html  # the key stays in ComfyUI's server
        assert watch.unexpected() == []
    finally:
        context.close()
        standin.stop()
        d.stop()


def test_the_packages_routes_keep_the_key_refuse_cross_origin_posts_and_say_what_is_missing(
    civitai, daemon, tmp_path, monkeypatch
):
    """Through the stand-in's ported origin check a cross-origin POST is refused; a non-JSON
    POST is refused with why; with no key set the route says where to put it; the daemon's
    answers pass through without the key."""
    frontend = tmp_path / "static"
    frontend.mkdir()
    (frontend / "index.html").write_text("<html></html>")
    (frontend / "extensions").mkdir()
    d = daemon(layout="comfyui", download_dir=str(tmp_path / "models"))
    monkeypatch.delenv("CIVITAI_DAEMON_KEY", raising=False)
    monkeypatch.setenv("CIVITAI_DAEMON_URL", d.base_url)  # a URL alone is no link
    standin = ComfyStandIn(frontend, tmp_path / "models", "none").start()
    try:
        with httpx.Client(base_url=standin.url, timeout=10) as c:
            r = c.post("/civitai_daemon/workflow", json={"nodes": []})
            assert r.status_code == 503 and "CIVITAI_DAEMON_KEY" in r.json()["detail"]
            monkeypatch.setenv("CIVITAI_DAEMON_URL", d.base_url)
            monkeypatch.setenv("CIVITAI_DAEMON_KEY", d.token)
            evil = {"Origin": "http://evil.example:8188"}
            r = c.post("/api/civitai_daemon/workflow", json={"nodes": []}, headers=evil)
            assert r.status_code == 403
            r = c.post(
                "/civitai_daemon/workflow", content=b"{}", headers={"Content-Type": "text/plain"}
            )
            assert r.status_code == 415 and "application/json" in r.json()["detail"]
            r = c.post("/api/civitai_daemon/workflow?dry_run=true", json={"nodes": []})
            assert r.status_code == 200 and r.json()["dry_run"] is True
            assert d.token not in r.text
            r = c.get("/civitai_daemon/jobs?ids=1,x")
            assert r.status_code == 422
            r = c.get("/civitai_daemon/search", params={"name": " "})
            assert r.status_code == 422 and "name=" in r.json()["detail"]
            r = c.get("/civitai_daemon/status")
            assert r.json() == {"configured": True, "reachable": True}
            closed = socket.socket()
            closed.bind(("127.0.0.1", 0))
            gone = f"http://127.0.0.1:{closed.getsockname()[1]}"
            closed.close()  # nothing listens there now
            monkeypatch.setenv("CIVITAI_DAEMON_URL", gone)
            r = c.post("/civitai_daemon/workflow", json={"nodes": []})
            assert r.status_code == 502, r.text
            assert r.json()["detail"].startswith(f"The daemon at {gone} did not answer")
            assert c.get("/civitai_daemon/status").json() == {
                "configured": True,
                "reachable": False,
                "detail": r.json()["detail"],
            }
            monkeypatch.setenv("CIVITAI_DAEMON_URL", d.base_url)
            monkeypatch.setenv("CIVITAI_DAEMON_KEY", "wrong-" + d.token)
            r = c.post("/civitai_daemon/workflow", json={"nodes": []})
            assert r.status_code == 401 and d.token not in r.text
    finally:
        standin.stop()
        d.stop()


@pytest.mark.parametrize("which", ["latest", PINNED])
def test_a_model_named_without_a_url_is_found_on_civitai_by_its_file_name_and_fetched_as_named(
    which, frontends, browser, civitai, hf, daemon, tmp_path, monkeypatch
):
    """The template's checkpoint with no `properties.models`: the sidebar offers "Download into
    ComfyUI's folders", searches Civitai by the file name's words, shows the candidates; the one
    the user confirms is queued as a checkpoint under the workflow's file name, verified against
    Civitai's SHA256 and listed by the loader."""
    version = PINNED if which == PINNED else next(v for v in frontends if v != PINNED)
    blob = os.urandom(300_000)
    right = civitai.file(blob, name="sdXL_v10VAEFix.safetensors")
    civitai.add_model(101, "SD XL base 1.0", "Checkpoint", [civitai.version(1010, [right])])
    civitai.add_simple(102, 1020, b"a lora", filename="detail.safetensors", type="LORA")
    workflow = template("image_sdxl_simple")
    loader = next(n for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple")
    del loader["properties"]["models"]  # the workflow names the file but gives no URL
    models = tmp_path / "comfy" / "models"
    (models / "checkpoints").mkdir(parents=True)
    d = daemon(layout="comfyui", download_dir=str(models), hf_base_url=hf.base_url)
    monkeypatch.setenv("CIVITAI_DAEMON_URL", d.base_url)
    monkeypatch.setenv("CIVITAI_DAEMON_KEY", d.token)
    standin = ComfyStandIn(frontends[version], models, version).start()
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        watch = boot(page, standin)
        page.evaluate("(wf) => app.loadGraphData(wf)", workflow)
        table = open_tab(page)
        table.locator(f'tr[data-model="{SDXL}"]').get_by_text("missing, no URL").wait_for()
        table.get_by_role(
            "button", name=f"search Civitai and the Hugging Face Hub for {SDXL}"
        ).click()
        candidate = table.locator('[data-candidate="sdXL_v10VAEFix.safetensors"]')
        candidate.wait_for()
        assert table.locator("[data-candidate]").count() == 1  # the LoRA's name does not match
        assert "SD XL base 1.0" in candidate.inner_text()
        candidate.get_by_role("button", name="Use this").click()
        table.locator(f'tr[data-model="{SDXL}"]').get_by_text("listed in ComfyUI").wait_for(
            timeout=40_000
        )
        on_disk = models / "checkpoints" / SDXL
        assert hashlib.sha256(on_disk.read_bytes()).hexdigest().upper() == right.sha256
        with d.client() as c:
            (job,) = c.get("/api/jobs").json()["jobs"]
        assert (job["model_type"], job["modelVersionId"]) == ("checkpoint", 1010)
        offered = page.evaluate(
            "() => app.graph.nodes.find((n) => n.type === 'CheckpointLoaderSimple')"
            ".widgets[0].options.values"
        )
        assert SDXL in offered
        assert watch.unexpected() == []
    finally:
        context.close()
        standin.stop()
        d.stop()


@pytest.mark.parametrize("which", ["latest", PINNED])
def test_a_model_named_without_a_url_that_only_the_hub_has_is_found_there_confirmed_and_listed(
    which, frontends, browser, civitai, hf, daemon, tmp_path, monkeypatch
):
    """The template's checkpoint with no URL; Civitai has a model of those words (another file)
    and the Hub the file itself. The sidebar lists both with their source; the user confirms
    the Hub's; it is queued pinned to the commit listed, lands in ComfyUI's checkpoints folder
    under the workflow's name, verified by the Hub's SHA256, and the loader lists it."""
    version = PINNED if which == PINNED else next(v for v in frontends if v != PINNED)
    blob = os.urandom(300_000)
    other = civitai.file(b"another checkpoint", name="sdXL_v10VAEFix.safetensors")
    civitai.add_model(101, "SD XL base 1.0", "Checkpoint", [civitai.version(1010, [other])])
    hf.add_repo("decoys/sd-xl-base-1.0-lora", {"SD_XL_BASE_1.0.safetensors": b"other case"})
    repo = "mirrors/sd-xl-base-1.0"
    commit = hf.add_repo(repo, {"README.md": b"# mirror\n", f"weights/{SDXL}": blob})
    workflow = template("image_sdxl_simple")
    loader = next(n for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple")
    del loader["properties"]["models"]  # the workflow names the file but gives no URL
    models = tmp_path / "comfy" / "models"
    (models / "checkpoints").mkdir(parents=True)
    d = daemon(layout="comfyui", download_dir=str(models), hf_base_url=hf.base_url)
    monkeypatch.setenv("CIVITAI_DAEMON_URL", d.base_url)
    monkeypatch.setenv("CIVITAI_DAEMON_KEY", d.token)
    standin = ComfyStandIn(frontends[version], models, version).start()
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        watch = boot(page, standin)
        page.evaluate("(wf) => app.loadGraphData(wf)", workflow)
        table = open_tab(page)
        row = table.locator(f'tr[data-model="{SDXL}"]')
        row.get_by_text("missing, no URL").wait_for()
        table.get_by_role(
            "button", name=f"search Civitai and the Hugging Face Hub for {SDXL}"
        ).click()
        from_hub = table.locator(f'[data-source="huggingface"][data-candidate="{SDXL}"]')
        from_hub.wait_for()
        shown = table.locator("[data-candidate]")
        assert shown.evaluate_all("(els) => els.map((e) => e.dataset.source)") == [
            "civitai",
            "huggingface",
        ]
        assert shown.first.inner_text().startswith("Civitai: SD XL base 1.0")
        assert from_hub.inner_text().startswith(f"Hugging Face: {repo} · weights/{SDXL}")
        from_hub.get_by_role("button", name="Use this").click()
        row.get_by_text("listed in ComfyUI").wait_for(timeout=40_000)
        on_disk = models / "checkpoints" / SDXL
        assert hashlib.sha256(on_disk.read_bytes()).digest() == hashlib.sha256(blob).digest()
        with d.client() as c:
            (job,) = c.get("/api/jobs").json()["jobs"]
        assert job["model_type"] == "checkpoint"
        assert job["sha256"] == hashlib.sha256(blob).hexdigest()
        assert (job["model_name"], job["version_name"]) == (repo, f"{commit}@{commit[:12]}")
        assert hf.requests_to("hub", f"/{repo}/resolve/{commit}/weights/{SDXL}")  # pinned
        offered = page.evaluate(
            "() => app.graph.nodes.find((n) => n.type === 'CheckpointLoaderSimple')"
            ".widgets[0].options.values"
        )
        assert SDXL in offered
        assert d.token not in page.content()
        assert watch.unexpected() == []
    finally:
        context.close()
        standin.stop()
        d.stop()


def test_the_key_may_live_in_a_file_in_comfyuis_user_folder_instead_of_the_environment(
    civitai, daemon, tmp_path, monkeypatch
):
    """With no CIVITAI_DAEMON_KEY, civitai_daemon.json in ComfyUI's user folder
    (folder_paths.get_user_directory) gives the URL and key; a file without a key is no key."""
    d = daemon()
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.delenv("CIVITAI_DAEMON_KEY", raising=False)
    monkeypatch.delenv("CIVITAI_DAEMON_URL", raising=False)
    stub = types.ModuleType("folder_paths")
    stub.get_user_directory = lambda: str(user)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "folder_paths", stub)
    frontend = tmp_path / "static"
    (frontend / "extensions").mkdir(parents=True)
    (frontend / "index.html").write_text("<html></html>")
    standin = ComfyStandIn(frontend, tmp_path / "models", "none").start()
    try:
        with httpx.Client(base_url=standin.url, timeout=10) as c:
            (user / "civitai_daemon.json").write_text(json.dumps({"url": d.base_url}))  # no key
            assert c.get("/civitai_daemon/status").json()["configured"] is False
            config = {"url": d.base_url, "key": d.token}
            (user / "civitai_daemon.json").write_text(json.dumps(config))
            assert c.get("/civitai_daemon/status").json() == {"configured": True, "reachable": True}
    finally:
        standin.stop()
        d.stop()


def test_the_command_opens_the_tab_and_fetches_and_the_menu_lists_it(
    frontends, browser, hf, daemon, tmp_path, monkeypatch
):
    """The command "Fetch missing models" (also under Extensions in the menu) opens the sidebar
    tab and fetches what the open workflow lacks, without another click."""
    version = next(v for v in frontends if v != PINNED)
    blob = os.urandom(200_000)
    hf.add_repo("stabilityai/stable-diffusion-xl-base-1.0", {SDXL: blob})
    models = tmp_path / "comfy" / "models"
    (models / "checkpoints").mkdir(parents=True)
    d = daemon(layout="comfyui", download_dir=str(models), hf_base_url=hf.base_url)
    monkeypatch.setenv("CIVITAI_DAEMON_URL", d.base_url)
    monkeypatch.setenv("CIVITAI_DAEMON_KEY", d.token)
    standin = ComfyStandIn(frontends[version], models, version).start()
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        watch = boot(page, standin)
        menu = page.evaluate(
            "() => app.extensions.find((e) => e.name === 'CivitaiDaemon.FetchMissingModels')"
            ".menuCommands"
        )
        assert menu == [{"path": ["Extensions"], "commands": ["CivitaiDaemon.FetchMissingModels"]}]
        page.evaluate("(wf) => app.loadGraphData(wf)", template("image_sdxl_simple"))
        page.evaluate(
            "() => app.extensionManager.command.execute('CivitaiDaemon.FetchMissingModels')"
        )
        row = page.locator(f'table.civitai-daemon-models tr[data-model="{SDXL}"]')
        row.get_by_text("listed in ComfyUI").wait_for(timeout=40_000)
        assert (models / "checkpoints" / SDXL).read_bytes() == blob
        assert watch.unexpected() == []
    finally:
        context.close()
        standin.stop()
        d.stop()


def test_with_no_daemon_set_the_tab_says_where_to_put_its_url_and_key(
    frontends, browser, tmp_path, monkeypatch
):
    """Before the URL and key are set, the tab says in one sentence where they go; nothing is
    fetched and the page shows no error of its own."""
    version = next(v for v in frontends if v != PINNED)
    monkeypatch.delenv("CIVITAI_DAEMON_URL", raising=False)
    monkeypatch.delenv("CIVITAI_DAEMON_KEY", raising=False)
    models = tmp_path / "comfy" / "models"
    (models / "checkpoints").mkdir(parents=True)
    standin = ComfyStandIn(frontends[version], models, version).start()
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        watch = boot(page, standin)
        page.evaluate("(wf) => app.loadGraphData(wf)", template("image_sdxl_simple"))
        open_tab(page)
        message = page.locator(".civitai-daemon-message")
        message.get_by_text("CIVITAI_DAEMON_KEY").wait_for()
        assert "civitai_daemon.json" in message.inner_text()
        # The one error answer is the route's 503 saying so; everything else answered.
        assert watch.unexpected() == ["503 POST /api/civitai_daemon/workflow"]
    finally:
        context.close()
        standin.stop()
