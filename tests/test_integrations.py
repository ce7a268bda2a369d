"""GET /api/integrations/comfyui (issue 16): the extra_model_paths.yaml block, read back the way
ComfyUI reads it, names existing folders in which ComfyUI finds each downloaded file under the
folder name of its type, in every layout and with `folders` overrides."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import yaml

from library.integrations import COMFYUI_FOLDERS, comfyui_folders
from library.layout import LAYOUTS, Layout
from tests.conftest import REPO, wait_job

# ComfyUI's folder_paths.py: `supported_pt_extensions`, and `map_legacy`.
SUPPORTED_PT_EXTENSIONS = {".ckpt", ".pt", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
LEGACY = {"unet": "diffusion_models", "clip": "text_encoders"}

# A few Civitai types → the daemon's type; several share ComfyUI's `loras`.
TYPES = {
    "Checkpoint": "checkpoint",
    "LORA": "lora",
    "LoCon": "locon",
    "DoRA": "dora",
    "TextualInversion": "embedding",
    "Upscaler": "upscaler",
    "Detection": "detection",
}
COMFYUI_NAME = {kind: name for name, kinds in COMFYUI_FOLDERS.items() for kind in kinds}


def comfyui_extra_paths(yaml_path: Path) -> dict[str, list[str]]:
    """What ComfyUI adds for the file, done as comfyanonymous/ComfyUI `utils/extra_config.py`
    `load_extra_path_config` does it: safe_load; per top-level key pop `base_path` (expanduser,
    expandvars) and `is_default`; split each other value on newlines, skip empty lines, join
    each to base_path (else to the YAML's folder); `add_model_folder_path` maps legacy names."""
    with open(yaml_path) as stream:
        config = yaml.safe_load(stream)
    added: dict[str, list[str]] = {}
    for c in config:
        conf = config[c]
        if conf is None:
            continue
        base_path = None
        if "base_path" in conf:
            base_path = conf.pop("base_path")
            base_path = os.path.expandvars(os.path.expanduser(base_path))
        if "is_default" in conf:
            conf.pop("is_default")
        for x in conf:
            for y in conf[x].split("\n"):
                if len(y) == 0:
                    continue
                full_path = y
                if base_path is not None:
                    full_path = os.path.join(base_path, full_path)
                elif not os.path.isabs(full_path):
                    yaml_dir = os.path.dirname(os.path.abspath(yaml_path))
                    full_path = os.path.abspath(os.path.join(yaml_dir, y))
                added.setdefault(LEGACY.get(x, x), []).append(full_path)
    return added


def comfyui_filename_list(folders: list[str]) -> set[str]:
    """folder_paths.get_filename_list: each folder searched recursively, relative names,
    filtered by the model extensions."""
    names = set()
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                if os.path.splitext(f)[-1].lower() in SUPPORTED_PT_EXTENSIONS:
                    names.add(os.path.relpath(os.path.join(dirpath, f), folder))
    return names


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"^```yaml\n(civitai_daemon:\n.*?)^```", text, re.S | re.M).group(1)


def test_comfyui_reads_every_downloaded_file_under_its_folder_name_in_every_layout(
    civitai, daemon, home, tmp_path
):
    """One daemon; the layout (then a `folders` override) changes live; a file of each of a few
    types is downloaded in each, the block is fetched, loaded as ComfyUI loads it, and each
    file is found under its type's ComfyUI folder name (and under no other)."""
    configs = [{"layout": name, "folders": {}} for name in LAYOUTS]
    configs.append(
        {"layout": "comfyui", "folders": {"lora": "my loras/sdxl", "checkpoint": "checkpoints/XL"}}
    )
    ids = iter(range(1000, 9000, 10))
    batches: list[list[tuple[dict, str, bytes]]] = []
    for n, _ in enumerate(configs):
        batch = []
        for civitai_type, kind in TYPES.items():
            model_id = next(ids)
            blob = os.urandom(1024) + f"{n}/{kind}".encode()
            name = f"c{n}_{kind}.safetensors"
            civitai.add_simple(model_id, model_id + 1, blob, filename=name, type=civitai_type)
            batch.append(({"modelVersionId": model_id + 1}, kind, blob))
        batches.append(batch)
    d = daemon(workers=4)
    root = Path(os.path.realpath(home / "data" / "models"))
    kind_of: dict[str, str] = {}  # file name → its model type, every layout so far
    with d.client() as c:
        for n, config in enumerate(configs):
            r = c.patch("/api/settings", json=config)
            assert r.status_code == 200 and r.json()["restart_needed"] == [], r.text
            queued = c.post("/api/batch", json=[req for req, _, _ in batches[n]])
            assert queued.status_code == 202 and queued.json()["errors"] == [], queued.text
            for job, (_, kind, blob) in zip(queued.json()["jobs"], batches[n], strict=True):
                done = wait_job(c, job["id"])
                assert hashlib.sha256(Path(done["path"]).read_bytes()).digest() == (
                    hashlib.sha256(blob).digest()
                )
                kind_of[Path(done["path"]).name] = kind

            r = c.get("/api/integrations/comfyui")
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "text/yaml; charset=utf-8"
            yaml_path = tmp_path / f"extra_model_paths_{n}.yaml"
            yaml_path.write_bytes(r.content)
            if n == 0:  # the README shows the default layout's block
                assert r.text.split("\n", 2)[2] == readme_block().split("\n", 2)[2]
                assert "  loras: |\n    lora\n    locon\n    dora\n" in r.text

            added = comfyui_extra_paths(yaml_path)
            assert set(added) == set(COMFYUI_FOLDERS)
            for paths in added.values():
                for path in paths:
                    assert Path(path).is_dir(), (config, path)
                    assert os.path.realpath(path).startswith(str(root) + os.sep)
            wanted = {f"c{n}_{kind}.safetensors": COMFYUI_NAME[kind] for _, kind, _ in batches[n]}
            for comfy_name, paths in added.items():
                listed = {Path(f).name for f in comfyui_filename_list(paths)}
                # Everything ComfyUI lists there is a file of a type it loads from there (Forge
                # keeps UNet-only models with its checkpoints: the one folder serves both)...
                loads = set(COMFYUI_FOLDERS[comfy_name])
                if config["layout"] == "forge" and comfy_name == "diffusion_models":
                    loads.add("checkpoint")
                assert {kind_of[f] for f in listed} <= loads, (
                    config,
                    comfy_name,
                    listed,
                )
                # ...and each file of this round is listed under its type's name.
                assert {f for f, name in wanted.items() if name == comfy_name} <= listed, (
                    config,
                    comfy_name,
                    listed,
                )
            if config["folders"]:
                assert added["loras"] == [str(root / "my loras/sdxl"), str(root / "loras")]
                assert added["checkpoints"] == [str(root / "checkpoints/XL")]

        as_json = c.get("/api/integrations/comfyui", params={"format": "json"})
        assert as_json.status_code == 200
        body = as_json.json()
        assert body["base_path"] == str(root) and body["layout"] == "comfyui"
        assert body["folders"]["loras"] == ["my loras/sdxl", "loras"]
        assert yaml.safe_load(body["yaml"])["civitai_daemon"]["base_path"] == str(root)
    d.stop()


def test_the_block_is_for_the_api_key_only(civitai, daemon, home):
    d = daemon(viewer_token="wall-screen-key")
    with d.client() as c:
        viewer = c.get(
            "/api/integrations/comfyui", headers={"Authorization": "Bearer wall-screen-key"}
        )
        assert viewer.status_code == 403
        assert viewer.json() == {
            "detail": "The ComfyUI block shows this machine's folders: it is for the API key "
            "only; the viewer key cannot see it."
        }
        nobody = c.get("/api/integrations/comfyui", headers={"Authorization": ""})
        assert nobody.status_code == 401
    assert not (home / "data" / "models" / "lora").exists()  # refused: nothing created
    d.stop()


def test_a_folder_that_is_a_link_out_of_download_dir_is_refused_and_nothing_made_there(
    civitai, daemon, home, tmp_path
):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    models = home / "data" / "models"
    models.mkdir(parents=True)
    (models / "models").symlink_to(outside, target_is_directory=True)
    d = daemon(layout="a1111")
    with d.client() as c:
        r = c.get("/api/integrations/comfyui")
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert "outside download_dir" in detail and str(outside) in detail, detail
    assert list(outside.iterdir()) == []
    d.stop()


def test_a_folder_inside_another_of_the_same_comfyui_name_is_listed_once():
    """ComfyUI searches each folder recursively: `loras` and `loras/sdxl` both listed would
    show each SDXL LoRA twice, as `sdxl/x.safetensors` and `x.safetensors`."""
    folders = comfyui_folders(Layout("comfyui", {"lora": "loras/sdxl", "dora": "dora"}))
    assert folders["loras"] == ["loras", "dora"]
    assert comfyui_folders(Layout("default", {"locon": "lora/locon"}))["loras"] == [
        "lora",
        "dora",
    ]
