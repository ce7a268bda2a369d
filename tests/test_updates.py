"""Tracked models: update checks, manifest modes, old versions, and adopting existing files."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import wait_for, wait_job
from tests.receiver import Receiver


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_manifest(home, entries) -> None:
    (home / "manifest.json").write_text(json.dumps(entries, indent=2))


def read_manifest(home):
    return json.loads((home / "manifest.json").read_text())


def all_done(c) -> list[dict]:
    jobs = c.get("/api/jobs?limit=1000").json()["jobs"]
    return [wait_job(c, j["id"]) for j in jobs]


def tracked(civitai, daemon, home, files, **config):
    """Models 1..n each with one version (100+i) holding `files[i]`; tracked and downloaded."""
    for i, (name, data) in enumerate(files, start=1):
        civitai.add_simple(i, 100 + i, data, filename=name)
    write_manifest(
        home,
        [
            {"modelId": i, "model_type": "lora", "note": f"mine {i}"}
            for i in range(1, len(files) + 1)
        ],
    )
    d = daemon(**config)
    c = d.client()
    wait_for(lambda: c.get("/api/jobs").json()["total"] == len(files), 20, what="manifest jobs")
    all_done(c)
    return d, c


def test_new_version_is_found_downloaded_recorded_and_announced(civitai, daemon, home):
    hook = Receiver().start()
    try:
        d, c = tracked(
            civitai, daemon, home, [("a.safetensors", b"old" * 1000)], webhook_url=hook.url
        )
        new = b"new" * 2000
        civitai.publish_version(
            1, civitai.version(201, [civitai.file(new, name="a_v2.safetensors")], name="v2")
        )
        r = c.post("/api/updates/check")
        assert r.status_code == 200
        result = r.json()
        assert result["checked"] == 1 and result["errors"] == []
        [update] = result["updates"]
        assert (
            update["modelId"] == 1
            and update["old_version_id"] == 101
            and update["new_version_id"] == 201
        )
        job = wait_job(c, update["job_id"])
        assert job["sha256"] == sha(new)
        assert (home / "data/models/lora/a_v2.safetensors").read_bytes() == new
        assert (home / "data/models/lora/a.safetensors").exists()  # old_versions: keep
        [entry] = read_manifest(home)
        assert entry == {
            "modelId": 1,
            "model_type": "lora",
            "note": "mine 1",
            "modelVersionId": 201,
            "sha256": sha(new),
        }
        listed = c.get("/api/updates").json()
        assert [u["new_version_id"] for u in listed["updates"]] == [201]
        assert listed["last_check"]["updates"][0]["job_id"] == update["job_id"]
        metrics = c.get("/api/metrics").json()
        assert metrics["last_update_check"]["updates"] == 1
        wait_for(lambda: any(r.json["event"] == "model.update_found" for r in hook.received), 10)
        found = [r.json for r in hook.received if r.json["event"] == "model.update_found"][0]
        assert (
            found["update"]["new_version_id"] == 201 and found["update"]["model_name"] == "Model 1"
        )
        # A second check finds nothing new and changes nothing.
        before = (home / "manifest.json").read_text()
        again = c.post("/api/updates/check").json()
        assert again["updates"] == [] and (home / "manifest.json").read_text() == before
        d.stop()
    finally:
        hook.stop()


def test_no_new_version_changes_nothing(civitai, daemon, home):
    d, c = tracked(civitai, daemon, home, [("a.safetensors", b"a" * 100)])
    before = (home / "manifest.json").read_text()
    jobs_before = c.get("/api/jobs").json()["total"]
    result = c.post("/api/updates/check").json()
    assert result["updates"] == [] and result["checked"] == 1 and result["errors"] == []
    assert (home / "manifest.json").read_text() == before
    assert c.get("/api/jobs").json()["total"] == jobs_before
    d.stop()


def test_150_tracked_models_take_two_batched_requests(civitai, daemon, home):
    entries = []
    for i in range(1, 151):
        civitai.add_simple(i, 1000 + i, b"x", filename=f"m{i}.safetensors")
        entries.append({"modelId": i, "modelVersionId": 1000 + i, "model_type": "lora"})
    write_manifest(home, entries)
    d = daemon(workers=4)
    c = d.client()
    wait_for(
        lambda: c.get("/api/jobs?status=completed").json()["total"] == 150, 60, what="150 jobs"
    )
    civitai.publish_version(
        77, civitai.version(5000, [civitai.file(b"y", name="m77_new.safetensors")])
    )
    before = len(civitai.requests_to("api", "/api/v1/models?"))
    result = c.post("/api/updates/check").json()
    batches = civitai.requests_to("api", "/api/v1/models?")[before:]
    assert len(batches) == 2 and result["requests"] == 2
    assert sorted(len(r.path.split("ids=")[1].split("&")[0].split("%2C")) for r in batches) == [
        50,
        100,
    ]
    assert result["checked"] == 150 and [u["modelId"] for u in result["updates"]] == [77]
    d.stop()


def test_429_and_html_in_the_middle_are_honoured_and_the_check_finishes(civitai, daemon, home):
    d, c = tracked(civitai, daemon, home, [("a.safetensors", b"a"), ("b.safetensors", b"b")])
    civitai.publish_version(2, civitai.version(300, [civitai.file(b"b2", name="b2.safetensors")]))
    civitai.fault("api", status=429, retry_after=1.5)
    civitai.fault("api", html=True)
    started = time.monotonic()
    result = c.post("/api/updates/check").json()
    assert time.monotonic() - started >= 1.5
    assert result["errors"] == [] and result["requests"] == 3
    assert [u["new_version_id"] for u in result["updates"]] == [300]
    d.stop()


def test_a_deleted_model_is_recorded_and_the_others_still_checked(civitai, daemon, home):
    d, c = tracked(civitai, daemon, home, [("a.safetensors", b"a"), ("b.safetensors", b"b")])
    civitai.models[1].deleted = True
    civitai.publish_version(2, civitai.version(300, [civitai.file(b"b2", name="b2.safetensors")]))
    result = c.post("/api/updates/check").json()
    assert result["errors"] == [
        {"entry": 1, "modelId": 1, "detail": "No model 1 on Civitai (deleted)"}
    ]
    assert [u["modelId"] for u in result["updates"]] == [2]
    d.stop()


@pytest.mark.parametrize("policy", ["keep", "delete", "archive"])
def test_same_name_new_version_under_replace_swaps_in_place(civitai, daemon, home, policy):
    old, new = b"old bytes" * 100, b"new bytes" * 120
    d, c = tracked(civitai, daemon, home, [("same.safetensors", old)], old_versions=policy)
    civitai.publish_version(1, civitai.version(201, [civitai.file(new, name="same.safetensors")]))
    [update] = c.post("/api/updates/check").json()["updates"]
    wait_job(c, update["job_id"])
    folder = home / "data/models/lora"
    assert (folder / "same.safetensors").read_bytes() == new
    kept = folder / "same_v101.safetensors"
    archived = home / "data/old_versions/lora/same.safetensors"
    assert kept.exists() == (policy == "keep") and archived.exists() == (policy == "archive")
    if policy == "keep":
        assert kept.read_bytes() == old
    if policy == "archive":
        assert archived.read_bytes() == old
    assert read_manifest(home)[0]["modelVersionId"] == 201
    d.stop()


@pytest.mark.parametrize("policy", ["keep", "delete", "archive"])
def test_new_name_under_replace_applies_old_versions_to_the_old_file(civitai, daemon, home, policy):
    d, c = tracked(civitai, daemon, home, [("one.safetensors", b"1" * 100)], old_versions=policy)
    civitai.publish_version(
        1, civitai.version(201, [civitai.file(b"2" * 100, name="two.safetensors")])
    )
    [update] = c.post("/api/updates/check").json()["updates"]
    wait_job(c, update["job_id"])
    folder = home / "data/models/lora"
    assert (folder / "two.safetensors").exists()
    assert (folder / "one.safetensors").exists() == (policy == "keep")
    assert (folder / "one.civitai.info").exists() == (policy == "keep")
    archive = home / "data/old_versions/lora"
    assert (archive / "one.safetensors").exists() == (policy == "archive")
    assert (archive / "one.civitai.info").exists() == (policy == "archive")
    d.stop()


def test_same_name_under_append_saves_beside_with_version_suffix(civitai, daemon, home):
    old, new = b"old" * 100, b"new" * 100
    d, c = tracked(
        civitai,
        daemon,
        home,
        [("same.safetensors", old)],
        manifest_mode="append",
        old_versions="delete",
    )
    civitai.publish_version(1, civitai.version(201, [civitai.file(new, name="same.safetensors")]))
    [update] = c.post("/api/updates/check").json()["updates"]
    wait_job(c, update["job_id"])
    folder = home / "data/models/lora"
    assert (folder / "same.safetensors").read_bytes() == old  # append never touches the old file
    assert (folder / "same_v201.safetensors").read_bytes() == new
    entries = read_manifest(home)
    assert len(entries) == 2 and entries[0] == {
        "modelId": 1,
        "model_type": "lora",
        "note": "mine 1",
    }
    assert entries[1]["modelVersionId"] == 201 and entries[1]["filename"] == "same_v201.safetensors"
    assert c.post("/api/updates/check").json()["updates"] == []
    d.stop()


def test_a_file_the_daemon_did_not_write_is_never_replaced(civitai, daemon, home):
    d, c = tracked(civitai, daemon, home, [("same.safetensors", b"old" * 10)])
    (home / "data/models/lora/same.safetensors").write_bytes(b"edited by hand")
    civitai.publish_version(
        1, civitai.version(201, [civitai.file(b"new", name="same.safetensors")])
    )
    [update] = c.post("/api/updates/check").json()["updates"]
    failed = wait_job(c, update["job_id"], ("failed",))
    assert "not overwritten" in failed["error"]
    assert (home / "data/models/lora/same.safetensors").read_bytes() == b"edited by hand"
    d.stop()


def test_the_daily_job_is_scheduled_once_across_restarts(civitai, daemon, home):
    for _ in range(3):
        d = daemon(update_check={"enabled": True, "hour": 5, "minute": 30})
        with d.client() as c:
            info = c.get("/api/updates").json()
        assert info["scheduled_jobs"] == 1
        assert "T05:30:00" in info["next_check"]
        d.stop()
    d = daemon(update_check={"enabled": False, "hour": 5, "minute": 30})
    with d.client() as c:
        info = c.get("/api/updates").json()
    assert info["scheduled_jobs"] == 0 and info["next_check"] is None
    d.stop()


def test_the_daily_check_fires_at_its_time_and_asks_civitai_for_the_tracked_models(
    civitai, daemon, home
):
    civitai.add_simple(1, 101, b"tracked" * 100, filename="a.safetensors")
    write_manifest(home, [{"modelId": 1, "model_type": "lora"}])
    # The time must still be ahead once the daemon is up: how long a start takes on this machine
    # now (under load it can be many seconds) decides how far ahead it is set.
    started = time.monotonic()
    daemon(update_check={"enabled": False}).stop()
    lead = 2 * (time.monotonic() - started) + 8
    at = (datetime.now().astimezone() + timedelta(seconds=lead)).replace(microsecond=0)
    when = {"hour": at.hour, "minute": at.minute, "second": at.second}
    d = daemon(update_check={"enabled": True, **when})
    with d.client() as c:
        info = c.get("/api/updates").json()
        next_check = datetime.fromisoformat(info["next_check"])
        assert next_check != at + timedelta(days=1), f"started more than {lead:.0f} s late"
        assert next_check == at
        assert c.get("/api/metrics").json()["last_update_check"] is None
        assert not civitai.requests_to("api", "/api/v1/models?ids=")  # not at start
        asked = wait_for(
            lambda: civitai.requests_to("api", "/api/v1/models?ids="), 40, what="the daily check"
        )
        last = wait_for(
            lambda: c.get("/api/metrics").json()["last_update_check"], 20, what="its result"
        )
    d.stop()
    assert len(asked) == 1 and "ids=1&" in asked[0].path
    assert last["checked"] == 1 and last["errors"] == 0
    assert datetime.fromisoformat(last["finished_at"]) >= at


def test_scan_adopts_known_files_reports_unknown_and_caches_hashes(civitai, daemon, home):
    known = b"a model civitai knows" * 1000
    civitai.add_simple(9, 900, known, filename="orig_name.safetensors", type="Checkpoint")
    folder = home / "data/models/checkpoint"
    folder.mkdir(parents=True)
    (folder / "my_copy.safetensors").write_bytes(known)
    (folder / "homemade.safetensors").write_bytes(b"nobody knows this")
    (folder / "notes.txt").write_text("not a model")
    d = daemon()
    with d.client() as c:
        assert c.post("/api/scan").status_code == 202
        report = wait_for(lambda: (r := c.get("/api/scan").json())["finished_at"] and r, 20)
        assert report["files"] == 2 and report["hashed"] == 2 and report["cached"] == 0
        assert [m["path"] for m in report["matched"]] == [str(folder / "my_copy.safetensors")]
        assert report["matched"][0]["modelVersionId"] == 900
        assert report["unknown"] == [str(folder / "homemade.safetensors")]
        assert report["bytes_done"] == report["bytes_total"] > 0
        entries = read_manifest(home)
        assert entries == [
            {
                "modelId": 9,
                "modelVersionId": 900,
                "model_type": "checkpoint",
                "sha256": sha(known),
                "filename": "my_copy.safetensors",
            }
        ]
        assert (folder / "my_copy.civitai.info").exists() and (
            folder / "my_copy.preview.png"
        ).exists()
        c.post("/api/scan")
        second = wait_for(lambda: (r := c.get("/api/scan").json())["finished_at"] and r, 20)
        # The adopted file is known now; the unknown one comes from the hash cache.
        assert second["hashed"] == 0 and second["cached"] == 1 and second["files"] == 1
        assert len(read_manifest(home)) == 1
    d.stop()


SCAN_PLACES = {
    # where a file was put by hand → (Civitai's type, the model_type it must be adopted as)
    "models/Lora/a1111_lora.safetensors": ("LORA", "lora"),
    "models/Stable-diffusion/sub/a1111_sd.safetensors": ("Checkpoint", "checkpoint"),
    "models/VAE/a1111_vae.safetensors": ("VAE", "vae"),
    "extensions/sd-webui-animatediff/model/mm.ckpt": ("MotionModule", "motionmodule"),
    "checkpoints/comfy_ckpt.safetensors": ("Checkpoint", "checkpoint"),
    "loras/comfy_lora.safetensors": ("LORA", "lora"),
    "ultralytics/bbox/face.pt": ("Detection", "detection"),
    "upscale_models/x4.pth": ("Upscaler", "upscaler"),
    "lora/default_lora.safetensors": ("LORA", "lora"),
    "embedding/default_ti.pt": ("TextualInversion", "embedding"),
    "shared/LoRA/override_lora.safetensors": ("LORA", "lora"),  # a `folders` override
    "models/RealESRGAN/x4plus.pth": ("Upscaler", "upscaler"),  # A1111 reads upscalers there too
    "models/LyCORIS/old_locon.safetensors": ("LoCon", "locon"),  # A1111 before 1.5
}


def test_scan_adopts_files_in_every_layouts_folders_with_their_model_type(civitai, daemon, home):
    """Files put by hand in A1111's, ComfyUI's and the default folders (and an override) are
    adopted with the type of the deepest folder an app reads it from, never as "models" or
    "checkpoints"; files in A1111's container folders that no app folder names are not taken."""
    root = home / "data/models"
    expected = {}
    for n, (where, (civitai_type, kind)) in enumerate(SCAN_PLACES.items(), start=1):
        blob = f"{where} by hand".encode() * 50
        civitai.add_simple(n, 700 + n, blob, filename=Path(where).name, type=civitai_type)
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        (root / where).write_bytes(blob)
        expected[str(root / where)] = (700 + n, kind)
    (root / "models/Codeformer").mkdir(parents=True)
    (root / "models/Codeformer/codeformer.pth").write_bytes(b"a face restorer")
    (root / "extensions/some-extension").mkdir(parents=True)
    (root / "extensions/some-extension/weights.bin").write_bytes(b"an extension's file")
    d = daemon(layout="a1111", folders={"lora": "shared/LoRA"})
    with d.client() as c:
        assert c.post("/api/scan").status_code == 202
        report = wait_for(lambda: (r := c.get("/api/scan").json())["finished_at"] and r, 30)
        assert report["errors"] == [] and report["unknown"] == []
        got = {m["path"]: (m["modelVersionId"], m["model_type"]) for m in report["matched"]}
        assert got == expected
        completed = c.get("/api/completed?limit=100").json()["completed"]
        assert {r["path"]: r["model_type"] for r in completed} == {
            p: kind for p, (_, kind) in expected.items()
        }
    by_version = {e["modelVersionId"]: e["model_type"] for e in read_manifest(home)}
    assert by_version == dict(expected.values())
    d.stop()


@pytest.mark.parametrize("policy", ["keep", "delete", "archive"])
def test_after_a_layout_change_an_update_goes_to_the_new_folder_and_old_versions_finds_the_old(
    civitai, daemon, home, policy
):
    """Tracked and downloaded in the default layout; the layout becomes comfyui; the new version
    (same file name) lands in ComfyUI's `loras/`, and the old file in `lora/` is kept, deleted
    or archived with its sidecars as `old_versions` says."""
    old, new = b"old lora" * 300, b"new lora" * 400
    d, c = tracked(civitai, daemon, home, [("same.safetensors", old)], old_versions=policy)
    root = home / "data/models"
    assert (root / "lora/same.safetensors").read_bytes() == old
    assert (root / "lora/same.civitai.info").exists()
    r = c.patch("/api/settings", json={"layout": "comfyui"})
    assert r.status_code == 200 and r.json()["restart_needed"] == [], r.text
    civitai.publish_version(1, civitai.version(201, [civitai.file(new, name="same.safetensors")]))
    result = c.post("/api/updates/check").json()
    assert result["errors"] == []
    [update] = result["updates"]
    job = wait_job(c, update["job_id"])
    assert job["path"] == str(root / "loras/same.safetensors")
    assert sha(Path(job["path"]).read_bytes()) == sha(new)
    assert (root / "loras/same.civitai.info").exists()
    archived = home / "data/old_versions/lora"
    left = (root / "lora/same.safetensors").exists(), (root / "lora/same.civitai.info").exists()
    assert left == ((True, True) if policy == "keep" else (False, False))
    if policy == "keep":
        assert (root / "lora/same.safetensors").read_bytes() == old
    if policy == "archive":
        assert (archived / "same.safetensors").read_bytes() == old
        assert (archived / "same.civitai.info").exists()
    else:
        assert not archived.exists()
    [entry] = read_manifest(home)
    assert entry["modelVersionId"] == 201 and entry["sha256"] == sha(new)
    assert entry["model_type"] == "lora"
    # A second check finds nothing; the library lists the new file where it is.
    assert c.post("/api/updates/check").json()["updates"] == []
    paths = {row["path"] for row in c.get("/api/completed").json()["completed"]}
    assert str(root / "loras/same.safetensors") in paths
    d.stop()


@pytest.mark.parametrize("policy", ["delete", "archive"])
def test_an_old_version_behind_a_link_out_of_download_dir_is_left_alone(
    civitai, daemon, home, tmp_path, policy
):
    """The old layout's folder was moved elsewhere and linked back (lora → ComfyUI's loras on
    another disk): retiring the old file must not delete or move anything out there."""
    old, new = b"old lora" * 300, b"new lora" * 400
    d, c = tracked(civitai, daemon, home, [("same.safetensors", old)], old_versions=policy)
    root = home / "data/models"
    outside = tmp_path / "elsewhere"
    (root / "lora").rename(outside)
    (root / "lora").symlink_to(outside, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    assert before["same.safetensors"] == old
    c.patch("/api/settings", json={"layout": "comfyui"}).raise_for_status()
    civitai.publish_version(1, civitai.version(201, [civitai.file(new, name="same.safetensors")]))
    [update] = c.post("/api/updates/check").json()["updates"]
    job = wait_job(c, update["job_id"])
    assert Path(job["path"]).read_bytes() == new
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert not (home / "data/old_versions").exists()
    d.stop()


def test_scan_through_a_linked_download_dir_adopts_nothing_already_downloaded(
    civitai, daemon, home, tmp_path
):
    """download_dir may be a link (to another disk): the files the daemon downloaded there are
    known by their real path, and a scan must not adopt them a second time."""
    disk = tmp_path / "big-disk"
    disk.mkdir()
    (home / "data").mkdir(parents=True, exist_ok=True)
    (home / "data/models").symlink_to(disk, target_is_directory=True)
    d, c = tracked(civitai, daemon, home, [("mine.safetensors", b"downloaded" * 200)])
    assert (disk / "lora/mine.safetensors").exists()
    assert c.post("/api/scan").status_code == 202
    report = wait_for(lambda: (r := c.get("/api/scan").json())["finished_at"] and r, 20)
    assert report["files"] == 0 and report["matched"] == [], report
    assert c.get("/api/completed").json()["total"] == 1
    d.stop()
