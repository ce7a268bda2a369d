"""Folders per app (issue 16): a file of each Civitai type lands where ComfyUI, A1111 or Forge
reads it; app folder names are model_type aliases; nothing is written outside download_dir."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from library.layout import LAYOUTS, Layout, model_type_of
from tests.conftest import read_config, run_job, wait_job

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# Civitai's `type` of a model → where each app reads it (ComfyUI: relative to its models/;
# A1111/Forge: relative to the webui folder). Checked against the apps' code; see layout.py.
EXPECTED = {
    "Checkpoint": ("checkpoint", "checkpoints", "models/Stable-diffusion"),
    "LORA": ("lora", "loras", "models/Lora"),
    "LoCon": ("locon", "loras", "models/Lora"),
    "DoRA": ("dora", "loras", "models/Lora"),
    "TextualInversion": ("embedding", "embeddings", "embeddings"),
    "Hypernetwork": ("hypernetwork", "hypernetworks", "models/hypernetworks"),
    "VAE": ("vae", "vae", "models/VAE"),
    "Controlnet": ("controlnet", "controlnet", "models/ControlNet"),
    "Upscaler": ("upscaler", "upscale_models", "models/ESRGAN"),
    "MotionModule": ("motionmodule", "animatediff_models", "extensions/sd-webui-animatediff/model"),
    "Poses": ("poses", "poses", "models/Poses"),
    "Wildcards": ("wildcards", "wildcards", "extensions/sd-dynamic-prompts/wildcards"),
    "Workflows": ("workflows", "workflows", "models/Workflows"),
    "AestheticGradient": (
        "aestheticgradient",
        "aestheticgradient",
        "extensions/stable-diffusion-webui-aesthetic-gradients/aesthetic_embeddings",
    ),
    "Detection": ("detection", "ultralytics/bbox", "models/adetailer"),
    "Other": ("other", "other", "models/Other"),
}


def expected_folder(layout: str, civitai_type: str) -> str:
    default, comfyui, a1111 = EXPECTED[civitai_type]
    return {"default": default, "comfyui": comfyui, "a1111": a1111, "forge": a1111}[layout]


def tree(root: Path, prefix: str = "") -> str:
    """The folders and files under `root` holding a file whose name starts with `prefix`, as
    `tree` would list them (for the closing note)."""
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.name.startswith(prefix)]
    shown = {p.relative_to(root) for p in files}
    shown |= {parent for p in list(shown) for parent in p.parents if parent != Path(".")}
    lines = [root.name + "/"]
    for rel in sorted(shown):
        lines.append("    " * len(rel.parts) + rel.name + ("" if (root / rel).is_file() else "/"))
    return "\n".join(lines) + "\n"


def test_one_download_of_each_civitai_type_lands_where_each_app_reads_it(civitai, daemon, home):
    """One daemon; the layout changes live between batches (PATCH /api/settings), each batch
    names no model_type (Civitai's type decides). Every file is read back and hashed."""
    blobs: dict[tuple[str, str], bytes] = {}
    ids = iter(range(1000, 9000, 10))
    requests: dict[str, list[dict]] = {}
    for layout in LAYOUTS:
        requests[layout] = []
        for kind in EXPECTED:
            model_id = next(ids)
            blob = os.urandom(2048) + f"{layout}/{kind}".encode()
            name = f"{layout}_{kind.lower()}.safetensors"
            civitai.add_simple(model_id, model_id + 1, blob, filename=name, type=kind)
            blobs[(layout, kind)] = blob
            requests[layout].append({"modelVersionId": model_id + 1})
    d = daemon(workers=4)
    root = Path(os.path.realpath(home / "data" / "models"))
    with d.client() as c:
        for layout in LAYOUTS:
            r = c.patch("/api/settings", json={"layout": layout})
            assert r.status_code == 200 and r.json()["restart_needed"] == [], r.text
            batch = c.post("/api/batch", json=requests[layout])
            assert batch.status_code == 202 and batch.json()["errors"] == [], batch.text
            for job, kind in zip(batch.json()["jobs"], EXPECTED, strict=True):
                done = wait_job(c, job["id"])
                name = f"{layout}_{kind.lower()}.safetensors"
                where = root / expected_folder(layout, kind) / name
                assert done["path"] == str(where), (layout, kind, done["path"])
                on_disk = hashlib.sha256(where.read_bytes()).hexdigest()
                assert on_disk == hashlib.sha256(blobs[(layout, kind)]).hexdigest()
        assert read_config(home)["layout"] == "forge"
    ARTIFACTS.mkdir(exist_ok=True)
    for layout in LAYOUTS:
        (ARTIFACTS / f"layout-tree-{layout}.txt").write_text(tree(root, f"{layout}_"))
    d.stop()


@pytest.mark.parametrize(
    ("layout", "model_type", "folder"),
    [
        ("a1111", "Stable-diffusion", "models/Stable-diffusion"),
        ("a1111", "models/Lora", "models/Lora"),
        ("forge", "Lora", "models/Lora"),
        ("comfyui", "loras", "loras"),
        ("comfyui", "upscale_models", "upscale_models"),
        ("comfyui", "unet", "diffusion_models"),
        ("a1111", "models/RealESRGAN", "models/ESRGAN"),
        ("a1111", "models/LyCORIS", "models/Lora"),
        ("default", "Stable-diffusion", "checkpoint"),
    ],
)
def test_an_apps_folder_name_is_accepted_as_model_type(layout, model_type, folder):
    kind = model_type_of(model_type)
    assert kind is not None
    assert Layout(layout).folder(kind) == folder


def test_app_folder_names_as_model_type_and_folders_overrides_place_files_there(
    civitai, daemon, home
):
    blob = os.urandom(4096)
    civitai.add_simple(1, 11, blob, filename="sdxl.safetensors", type="Checkpoint")
    civitai.add_simple(2, 21, blob + b"2", filename="detail.safetensors", type="LORA")
    d = daemon(layout="a1111", folders={"checkpoint": "models/Stable-diffusion/SDXL"})
    root = Path(os.path.realpath(home / "data" / "models"))
    job = run_job(d, {"modelVersionId": 11, "model_type": "Stable-diffusion"})
    assert job["model_type"] == "checkpoint"
    assert job["path"] == str(root / "models/Stable-diffusion/SDXL/sdxl.safetensors")
    job = run_job(d, {"modelVersionId": 21, "model_type": "Lora"})
    assert job["model_type"] == "lora"
    assert job["path"] == str(root / "models/Lora/detail.safetensors")
    assert (root / "models/Lora/detail.safetensors").read_bytes() == blob + b"2"
    d.stop()


@pytest.mark.parametrize(
    "folders",
    [
        {"lora": "../outside"},
        {"lora": "/etc"},
        {"lora": "models/../../x"},
        {"Not A Type!": "x"},
        {"lora": "models/CON"},  # a device on Windows, not a folder
        {"lora": "aux.loras"},
    ],
)
def test_a_folders_override_out_of_download_dir_is_refused_and_nothing_is_written(
    civitai, daemon, home, folders
):
    d = daemon()
    before = (home / "config.json").read_bytes()
    with d.client() as c:
        r = c.patch("/api/settings", json={"folders": folders})
        assert r.status_code == 422, r.text
        assert "folders" in r.json()["detail"], r.text
    assert (home / "config.json").read_bytes() == before
    assert not (home / "data" / "outside").exists()
    d.stop()


def test_a_folders_override_that_is_a_link_out_of_download_dir_is_refused(
    civitai, daemon, home, tmp_path
):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = home / "data" / "models"
    (root / "models").mkdir(parents=True)
    (root / "models" / "Lora").symlink_to(outside)
    civitai.add_simple(1, 11, os.urandom(1000), type="LORA")
    d = daemon(layout="a1111")
    with d.client() as c:
        r = c.post("/api/download", json={"modelVersionId": 11})
        assert r.status_code == 422, r.text
        assert "outside" in r.json()["detail"] or "leads" in r.json()["detail"], r.text
    assert list(outside.iterdir()) == []
    d.stop()


def test_jobs_queued_before_a_layout_change_keep_their_folder_even_when_resolved_after_it(
    civitai, daemon, home
):
    """A batch is answered before Civitai is asked: its jobs learn their file name later (the
    resolver, or the worker). The folder is the one of the layout they were queued under."""
    lora, ckpt, late = os.urandom(3000), os.urandom(4000), os.urandom(5000)
    civitai.add_simple(1, 10, lora, filename="early_lora.safetensors", type="LORA")
    civitai.add_simple(2, 20, ckpt, filename="early_ckpt.safetensors", type="Checkpoint")
    civitai.add_simple(3, 30, late, filename="late_lora.safetensors", type="LORA")
    civitai.fault("api", status=503, retry_after=1, times=10**6)  # Civitai cannot be asked yet
    d = daemon(retries=50)
    root = home / "data" / "models"
    with d.client() as c:
        r = c.post(
            "/api/batch",
            json=[
                {"modelVersionId": 10, "model_type": "lora"},
                {"modelVersionId": 20, "model_type": "Stable-diffusion"},
            ],
        )
        assert r.status_code == 202, r.text
        early = [job["id"] for job in r.json()["jobs"]]
        assert [c.get(f"/api/jobs/{i}").json()["path"] for i in early] == [None, None]
        r = c.patch("/api/settings", json={"layout": "comfyui"})
        assert r.status_code == 200, r.text
        civitai.faults.clear()  # Civitai answers again: the early jobs are resolved now
        done = [wait_job(c, job_id, timeout=60) for job_id in early]
        after = c.post("/api/download", json={"modelVersionId": 30, "model_type": "lora"})
        assert after.status_code == 202, after.text
        done.append(wait_job(c, after.json()["id"]))
    d.stop()
    expected = [
        (root / "lora" / "early_lora.safetensors", lora),
        (root / "checkpoint" / "early_ckpt.safetensors", ckpt),
        (root / "loras" / "late_lora.safetensors", late),  # queued after: the new layout
    ]
    for job, (path, blob) in zip(done, expected, strict=True):
        assert job["path"] == str(path), job
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(blob).digest()
    assert not (root / "loras" / "early_lora.safetensors").exists()
    assert not (root / "checkpoints").exists()


def test_two_files_of_one_name_for_types_sharing_a_folder_never_write_the_same_path(
    civitai, daemon, home
):
    """LoRA and LoCon share `loras/` in ComfyUI: two different files of the same name must not
    both be queued to `loras/<name>` (both wrote one .part: the LoRA's job said completed over
    the LoCon's bytes). The second is refused, asked alone or resolved later in a batch."""
    blobs = {n: os.urandom(3_000_000 + n) for n in (10, 20, 30, 40)}
    civitai.add_simple(1, 10, blobs[10], filename="same.safetensors", type="LORA")
    civitai.add_simple(2, 20, blobs[20], filename="same.safetensors", type="LoCon")
    civitai.add_simple(3, 30, blobs[30], filename="twin.safetensors", type="LoCon")
    civitai.add_simple(4, 40, blobs[40], filename="twin.safetensors", type="DoRA")
    civitai.default_rate = 2_000_000  # both would be downloading at once
    d = daemon(layout="comfyui", workers=2)
    loras = home / "data" / "models" / "loras"
    with d.client() as c:
        first = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        assert first.status_code == 202, first.text
        second = c.post("/api/download", json={"modelVersionId": 20, "model_type": "locon"})
        assert second.status_code == 409, second.text
        said = second.json()["detail"].replace("downloading", "queued")  # it may have started
        assert said == (
            f"Job {first.json()['id']} (model_type 'lora', queued) already writes "
            f"{loras / 'same.safetensors'}; a different file of the same name cannot go there "
            f"too. Queue this one with another filename."
        )
        batch = c.post(
            "/api/batch",
            json=[
                {"modelVersionId": 30, "model_type": "locon"},
                {"modelVersionId": 40, "model_type": "dora"},
            ],
        )
        assert batch.status_code == 202, batch.text
        # Both batch entries are resolved later, side by side: whichever learns its path first
        # writes twin.safetensors, the other is refused naming it.
        ends = [
            wait_job(c, job["id"], statuses=("completed", "failed"), timeout=60)
            for job in batch.json()["jobs"]
        ]
        assert sorted(job["status"] for job in ends) == ["completed", "failed"], ends
        twin = next(job for job in ends if job["status"] == "completed")
        refused = next(job for job in ends if job["status"] == "failed")
        assert "already writes" in refused["error"] and "twin.safetensors" in refused["error"]
        done = [wait_job(c, first.json()["id"], timeout=60), twin]
        completed = c.get("/api/completed").json()["completed"]
    d.stop()
    assert [job["path"] for job in done] == [
        str(loras / "same.safetensors"),
        str(loras / "twin.safetensors"),
    ]
    for name, n in (("same", 10), ("twin", twin["modelVersionId"])):
        assert (loras / f"{name}.safetensors").read_bytes() == blobs[n], name
        info = json.loads((loras / f"{name}.civitai.info").read_bytes())
        assert info["id"] == n, name
    assert sorted(r["modelVersionId"] for r in completed) == sorted([10, twin["modelVersionId"]])


def test_the_library_filter_takes_an_apps_folder_name_or_civitais_type_as_model_type(
    civitai, daemon
):
    civitai.add_simple(1, 10, os.urandom(2000), filename="ckpt.safetensors", type="Checkpoint")
    civitai.add_simple(2, 20, os.urandom(1000), filename="style.safetensors", type="LORA")
    d = daemon(layout="a1111")
    run_job(d, {"modelVersionId": 10, "model_type": "Stable-diffusion"})
    run_job(d, {"modelVersionId": 20, "model_type": "models/Lora"})
    with d.client() as c:

        def listed(model_type: str) -> list[str]:
            r = c.get("/api/completed", params={"model_type": model_type})
            assert r.status_code == 200, r.text
            return [row["filename"] for row in r.json()["completed"]]

        for name in ("checkpoint", "Stable-diffusion", "models/Stable-diffusion", "Checkpoint"):
            assert listed(name) == ["ckpt.safetensors"], name
        for name in ("lora", "Lora", "LORA", "models\\Lora", "loras"):
            assert listed(name) == ["style.safetensors"], name
        assert listed("vae") == []
    d.stop()


@pytest.mark.parametrize("model_type", ["nul", "con", "com1", "lpt9", "aux"])
def test_a_windows_device_name_as_model_type_is_refused(civitai, daemon, home, model_type):
    civitai.add_simple(1, 10, os.urandom(1000), filename="x.safetensors")
    d = daemon()
    with d.client() as c:
        r = c.post("/api/download", json={"modelVersionId": 10, "model_type": model_type})
        assert r.status_code == 422, r.text
        assert f"model_type {model_type!r} is not allowed" in r.json()["detail"], r.text
    assert not (home / "data" / "models" / model_type).exists()
    d.stop()


def test_the_readme_a1111_example_puts_a_lora_and_a_checkpoint_where_it_says(
    civitai, daemon, tmp_path
):
    """The README's config.json for A1111, as a new user copies it (download_dir pointed at a
    fresh webui folder): the files land where its text says, with their sidecars."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("### Folders per app") :]
    example = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    assert example["download_dir"] == "/home/me/stable-diffusion-webui"
    webui = tmp_path / "stable-diffusion-webui"
    webui.mkdir()  # a fresh webui: no models/Lora yet
    lora, ckpt = os.urandom(3000), os.urandom(5000)
    civitai.add_simple(1, 10, lora, filename="detail.safetensors", type="LORA")
    civitai.add_simple(2, 20, ckpt, filename="juggernaut.safetensors", type="Checkpoint")
    d = daemon(**{**example, "download_dir": str(webui)})
    jobs = [run_job(d, {"modelVersionId": v}) for v in (10, 20)]  # Civitai's type decides
    d.stop()
    said = "/home/me/stable-diffusion-webui/models/Lora/<file>.safetensors"
    assert said in " ".join(section.split())
    expected = [
        (webui / "models" / "Lora" / "detail.safetensors", lora),
        (webui / "models" / "Stable-diffusion" / "SDXL" / "juggernaut.safetensors", ckpt),
    ]
    for job, (path, blob) in zip(jobs, expected, strict=True):
        assert job["path"] == str(path) and path.read_bytes() == blob
        assert path.with_name(path.stem + ".civitai.info").is_file()
        assert path.with_name(path.stem + ".preview.png").is_file()


def test_the_same_file_asked_as_another_type_of_the_same_folder_is_the_job_already_queued(
    civitai, daemon, home
):
    """In ComfyUI's layout a LoRA asked again as `locon` goes to the same `loras/` file: that is
    the job already there, not a 409 telling to cancel it. Another folder is still a 409."""
    blob = os.urandom(4_000_000)
    civitai.add_simple(1, 10, blob, filename="style.safetensors", type="LORA")
    civitai.default_rate = 1_000_000
    d = daemon(layout="comfyui")
    with d.client() as c:
        first = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        assert first.status_code == 202, first.text
        again = c.post("/api/download", json={"modelVersionId": 10, "model_type": "locon"})
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"], again.text
        elsewhere = c.post("/api/download", json={"modelVersionId": 10, "model_type": "vae"})
        assert elsewhere.status_code == 409, elsewhere.text
        assert "model_type 'lora'" in elsewhere.json()["detail"]
        civitai.default_rate = None
        done = wait_job(c, first.json()["id"])
        assert len(c.get("/api/jobs").json()["jobs"]) == 1
    d.stop()
    assert Path(done["path"]) == home / "data" / "models" / "loras" / "style.safetensors"
    assert Path(done["path"]).read_bytes() == blob


def test_the_readme_stability_matrix_example_puts_files_in_its_shared_folders(
    civitai, daemon, tmp_path
):
    """Stability Matrix's shared Data/Models, configured as the README shows it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("**Stability Matrix**") :]
    example = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    assert example["download_dir"] == "/home/me/StabilityMatrix/Data/Models"
    shared = tmp_path / "Data" / "Models"
    shared.mkdir(parents=True)
    wanted = {
        "Checkpoint": "StableDiffusion",
        "LORA": "Lora",
        "LoCon": "LyCORIS",
        "TextualInversion": "Embeddings",
        "Upscaler": "ESRGAN",
    }
    blobs = {}
    for i, kind in enumerate(wanted, start=1):
        blobs[kind] = os.urandom(2000 + i)
        civitai.add_simple(i, i * 10, blobs[kind], filename=f"{kind}.safetensors", type=kind)
    d = daemon(**{**example, "download_dir": str(shared)})
    for i, (kind, folder) in enumerate(wanted.items(), start=1):
        job = run_job(d, {"modelVersionId": i * 10})
        path = shared / folder / f"{kind}.safetensors"
        assert job["path"] == str(path) and path.read_bytes() == blobs[kind]
    d.stop()


def test_forge_lists_unet_only_models_from_its_checkpoint_folder(civitai, daemon, home):
    # Forge's checkpoint list (modules_forge/main_entry.py, refresh_models) is the one place it
    # picks a diffusion model from: a UNet-only file must sit in models/Stable-diffusion.
    assert Layout("forge").folder("diffusion_models") == "models/Stable-diffusion"
    assert Layout("forge").folder(model_type_of("unet")) == "models/Stable-diffusion"
    assert Layout("comfyui").folder("diffusion_models") == "diffusion_models"
    blob = os.urandom(4096)
    f = civitai.add_simple(3, 31, blob, filename="flux-unet.safetensors", type="Checkpoint")
    d = daemon(layout="forge", allowed_hosts=["127.0.0.2"])
    job = run_job(d, {"url": civitai.signed_url(f), "model_type": "diffusion_models"})
    root = Path(os.path.realpath(home / "data" / "models"))
    assert job["path"] == str(root / "models/Stable-diffusion/flux-unet.safetensors")
    assert Path(job["path"]).read_bytes() == blob
    d.stop()
