"""Track for updates when adding: manifest.json entries written once a file is verified, listed
by name, untracked without touching files, and manifest problems numbered the same everywhere."""

from __future__ import annotations

import json

from tests.conftest import assert_file_is, wait_for, wait_job
from tests.test_updates import read_manifest, write_manifest


def test_a_tracked_job_adds_its_model_to_the_manifest_once_verified_and_a_failed_one_nothing(
    civitai, daemon, home
):
    good = civitai.add_simple(1, 10, b"g" * 50_000, filename="good.safetensors")
    bad = civitai.add_simple(2, 20, b"b" * 50_000, filename="bad.safetensors")
    bad.published_sha256 = "00" * 32  # Civitai's hash is wrong: the file never verifies
    write_manifest(home, [])
    d = daemon()
    with d.client() as c:
        failing = c.post("/api/download", json={"modelVersionId": 20, "track": True})
        assert failing.status_code == 202, failing.text
        failed = wait_job(c, failing.json()["id"], ("failed",))
        assert "SHA256" in failed["error"]
        assert read_manifest(home) == []  # a failed job adds nothing
        untracked = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        wait_job(c, untracked.json()["id"])
        assert read_manifest(home) == []  # off by default in the API
        (home / "data/models/lora/good.safetensors").unlink()
        job = c.post("/api/download", json={"modelVersionId": 10, "track": True})
        assert job.status_code == 202, job.text
        done = wait_job(c, job.json()["id"])
    path = home / "data/models/lora/good.safetensors"
    assert done["path"] == str(path) and done["error"] is None
    assert_file_is(path, good.sha256)
    assert read_manifest(home) == [
        {
            "modelId": 1,
            "modelVersionId": 10,
            "model_type": "lora",
            "sha256": good.sha256.lower(),
            "filename": "good.safetensors",
        }
    ]
    d.stop()


def test_tracking_a_model_again_updates_its_one_entry_and_keeps_a_persons_fields(
    civitai, daemon, home
):
    civitai.add_simple(1, 10, b"1" * 20_000, filename="a.safetensors", type="Checkpoint")
    write_manifest(home, [{"modelId": 1, "model_type": "checkpoint", "note": "mine"}])
    d = daemon()
    with d.client() as c:
        wait_for(lambda: c.get("/api/jobs?status=completed").json()["total"] == 1, 20)
        new = civitai.file(b"2" * 20_000, name="a_v2.safetensors")
        civitai.publish_version(1, civitai.version(11, [new], name="v2"))
        # No model_type: the folder is the model's type on Civitai (Checkpoint → checkpoint).
        batch = c.post("/api/batch", json=[{"modelId": 1, "track": True}])
        assert batch.status_code == 202 and batch.json()["errors"] == [], batch.text
        [job] = batch.json()["jobs"]
        assert job["model_type"] == "checkpoint"
        wait_job(c, job["id"])
        # A request for a file already completed and in place is tracked at once.
        again = c.post("/api/download", json={"modelVersionId": 11, "track": True})
        assert again.status_code == 200 and again.json()["duplicate"] is True
    assert read_manifest(home) == [
        {
            "modelId": 1,
            "model_type": "checkpoint",
            "note": "mine",
            "modelVersionId": 11,
            "sha256": new.sha256.lower(),
            "filename": "a_v2.safetensors",
        }
    ]
    assert_file_is(home / "data/models/checkpoint/a_v2.safetensors", new.sha256)
    d.stop()


def test_tracked_models_are_listed_by_name_and_untracking_keeps_the_file(civitai, daemon, home):
    f = civitai.add_simple(1, 10, b"t" * 20_000, filename="t.safetensors", type="VAE")
    d = daemon()
    with d.client() as c:
        done = wait_job(c, c.post("/api/download", json={"modelId": 1, "track": True}).json()["id"])
        view = c.get("/api/manifest").json()
        assert view["tracked"] == [
            {
                "entry": 1,
                "modelId": 1,
                "modelVersionId": 10,
                "model_type": "vae",
                "filename": "t.safetensors",
                "policy": "download",  # an entry without the key downloads updates
                "name": "Model 1",
                "version_name": "v10",
                "problem": None,
            }
        ]
        gone = c.delete("/api/manifest/1")
        assert gone.status_code == 200 and gone.json()["tracked"] == []
        again = c.delete("/api/manifest/1")
        assert again.status_code == 404
        assert again.json() == {"detail": "manifest.json does not track model 1"}
    assert read_manifest(home) == []
    assert_file_is(done["path"], f.sha256)  # untracking never touches the file
    d.stop()


def test_manifest_problems_are_numbered_from_1_with_the_modelid_in_the_log_api_and_check(
    civitai, daemon, home
):
    civitai.add_simple(1, 10, b"n" * 10_000)
    write_manifest(
        home,
        [
            {"modelId": 1, "model_type": "lora"},
            {"modelId": 7, "model_type": "lora", "priority": "high"},
            {"modelId": 8},  # a tracked entry names its folder
            {"modelId": 9, "model_type": "lora"},  # gone from Civitai
        ],
    )
    d = daemon()
    with d.client() as c:
        wait_for(lambda: c.get("/api/jobs?status=completed").json()["total"] == 1, 20)
        view = c.get("/api/manifest").json()
        check = c.post("/api/updates/check").json()
    d.stop()
    log = d.stderr_text()
    assert "manifest.json entry 2 (modelId 7) skipped: priority:" in log
    assert "manifest.json entry 3 (modelId 8) skipped: model_type: is required" in log
    assert [(p["entry"], p["modelId"]) for p in view["problems"]] == [(2, 7), (3, 8)]
    assert [t["problem"] is not None for t in view["tracked"]] == [False, True, True, False]
    assert view["tracked"][1]["problem"] == view["problems"][0]["detail"]
    assert [(e.get("entry"), e.get("modelId")) for e in check["errors"]] == [
        (2, 7),
        (3, 8),
        (4, 9),
    ]
    assert json.loads((home / "manifest.json").read_text())[2] == {"modelId": 8}  # untouched
