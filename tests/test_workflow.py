"""A ComfyUI workflow's models in one drop: the parser on real templates, POST /api/workflow."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

from sources.workflow import models_of
from tests.conftest import wait_for, wait_job

FIXTURES = Path(__file__).parent / "fixtures" / "workflows"
MB = 1024 * 1024


ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def by_name(rows: list) -> dict:
    return {row["name"]: row for row in rows}


# The parser -------------------------------------------------------------------------------------


def test_the_subgraph_template_names_the_three_models_inside_its_subgraph():
    models = models_of(load("01_get_started_text_to_image.json"))
    found = {(m.name, m.directory, m.url) for m in models}
    base = "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files"
    assert found == {
        ("qwen_3_4b.safetensors", "text_encoders", f"{base}/text_encoders/qwen_3_4b.safetensors"),
        (
            "z_image_turbo_bf16.safetensors",
            "diffusion_models",
            f"{base}/diffusion_models/z_image_turbo_bf16.safetensors",
        ),
        ("ae.safetensors", "vae", f"{base}/vae/ae.safetensors"),
    }
    unet = next(m for m in models if m.directory == "diffusion_models")
    # properties.models and the widget value name the same file: one entry, one node.
    assert unet.nodes == [
        {"id": 28, "type": "UNETLoader", "title": None, "subgraph": "Z-Image-Turbo Text to Image"}
    ]
    assert all(m.problem is None and m.sha256 is None for m in models)


def test_the_default_template_and_the_api_format_name_their_checkpoint():
    [ui] = models_of(load("default.json"))
    assert (ui.name, ui.directory, ui.nodes[0]["type"]) == (
        "v1-5-pruned-emaonly-fp16.safetensors",
        "checkpoints",
        "CheckpointLoaderSimple",
    )
    assert ui.url.startswith("https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/")
    [api] = models_of(load("api_basic_example.json"))
    assert (api.name, api.directory, api.url, api.nodes[0]["id"]) == (
        "v1-5-pruned-emaonly.safetensors",
        "checkpoints",
        None,
        "4",
    )


def test_duplicates_merge_hashes_are_kept_and_paths_out_of_the_folder_are_refused():
    digest = "AB" * 32
    workflow = {
        "models": [
            {
                "name": "x.safetensors",
                "url": "https://example.com/x.safetensors",
                "directory": "loras",
                "hash": digest,
                "hash_type": "SHA256",
            }
        ],
        "nodes": [
            {"id": 1, "type": "LoraLoader", "title": "Style", "widgets_values": ["x.safetensors"]},
            {"id": 2, "type": "LoraLoaderModelOnly", "widgets_values": ["x.safetensors", 1.0]},
            {"id": 3, "type": "LoraLoader", "widgets_values": ["SD1.5\\sub.safetensors", 1, 1]},
            {"id": 4, "type": "VAELoader", "widgets_values": ["../../evil.safetensors"]},
            {"id": 5, "type": "CheckpointLoaderSimple", "widgets_values": ["/etc/abs.ckpt"]},
            {"id": 6, "type": "DualCLIPLoader", "widgets_values": ["a.safetensors", "b.gguf"]},
            {"id": 7, "type": "VAELoader", "widgets_values": ["pixel_space"]},  # not a file
            {
                "id": 8,
                "type": "X",
                "properties": {"models": [{"name": "y.pt", "directory": "../up"}]},
                "widgets_values": ["y.pt"],
            },
        ],
    }
    models = {m.name: m for m in models_of(workflow)}
    x = models["x.safetensors"]
    assert (x.sha256, x.url, [n["id"] for n in x.nodes]) == (
        digest.lower(),
        "https://example.com/x.safetensors",
        [1, 2],
    )
    assert x.nodes[0]["title"] == "Style"
    assert models["SD1.5/sub.safetensors"].problem is None
    assert models["SD1.5/sub.safetensors"].directory == "loras"
    assert "leads out of its folder" in models["../../evil.safetensors"].problem
    assert "absolute path" in models["/etc/abs.ckpt"].problem
    assert models["y.pt"].problem == "directory '../up' is not a ComfyUI model folder name"
    assert {models["a.safetensors"].directory, models["b.gguf"].directory} == {"text_encoders"}
    assert "pixel_space" not in models
    assert len(models) == 7


def test_only_the_models_a_node_selects_count_and_muted_or_bypassed_nodes_need_nothing():
    """As ComfyUI's frontend (modelRequirements.ts): of a node's `properties.models` only the
    ones its widgets select; nothing from a muted (mode 2) or bypassed (mode 4) node, nor from
    the subgraph a bypassed node stands for."""

    def declared(*names: str) -> list[dict]:
        return [{"name": n, "url": f"https://example.com/{n}", "directory": "loras"} for n in names]

    workflow = {
        "nodes": [
            {
                "id": 1,
                "type": "LoraLoader",
                "properties": {"models": declared("chosen.safetensors", "other.safetensors")},
                "widgets_values": ["chosen.safetensors", 1, 1],
            },
            {"id": 2, "type": "X", "properties": {"models": declared("no_widgets.safetensors")}},
            {"id": 3, "type": "LoraLoader", "mode": 2, "widgets_values": ["muted.safetensors"]},
            {"id": 4, "type": "LoraLoader", "mode": 4, "widgets_values": ["bypassed.safetensors"]},
            {"id": 5, "type": "sub-a", "mode": 4},  # a bypassed subgraph
            {"id": 6, "type": "sub-b"},
        ],
        "definitions": {
            "subgraphs": [
                {
                    "id": "sub-a",
                    "nodes": [{"id": 1, "type": "VAELoader", "widgets_values": ["a.vae"]}],
                },
                {
                    "id": "sub-b",
                    "name": "Used",
                    "nodes": [{"id": 1, "type": "VAELoader", "widgets_values": ["b.safetensors"]}],
                },
                {
                    "id": "sub-unused",
                    "nodes": [{"id": 1, "type": "VAELoader", "widgets_values": ["c.pt"]}],
                },
            ]
        },
    }
    names = {m.name: m for m in models_of(workflow)}
    assert sorted(names) == ["b.safetensors", "chosen.safetensors"]
    assert names["b.safetensors"].nodes[0]["subgraph"] == "Used"


# The endpoint -----------------------------------------------------------------------------------


def test_bad_json_and_non_workflows_are_refused_with_why(civitai, daemon):
    d = daemon()
    with d.client() as c:
        bad = c.post(
            "/api/workflow", content=b'{"nodes": [', headers={"content-type": "application/json"}
        )
        assert bad.status_code == 422
        assert bad.json()["detail"].startswith("The request body is not valid JSON")
        odd = c.post("/api/workflow", json={"hello": 1})
        assert odd.status_code == 422
        assert "is not a ComfyUI workflow: it has no `nodes` list" in odd.json()["detail"]
        upload = c.post(
            "/api/workflow?dry_run=true",
            files={"file": ("default.json", (FIXTURES / "default.json").read_bytes())},
        )
        assert upload.status_code == 200, upload.text
        assert upload.json()["models"][0]["status"] == "to_queue"
    d.stop()


def test_the_real_template_goes_from_drop_to_verified_files_from_the_hub(civitai, hf, daemon, home):
    """ComfyUI's own template (its models inside a subgraph, on Hugging Face): a dry run queues
    nothing; the post queues each into the folder ComfyUI reads under the comfyui layout; each
    comes from the fake Hub, pinned and verified by the Hub's SHA256; a repost finds them all
    present. The answers are kept in tests/artifacts for the closing note."""
    template = load("01_get_started_text_to_image.json")
    blobs, files = {}, {}
    for model in models_of(template):
        blobs[model.name] = os.urandom(300_000) + model.name.encode()
        files[model.url.split("/resolve/main/", 1)[1]] = blobs[model.name]
    hf.add_repo("Comfy-Org/z_image_turbo", files)
    d = daemon(layout="comfyui", hf_base_url=hf.base_url)
    models = home / "data" / "models"
    with d.client() as c:
        dry = c.post("/api/workflow?dry_run=true", json=template).json()
        assert dry["summary"]["to_queue"] == 3 and dry["summary"]["new_jobs"] == 0
        assert {r["folder"] for r in dry["models"]} == {"text_encoders", "diffusion_models", "vae"}
        assert c.get("/api/jobs").json()["total"] == 0
        r = c.post("/api/workflow", json=template)
        assert r.status_code == 200, r.text
        queued = r.json()
        assert queued["summary"]["queued"] == 3 and queued["summary"]["new_jobs"] == 3
        rows = by_name(queued["models"])
        for name, row in rows.items():
            job = wait_job(c, row["job"])
            folder = {"qwen_3_4b.safetensors": "text_encoders", "ae.safetensors": "vae"}.get(
                name, "diffusion_models"
            )
            assert job["path"] == row["path"] == str(models / folder / name)
            assert job["sha256"] == sha(blobs[name])  # the Hub's X-Linked-Etag, checked
            assert hashlib.sha256(Path(job["path"]).read_bytes()).hexdigest() == sha(blobs[name])
        pinned = f"/resolve/{hf.commit_of('Comfy-Org/z_image_turbo')}/split_files/"
        assert len({r.path for r in hf.requests_to("hub", pinned)}) == 3  # each one pinned
        again = c.post("/api/workflow", json=template).json()
        assert again["summary"]["present"] == 3 and again["summary"]["new_jobs"] == 0
        assert c.get("/api/jobs").json()["total"] == 3
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "workflow-e2e.json").write_text(
        json.dumps({"dry_run": dry, "posted": queued, "reposted": again}, indent=2)
    )
    d.stop()


def a_workflow(direct: str, civitai_url: str, digest: str) -> dict:
    return {
        "nodes": [
            {
                "id": 1,
                "type": "LoraLoader",
                "properties": {
                    "models": [
                        {
                            "name": "style.safetensors",
                            "url": direct,
                            "directory": "loras",
                            "hash": digest,
                            "hash_type": "SHA256",
                        }
                    ]
                },
                "widgets_values": ["style.safetensors", 1, 1],
            },
            {
                "id": 2,
                "type": "CheckpointLoaderSimple",
                "properties": {
                    "models": [
                        {"name": "base.safetensors", "url": civitai_url, "directory": "checkpoints"}
                    ]
                },
                "widgets_values": ["base.safetensors"],
            },
            {
                "id": 3,
                "type": "VAELoader",
                "title": "My VAE",
                "widgets_values": ["have.safetensors"],
            },
            {"id": 4, "type": "UpscaleModelLoader", "widgets_values": ["4x.pth"]},
            {"id": 5, "type": "LoraLoader", "widgets_values": ["../escape.safetensors", 1, 1]},
        ]
    }


def test_a_workflow_is_fetched_into_its_folders_verified_and_a_repost_queues_nothing(
    civitai, daemon, home
):
    lora, base = os.urandom(300_000), os.urandom(200_000)
    f = civitai.add_simple(7, 70, lora, filename="upstream-name.safetensors")
    civitai.add_simple(8, 80, base, filename="base.safetensors", type="Checkpoint")
    d = daemon(layout="comfyui", allowed_hosts=["127.0.0.2"])
    models = home / "data" / "models"
    (models / "vae").mkdir(parents=True)
    (models / "vae" / "have.safetensors").write_bytes(b"already here")
    workflow = a_workflow(
        civitai.signed_url(f), f"{civitai.base_url}/models/8?modelVersionId=80", sha(lora)
    )
    with d.client() as c:
        r = c.post("/api/workflow", json=workflow)
        assert r.status_code == 200, r.text
        rows = by_name(r.json()["models"])
        assert r.json()["summary"] | {"models": 5} == {
            "present": 1,
            "queued": 2,
            "to_queue": 0,
            "no_source": 1,
            "refused": 1,
            "new_jobs": 2,
            "models": 5,
        }
        assert rows["have.safetensors"]["path"] == str(models / "vae" / "have.safetensors")
        no_source = rows["4x.pth"]
        assert (no_source["status"], no_source["folder"], no_source["nodes"][0]["type"]) == (
            "no_source",
            "upscale_models",
            "UpscaleModelLoader",
        )
        assert "leads out of its folder" in rows["../escape.safetensors"]["detail"]
        style = wait_job(c, rows["style.safetensors"]["job"])
        checkpoint = wait_job(c, rows["base.safetensors"]["job"])
        assert style["sha256"] == sha(lora)
        assert Path(style["path"]) == models / "loras" / "style.safetensors"
        assert (models / "loras" / "style.safetensors").read_bytes() == lora
        assert Path(checkpoint["path"]).parent == models / "checkpoints"
        assert Path(checkpoint["path"]).read_bytes() == base
        total = c.get("/api/jobs").json()["total"]
        again = c.post("/api/workflow", json=workflow).json()
        assert again["summary"]["present"] == 3 and again["summary"]["new_jobs"] == 0
        assert c.get("/api/jobs").json()["total"] == total
    assert (
        not (home / "escape.safetensors").exists() and not (models / "escape.safetensors").exists()
    )
    d.stop()


def test_a_hash_in_the_workflow_is_enforced_and_a_subfolder_name_lands_in_its_subfolder(
    civitai, daemon, home
):
    data = os.urandom(100_000)
    f = civitai.add_simple(7, 70, data, filename="x.safetensors")
    d = daemon(layout="comfyui", allowed_hosts=["127.0.0.2"], retries=1)
    wrong = bytearray(data)
    wrong[500] ^= 1  # what the workflow says differs by one byte from what is served
    workflow = a_workflow(civitai.signed_url(f), f"{civitai.base_url}/models/8", sha(bytes(wrong)))
    workflow["nodes"] = workflow["nodes"][:1]
    fine = copy.deepcopy(workflow)
    fine["nodes"][0]["properties"]["models"][0].update(
        name="SD1.5/x.safetensors", hash=sha(data), url=civitai.signed_url(f) + "&again=1"
    )
    fine["nodes"][0]["widgets_values"] = ["SD1.5/x.safetensors", 1, 1]
    with d.client() as c:
        [row] = c.post("/api/workflow", json=workflow).json()["models"]
        failed = wait_job(c, row["job"], ("failed",))
        assert "SHA256" in failed["error"], failed["error"]
        assert not (home / "data/models/loras/style.safetensors").exists()
        [sub] = c.post("/api/workflow", json=fine).json()["models"]
        assert sub["path"] == str(home / "data/models/loras/SD1.5/x.safetensors")
        done = wait_job(c, sub["job"])
    assert Path(done["path"]).read_bytes() == data
    wait_for(lambda: not list((home / "data/models/loras").glob("**/*.part")), what="no .part")
    d.stop()


def test_cli_workflow_prints_the_table_and_dry_run_queues_nothing(civitai, daemon, home):
    from tests.test_cli import cli

    d = daemon(layout="comfyui")
    (home / "data/models/checkpoints").mkdir(parents=True)
    (home / "data/models/checkpoints/v1-5-pruned-emaonly.safetensors").write_bytes(b"ckpt")
    api = cli(home, "workflow", str(FIXTURES / "api_basic_example.json"))
    assert api.returncode == 0, api.stderr
    lines = api.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "FOLDER", "NAME", "JOB", "/", "PATH", "/", "WHY"]
    assert lines[2].split()[:3] == ["present", "checkpoints", "v1-5-pruned-emaonly.safetensors"]
    assert lines[-1] == "1 model(s): 1 present; 0 new job(s)."
    dry = cli(home, "workflow", "--dry-run", str(FIXTURES / "01_get_started_text_to_image.json"))
    assert dry.returncode == 0, dry.stderr
    assert "to_queue  diffusion_models  z_image_turbo_bf16.safetensors" in dry.stdout
    assert dry.stdout.splitlines()[-1] == "3 model(s): 3 to_queue; 0 new job(s)."
    with d.client() as c:
        assert c.get("/api/jobs").json()["total"] == 0
    missing = cli(home, "workflow", str(home / "nope.json"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    d.stop()


# Hostile and contradictory workflows (review of issue 17) --------------------------------------


def entry(name: str, url: str | None = None, digest: str | None = None, **kw: str) -> dict:
    out = {"name": name, "directory": kw.get("directory", "loras")}
    if url is not None:
        out["url"] = url
    if digest is not None:
        out |= {"hash": digest, "hash_type": "SHA256"}
    return out


def test_one_name_given_two_hashes_or_two_urls_without_a_hash_is_refused_saying_which():
    a, b = "a" * 64, "b" * 64
    models = {
        m.name: m
        for m in models_of(
            {
                "nodes": [],
                "models": [
                    entry("two-hashes.safetensors", "https://h.example/1", a),
                    entry("two-hashes.safetensors", "https://h.example/1", b.upper()),
                    entry("two-urls.safetensors", "https://one.example/m"),
                    entry("two-urls.safetensors", "https://two.example/m"),
                    entry("mirrors.safetensors", "https://one.example/m", a),
                    entry("mirrors.safetensors", "https://two.example/m"),
                    entry("same.safetensors", "https://one.example/s", a),
                    entry("same.safetensors", "https://one.example/s", a.upper()),
                    entry("file.safetensors", "file:///etc/passwd"),
                ],
            }
        )
    }
    assert models["two-hashes.safetensors"].problem == (
        f"the workflow gives it 2 different SHA256 ({a}, {b}): fix the workflow, one file has "
        "one hash"
    )
    assert models["two-urls.safetensors"].problem == (
        "the workflow gives it 2 different URLs (https://one.example/m, https://two.example/m) "
        "and no SHA256 to tell which serves the right file: fix the workflow, or queue the one "
        "you trust yourself"
    )
    # Two URLs and one SHA256: whichever serves it, the bytes are checked; the first is used.
    mirrors = models["mirrors.safetensors"]
    assert (mirrors.problem, mirrors.url, mirrors.sha256) == (None, "https://one.example/m", a)
    same = models["same.safetensors"]
    assert (same.problem, same.url, same.sha256) == (None, "https://one.example/s", a)
    assert models["file.safetensors"].problem == (
        "its URL 'file:///etc/passwd' is not an http:// or https:// URL"
    )
    assert models["file.safetensors"].url is None


def test_a_workflow_naming_more_models_than_the_bound_is_refused_whole_at_once(civitai, daemon):
    many = {
        "nodes": [],
        "models": [entry(f"m{i}.safetensors", f"https://x.example/{i}") for i in range(2001)],
    }
    d = daemon(layout="comfyui")
    with d.client() as c:
        r = c.post("/api/workflow", json=many)
        assert r.status_code == 422, r.text[:300]
        assert r.json() == {
            "detail": "The request body is refused: a workflow may name at most 2,000 models; "
            "this one names 2,001"
        }
        assert c.get("/api/jobs").json()["total"] == 0
        many["models"] = many["models"][:2000]
        fine = c.post("/api/workflow?dry_run=true", json=many)
        assert fine.status_code == 200 and fine.json()["summary"]["models"] == 2000
    d.stop()


def test_a_file_in_place_with_another_sha256_than_the_workflow_says_is_not_present(
    civitai, daemon, home
):
    data = os.urandom(60_000)
    f = civitai.add_simple(7, 70, data, filename="x.safetensors")
    d = daemon(layout="comfyui", allowed_hosts=["127.0.0.2"])
    loras = home / "data" / "models" / "loras"
    loras.mkdir(parents=True)
    (loras / "same-name.safetensors").write_bytes(b"another file of that name")
    (loras / "right.safetensors").write_bytes(data)
    workflow = {
        "nodes": [],
        "models": [
            entry("same-name.safetensors", civitai.signed_url(f), sha(data)),
            entry("right.safetensors", civitai.signed_url(f) + "&b=1", sha(data)),
        ],
    }
    with d.client() as c:
        r = c.post("/api/workflow", json=workflow)
        assert r.status_code == 200, r.text
        rows = by_name(r.json()["models"])
        assert rows["right.safetensors"]["status"] == "present"
        wrong = rows["same-name.safetensors"]
        assert (wrong["status"], wrong["job"], wrong["path"]) == (
            "refused",
            None,
            str(loras / "same-name.safetensors"),
        )
        assert wrong["detail"] == (
            f"{loras / 'same-name.safetensors'} is here, but its SHA256 is "
            f"{sha(b'another file of that name')}, not the workflow's {sha(data)}: another file "
            "of that name. Move or rename it, then post the workflow again to fetch its file"
        )
        assert c.get("/api/jobs").json()["total"] == 0
        # A completed job of the same file name (another file) does not stand for it either.
        job = c.post("/api/download", json={"url": civitai.signed_url(f), "model_type": "lora"})
        done = wait_job(c, job.json()["id"])
        assert done["path"] == str(loras / "x.safetensors")
        other = {
            "nodes": [],
            "models": [entry("SD1.5/x.safetensors", civitai.signed_url(f) + "&c=1", "c" * 64)],
        }
        [row] = c.post("/api/workflow?dry_run=true", json=other).json()["models"]
        assert (row["status"], row["path"]) == ("to_queue", str(loras / "SD1.5" / "x.safetensors"))
    assert (loras / "same-name.safetensors").read_bytes() == b"another file of that name"
    d.stop()


def test_a_workflows_subfolder_survives_a_relayout_to_the_same_and_to_another_layout(
    civitai, daemon, home
):
    data = os.urandom(30_000)
    f = civitai.add_simple(7, 70, data, filename="x.safetensors")
    d = daemon(layout="comfyui", allowed_hosts=["127.0.0.2"])
    workflow = {"nodes": [], "models": [entry("SD1.5/x.safetensors", civitai.signed_url(f))]}
    with d.client() as c:
        [row] = c.post("/api/workflow", json=workflow).json()["models"]
        done = wait_job(c, row["job"])
        models = home / "data" / "models"
        assert done["path"] == str(models / "loras" / "SD1.5" / "x.safetensors")
        same = c.post("/api/library/relayout", json={"layout": "comfyui"})
        assert same.status_code == 200, same.text
        assert (same.json()["moves"], same.json()["stays"]) == ([], [])
        moved = c.post("/api/library/relayout", json={"layout": "a1111", "confirm": True})
        assert moved.status_code == 200, moved.text
        target = Path(moved.json()["download_dir"]) / "models" / "Lora" / "SD1.5" / "x.safetensors"
        assert [m["to"] for m in moved.json()["moved"]] == [str(target)]
        assert target.read_bytes() == data
        [row] = c.post("/api/workflow?dry_run=true", json=workflow).json()["models"]
        assert (row["status"], row["path"]) == ("present", str(target))
    d.stop()


def test_a_repost_after_a_failed_job_says_how_it_failed_and_fetches_again_only_a_new_ask(
    civitai, daemon, home
):
    data = os.urandom(40_000)
    f = civitai.add_simple(7, 70, data, filename="x.safetensors")
    d = daemon(layout="comfyui", allowed_hosts=["127.0.0.2"], retries=1)
    url = civitai.signed_url(f)
    wrong = {"nodes": [], "models": [entry("x.safetensors", url, "d" * 64)]}
    with d.client() as c:
        [first] = c.post("/api/workflow", json=wrong).json()["models"]
        failed = wait_job(c, first["job"], ("failed",))
        assert failed["why_not_retryable"], failed
        # The same ask again: the same bytes would fail the same way; it says why, fetches nothing.
        r = c.post("/api/workflow", json=wrong)
        [again] = r.json()["models"]
        assert (again["status"], again["job"]) == ("refused", first["job"])
        assert again["detail"] == (
            f"job {first['job']} failed and a retry cannot help: {failed['why_not_retryable']}. "
            "Fix the workflow, or retry that job with force from the queue"
        )
        assert r.json()["summary"]["new_jobs"] == 0
        assert c.get("/api/jobs").json()["total"] == 1
        # The workflow's SHA256 corrected: a new ask, queued again, saying how the last failed.
        fixed = {"nodes": [], "models": [entry("x.safetensors", url, sha(data))]}
        [dry] = c.post("/api/workflow?dry_run=true", json=fixed).json()["models"]
        assert dry["status"] == "to_queue"
        assert dry["detail"] == (
            f"job {first['job']} failed: {failed['error']}; it would be queued again"
        )
        [row] = c.post("/api/workflow", json=fixed).json()["models"]
        assert row["status"] == "queued" and row["job"] != first["job"]
        assert row["detail"] == (
            f"job {first['job']} failed: {failed['error']}; queued again as job {row['job']}"
        )
        done = wait_job(c, row["job"])
    assert Path(done["path"]).read_bytes() == data
    d.stop()
