"""Changing the layout never moves or loses files silently (issue 16): POST
/api/library/relayout shows the plan, and applies it with the sidecars only when confirmed; what
cannot move stays, with the reason; an interrupted move is finished on the next try."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.conftest import read_config, run_job, sha256_file, wait_for, wait_job

VIEWER = "viewer-key-for-relayout"


def _download(civitai, d, model_id: int, kind: str, model_type: str, name: str) -> dict:
    blob = os.urandom(40_000) + name.encode()
    civitai.add_simple(model_id, model_id * 10, blob, filename=name, type=kind)
    job = run_job(d, {"modelVersionId": model_id * 10, "model_type": model_type})
    folder = Path(job["path"]).parent
    stem = Path(name).stem
    wait_for(
        lambda: (
            (folder / f"{stem}.civitai.info").is_file()
            and (folder / f"{stem}.preview.png").is_file()
        ),
        10,
        what="the sidecars",
    )
    assert job["sha256"] == hashlib.sha256(blob).hexdigest()
    return job


def _relayout(c, **body) -> dict:
    r = c.post("/api/library/relayout", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _completed_paths(c) -> dict[int, str]:
    return {row["id"]: row["path"] for row in c.get("/api/completed").json()["completed"]}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_relayout_shows_the_plan_touching_nothing_then_moves_each_file_with_its_sidecars(
    civitai, daemon, home
):
    d = daemon()
    root = Path(os.path.realpath(home / "data" / "models"))
    lora = _download(civitai, d, 1, "LORA", "lora", "detail.safetensors")
    ckpt = _download(civitai, d, 2, "Checkpoint", "checkpoint", "dream.safetensors")
    # A preview from before previews were PNG: an older sidecar moves too.
    (root / "lora" / "detail.preview.jpeg").write_bytes(b"an old jpeg preview")
    before = _snapshot(root)
    with d.client() as c:
        ids = {path: i for i, path in _completed_paths(c).items()}
        plan = _relayout(c, layout="comfyui")
        assert plan["confirmed"] is False and plan["stays"] == [] and plan["moved"] == []
        assert plan["moves"] == [
            {
                "id": ids[lora["path"]],
                "model_type": "lora",
                "from": str(root / "lora" / "detail.safetensors"),
                "to": str(root / "loras" / "detail.safetensors"),
                "sidecars": [
                    "detail.civitai.info",
                    "detail.preview.png",
                    "detail.preview.jpeg",
                    "detail.json",
                ],
                "reason": None,
            },
            {
                "id": ids[ckpt["path"]],
                "model_type": "checkpoint",
                "from": str(root / "checkpoint" / "dream.safetensors"),
                "to": str(root / "checkpoints" / "dream.safetensors"),
                "sidecars": ["dream.civitai.info", "dream.preview.png", "dream.json"],
                "reason": None,
            },
        ]
        # Only a plan: not a byte moved, the layout not saved.
        assert _snapshot(root) == before
        assert "layout" not in read_config(home)

        done = _relayout(c, layout="comfyui", confirm=True)
        assert done["layout_saved"] is True and done["skipped"] == []
        assert [m["to"] for m in done["moved"]] == [m["to"] for m in plan["moves"]]
        assert read_config(home)["layout"] == "comfyui"
        after = _snapshot(root)
        moved = {
            "lora/detail.safetensors": "loras/detail.safetensors",
            "lora/detail.civitai.info": "loras/detail.civitai.info",
            "lora/detail.preview.png": "loras/detail.preview.png",
            "lora/detail.preview.jpeg": "loras/detail.preview.jpeg",
            "lora/detail.json": "loras/detail.json",
            "checkpoint/dream.safetensors": "checkpoints/dream.safetensors",
            "checkpoint/dream.civitai.info": "checkpoints/dream.civitai.info",
            "checkpoint/dream.preview.png": "checkpoints/dream.preview.png",
            "checkpoint/dream.json": "checkpoints/dream.json",
        }
        assert sorted(after) == sorted(moved.values())  # nothing left behind, nothing extra
        for old, new in moved.items():
            assert after[new] == before[old], new
        new_lora = root / "loras" / "detail.safetensors"
        assert sha256_file(new_lora) == lora["sha256"]
        assert sha256_file(root / "checkpoints" / "dream.safetensors") == ckpt["sha256"]

        # Every record follows: the library, the repeated request, the preview.
        paths = _completed_paths(c)
        assert paths == {
            ids[lora["path"]]: str(new_lora),
            ids[ckpt["path"]]: str(root / "checkpoints" / "dream.safetensors"),
        }
        again = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        assert again.status_code == 200, again.text
        assert again.json()["duplicate"] is True and again.json()["path"] == str(new_lora)
        preview = c.get(f"/api/completed/{ids[lora['path']]}/preview")
        assert preview.status_code == 200 and preview.content == after["loras/detail.preview.png"]

        # A second confirm finds nothing to do.
        second = _relayout(c, confirm=True)
        assert (second["moved"], second["skipped"], second["layout_saved"]) == ([], [], False)

        # New jobs follow the saved layout.
        vae = _download(civitai, d, 3, "VAE", "vae", "clear.safetensors")
        assert vae["path"] == str(root / "vae" / "clear.safetensors")

        # The library deletes the moved file with its sidecars.
        r = c.delete(f"/api/library/{ids[lora['path']]}")
        assert r.status_code == 200, r.text
        assert sorted(r.json()["deleted"]) == sorted(
            str(root / new) for old, new in moved.items() if old.startswith("lora/")
        )
        assert not any((root / "loras").iterdir())
    d.stop()


def test_what_cannot_move_stays_with_its_reason_and_nothing_is_overwritten(
    civitai, daemon, home, tmp_path
):
    d = daemon(viewer_token=VIEWER)
    root = Path(os.path.realpath(home / "data" / "models"))
    taken = _download(civitai, d, 1, "LORA", "lora", "taken.safetensors")
    missing = _download(civitai, d, 2, "LORA", "lora", "missing.safetensors")
    busy = _download(civitai, d, 3, "Checkpoint", "checkpoint", "busy.safetensors")
    linked = _download(civitai, d, 4, "VAE", "vae", "linked.safetensors")
    # The target name holds another file; a file is gone; the vae's new folder is a link out.
    (root / "loras").mkdir()
    (root / "loras" / "taken.safetensors").write_bytes(b"a person's own file")
    Path(missing["path"]).unlink()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "vae-link").symlink_to(outside)
    # A newer version of the checkpoint is downloading, paused: its model's file waits.
    civitai.publish_version(3, civitai.version(31, [os.urandom(400_000)]))
    civitai.fault("cdn", rate=20_000, times=5)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 31, "model_type": "checkpoint"})
        assert job.status_code == 202, job.text
        wait_job(c, job.json()["id"], ("downloading",))
        assert c.post(f"/api/jobs/{job.json()['id']}/pause").status_code == 200
        wait_job(c, job.json()["id"], ("paused",))
        before = _snapshot(root)
        config = (home / "config.json").read_bytes()

        viewer = c.post(
            "/api/library/relayout",
            json={"layout": "comfyui", "confirm": True},
            headers={"Authorization": f"Bearer {VIEWER}"},
        )
        assert viewer.status_code == 403
        assert viewer.json() == {"detail": "The viewer key can only read; this needs the API key."}
        bad = c.post("/api/library/relayout", json={"folders": {"lora": "../up"}})
        assert bad.status_code == 422 and "'../up'" in bad.json()["detail"], bad.text

        body = {"layout": "comfyui", "folders": {"vae": "vae-link"}, "confirm": True}
        done = _relayout(c, **body)
        assert done["moved"] == []
        reasons = {Path(s["from"]).name: s["reason"] for s in done["skipped"]}
        assert reasons == {
            "taken.safetensors": f"{root / 'loras' / 'taken.safetensors'} already exists (a "
            "different file): nothing is overwritten",
            "missing.safetensors": f"the file is missing: {missing['path']} is not on disk",
            "busy.safetensors": f"job {job.json()['id']} for this model is paused: move the "
            "files once it has finished",
            "linked.safetensors": f"a symbolic link on the way ({root / 'vae-link'}): the "
            "daemon never moves through a link",
        }
        assert _snapshot(root) == before
        assert (root / "loras" / "taken.safetensors").read_bytes() == b"a person's own file"
        assert list(outside.iterdir()) == []
        assert sha256_file(taken["path"]) == taken["sha256"]
        assert sha256_file(busy["path"]) == busy["sha256"]
        assert sha256_file(linked["path"]) == linked["sha256"]
        assert read_config(home)["layout"] == "comfyui"  # saved: new jobs follow it
        assert (home / "config.json").read_bytes() != config
        c.post(f"/api/jobs/{job.json()['id']}/cancel")
    d.stop()


def test_a_move_interrupted_between_its_steps_is_finished_on_the_next_try(civitai, daemon, home):
    """The states a kill can leave: the model linked at its target (step 1), and the file moved
    with its sidecars but its row not updated yet (step 3). Neither loses the file, and the next
    confirm finishes both."""
    d = daemon()
    root = Path(os.path.realpath(home / "data" / "models"))
    half = _download(civitai, d, 1, "LORA", "lora", "half.safetensors")
    gone = _download(civitai, d, 2, "LORA", "lora", "gone.safetensors")
    (root / "loras").mkdir()
    os.link(root / "lora" / "half.safetensors", root / "loras" / "half.safetensors")
    for name in ("gone.safetensors", "gone.civitai.info", "gone.preview.png", "gone.json"):
        os.rename(root / "lora" / name, root / "loras" / name)
    with d.client() as c:
        plan = _relayout(c, layout="comfyui")
        assert [(Path(m["from"]).name, m["sidecars"]) for m in plan["moves"]] == [
            ("half.safetensors", ["half.civitai.info", "half.preview.png", "half.json"]),
            ("gone.safetensors", []),
        ]
        done = _relayout(c, layout="comfyui", confirm=True)
        assert [Path(m["to"]).name for m in done["moved"]] == [
            "half.safetensors",
            "gone.safetensors",
        ]
        assert not (root / "lora").exists()  # emptied by the move, so removed
        for job in (half, gone):
            target = root / "loras" / Path(job["path"]).name
            assert sha256_file(target) == job["sha256"]
            assert os.stat(target).st_nlink == 1
        assert sorted(_completed_paths(c).values()) == sorted(
            str(root / "loras" / n) for n in ("half.safetensors", "gone.safetensors")
        )
        again = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"})
        assert again.json()["duplicate"] is True, again.text
    d.stop()


def test_after_a_relayout_an_update_swaps_the_file_in_its_new_folder(civitai, daemon, home):
    old, new = b"old bytes" * 1000, b"new bytes" * 1200
    civitai.add_simple(1, 101, old, filename="same.safetensors")
    (home / "manifest.json").write_text('[{"modelId": 1, "model_type": "lora"}]')
    d = daemon()
    root = Path(os.path.realpath(home / "data" / "models"))
    with d.client() as c:
        wait_for(lambda: c.get("/api/jobs").json()["total"] == 1, 20, what="the manifest's job")
        wait_job(c, c.get("/api/jobs").json()["jobs"][0]["id"])
        done = _relayout(c, layout="a1111", confirm=True)
        assert [m["to"] for m in done["moved"]] == [str(root / "models/Lora/same.safetensors")]
        civitai.publish_version(
            1, civitai.version(201, [civitai.file(new, name="same.safetensors")])
        )
        [update] = c.post("/api/updates/check").json()["updates"]
        job = wait_job(c, update["job_id"])
    folder = root / "models" / "Lora"
    assert job["path"] == str(folder / "same.safetensors")
    assert (folder / "same.safetensors").read_bytes() == new
    assert (folder / "same_v101.safetensors").read_bytes() == old  # old_versions: keep
    assert not (root / "lora").exists() or list((root / "lora").iterdir()) == []
    d.stop()
