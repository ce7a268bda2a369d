"""The Library's API (issue 15): deleting a model with its sidecars, never outside download_dir
or through a link; filters and totals; the disk download_dir is on."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from sqlite_utils import Database

from database import migrations
from tests.conftest import run_job, sha256_file, wait_for

VIEWER = "viewer-key-for-the-library"


def _completed(d, **params) -> dict:
    with d.client() as c:
        r = c.get("/api/completed", params=params)
        assert r.status_code == 200, r.text
        return r.json()


def _download(civitai, d, model_id, version_id, content, filename, kind="LORA", base="SDXL 1.0"):
    f = civitai.file(content, name=filename)
    civitai.add_model(
        model_id, f"Model {model_id}", kind, [civitai.version(version_id, [f], base_model=base)]
    )
    model_type = {"LORA": "lora", "Checkpoint": "checkpoint", "VAE": "vae"}[kind]
    return run_job(d, {"modelVersionId": version_id, "model_type": model_type})


def _row_id(d, path: Path) -> int:
    rows = [r for r in _completed(d)["completed"] if r["path"] == str(path)]
    assert len(rows) == 1, rows
    return rows[0]["id"]


# Delete ---------------------------------------------------------------------------------------


def test_deleting_a_model_removes_its_file_and_sidecars_and_leaves_similar_names(
    civitai, daemon, home
):
    d = daemon()
    job = _download(civitai, d, 1, 10, os.urandom(300_000), "style.safetensors")
    folder = Path(job["path"]).parent
    model = folder / "style.safetensors"
    sidecars = [folder / "style.civitai.info", folder / "style.preview.png", folder / "style.json"]
    wait_for(lambda: all(p.is_file() for p in sidecars), 10, what="the sidecars")
    # The preview an older daemon wrote, the image as Civitai served it: it goes too.
    sidecars.append(folder / "style.preview.jpeg")
    sidecars[-1].write_bytes(b"an old preview")
    # A person's own files with similar names: none of them is the daemon's sidecar.
    bystanders = {
        folder / "style.txt": b"my notes",
        folder / "style_v2.safetensors": b"another model",
        folder / "style.preview.png.bak": b"a backup",
        folder / "style2.civitai.info": b"{}",
        folder / "my style.civitai.info": b"{}",
        folder / "style2.json": b'{"activation text": "another model\'s"}',
        folder / "style.json.bak": b"{}",
    }
    for path, data in bystanders.items():
        path.write_bytes(data)

    with d.client() as c:
        assert c.get("/api/status").json()["library_bytes"] == 300_000
        r = c.delete(f"/api/library/{_row_id(d, model)}")
        assert r.status_code == 200, r.text
        answer = r.json()
        assert c.get("/api/status").json()["library_bytes"] == 0
        assert c.get("/api/library").json() == {
            "types": [],
            "base_models": [],
            "files": 0,
            "bytes": 0,
        }
        assert sorted(answer["deleted"]) == sorted(str(p) for p in [model, *sidecars])
        assert answer["rows_removed"] == 1
        assert answer["untracked"] == [] and answer["still_tracked"] == []
        assert not model.exists() and not any(p.exists() for p in sidecars)
        for path, data in bystanders.items():
            assert path.read_bytes() == data, f"{path} was touched"
        assert _completed(d)["completed"] == []
        again = c.delete(f"/api/library/{answer['id']}")
        assert again.status_code == 404
        assert again.json() == {"detail": f"No completed download {answer['id']} in the library"}
        # Gone from the library, so asking again downloads it again (not "already done").
        job2 = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        assert job2.get("duplicate") is not True
    d.stop()


def test_the_viewer_key_may_not_delete_a_model(civitai, daemon):
    d = daemon(viewer_token=VIEWER)
    data = os.urandom(50_000)
    job = _download(civitai, d, 1, 10, data, "keep.safetensors")
    row = _row_id(d, Path(job["path"]))
    r = d.client().delete(f"/api/library/{row}", headers={"Authorization": f"Bearer {VIEWER}"})
    assert r.status_code == 403
    assert r.json() == {"detail": "The viewer key can only read; this needs the API key."}
    assert sha256_file(Path(job["path"])) == job["sha256"]
    assert len(_completed(d)["completed"]) == 1
    d.stop()


def test_a_model_folder_swapped_for_a_link_out_of_download_dir_is_not_deleted_through_it(
    civitai, daemon, tmp_path
):
    d = daemon()
    job = _download(civitai, d, 1, 10, os.urandom(50_000), "victim.safetensors")
    model = Path(job["path"])
    row = _row_id(d, model)
    # An attacker replaces the lora folder with a link to a folder outside download_dir that
    # holds a precious file of the same name, and sidecar names beside it.
    outside = tmp_path / "precious"
    outside.mkdir()
    precious = {
        outside / "victim.safetensors": b"precious bytes",
        outside / "victim.civitai.info": b"precious info",
    }
    for path, data in precious.items():
        path.write_bytes(data)
    model.parent.rename(tmp_path / "moved-lora")
    model.parent.symlink_to(outside, target_is_directory=True)

    r = d.client().delete(f"/api/library/{row}")
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert f"{model.parent} -> {outside}" in detail and "Nothing was removed" in detail
    for path, data in precious.items():
        assert path.read_bytes() == data
    assert os.readlink(model.parent) == str(outside)
    assert len(_completed(d)["completed"]) == 1  # the row stays: nothing was deleted
    d.stop()


def test_a_model_file_replaced_by_a_link_is_refused_and_its_target_kept(civitai, daemon, tmp_path):
    d = daemon()
    job = _download(civitai, d, 1, 10, os.urandom(50_000), "linked.safetensors")
    model = Path(job["path"])
    row = _row_id(d, model)
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"not the daemon's")
    model.unlink()
    model.symlink_to(target)
    info = model.with_name("linked.civitai.info")
    info_bytes = info.read_bytes()

    r = d.client().delete(f"/api/library/{row}")
    assert r.status_code == 409, r.text
    assert "never deletes through a link" in r.json()["detail"]
    assert model.is_symlink() and os.readlink(model) == str(target)
    assert target.read_bytes() == b"not the daemon's"
    assert info.read_bytes() == info_bytes  # nothing at all was removed
    d.stop()


def test_a_completed_row_naming_a_file_outside_download_dir_is_refused(
    civitai, daemon, home, tmp_path
):
    d = daemon()
    outside = tmp_path / "system.bin"
    outside.write_bytes(b"important")
    forged = {"path": str(outside), "filename": "system.bin", "model_type": "lora", "size": 9}
    sneaky = home / "data/models/lora/../../../../system.bin"
    with sqlite3.connect(home / "data/completed.db") as db:
        db.execute("PRAGMA busy_timeout=5000")
        ids = []
        for path in (str(outside), str(sneaky)):
            cur = db.execute(
                "insert into completed (model_type, filename, path, sha256, size, completed_at) "
                "values ('lora', ?, ?, '00', 9, '2025-01-01T00:00:00Z')",
                [forged["filename"], path],
            )
            ids.append(cur.lastrowid)
    with d.client() as c:
        for row in ids:
            r = c.delete(f"/api/library/{row}")
            assert r.status_code == 422, r.text
            assert "is outside download_dir" in r.json()["detail"]
            assert "Nothing was removed" in r.json()["detail"]
    assert outside.read_bytes() == b"important"
    d.stop()


def test_deleting_a_tracked_model_untracks_it_so_the_next_start_does_not_fetch_it_again(
    civitai, daemon, home
):
    f = civitai.add_simple(1, 10, os.urandom(40_000), filename="tracked.safetensors")
    civitai.add_simple(2, 20, os.urandom(40_000), filename="other.safetensors")
    entries = [
        {"modelId": 2, "model_type": "lora"},
        {"modelId": 1, "model_type": "lora"},
    ]
    (home / "manifest.json").write_text(json.dumps(entries))
    d = daemon()
    with d.client() as c:
        wait_for(lambda: _completed(d)["total"] == 2, 20, what="both tracked models")
        model = home / "data/models/lora/tracked.safetensors"
        assert sha256_file(model) == f.sha256.lower()
        r = c.delete(f"/api/library/{_row_id(d, model)}")
        assert r.status_code == 200, r.text
        assert r.json()["untracked"] == [
            {"entry": 2, "modelId": 1, "modelVersionId": None, "model_type": "lora"}
        ]
    assert json.loads((home / "manifest.json").read_text()) == [entries[0]]
    d.stop()
    fetched = len(civitai.requests_to("cdn", "/file"))
    d = daemon()
    with d.client() as c:
        assert c.get("/api/status").status_code == 200
        counts = c.get("/api/metrics").json()["jobs_by_status"]
    assert not model.exists()
    assert len(civitai.requests_to("cdn", "/file")) == fetched
    assert counts.get("queued", 0) == 0 and counts.get("downloading", 0) == 0
    d.stop()


def test_deleting_one_version_keeps_the_model_tracked_while_another_version_is_there(
    civitai, daemon, home
):
    old, new = civitai.file(b"old" * 1000, name="a.safetensors"), None
    civitai.add_model(1, "Model 1", "LORA", [civitai.version(10, [old])])
    d = daemon()
    run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    new = civitai.file(b"new" * 1000, name="a_v2.safetensors")
    civitai.publish_version(1, civitai.version(11, [new]))
    run_job(d, {"modelVersionId": 11, "model_type": "lora"})
    entries = [{"modelId": 1, "model_type": "lora"}, {"modelVersionId": 10, "model_type": "lora"}]
    (home / "manifest.json").write_text(json.dumps(entries))
    r = d.client().delete(f"/api/library/{_row_id(d, home / 'data/models/lora/a.safetensors')}")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [e["entry"] for e in answer["untracked"]] == [2]
    assert [e["entry"] for e in answer["still_tracked"]] == [1]
    assert (
        "another file of this model is still in the library"
        in (answer["still_tracked"][0]["reason"])
    )
    assert json.loads((home / "manifest.json").read_text()) == [entries[0]]
    assert (home / "data/models/lora/a_v2.safetensors").read_bytes() == b"new" * 1000
    d.stop()


# Filters and totals ---------------------------------------------------------------------------


def test_completed_filters_by_type_base_model_and_name_and_totals_count_each_type(civitai, daemon):
    d = daemon()
    _download(civitai, d, 1, 10, b"a" * 1500, "anime_lines.safetensors", "LORA", "SD 1.5")
    _download(civitai, d, 2, 20, b"b" * 2600, "detail_tweaker.safetensors", "LORA", "SDXL 1.0")
    _download(civitai, d, 3, 30, b"c" * 4000, "juggernaut.safetensors", "Checkpoint", "SDXL 1.0")
    _download(civitai, d, 4, 40, b"d" * 700, "sdxl_vae.safetensors", "VAE", "SDXL 1.0")

    def names(**params) -> list[str]:
        return [r["filename"] for r in _completed(d, **params)["completed"]]

    assert names(model_type="lora") == ["detail_tweaker.safetensors", "anime_lines.safetensors"]
    assert names(base_model="SD 1.5") == ["anime_lines.safetensors"]
    assert names(base_model="SDXL 1.0", model_type="lora") == ["detail_tweaker.safetensors"]
    assert names(q="JUGGER") == ["juggernaut.safetensors"]
    assert names(q="model 4") == ["sdxl_vae.safetensors"]  # the model's name, word by word
    assert names(q="tweaker", model_type="checkpoint") == []
    assert _completed(d, model_type="lora", limit=1)["total"] == 2
    assert _completed(d)["completed"][0]["base_model"] == "SDXL 1.0"
    with d.client() as c:
        summary = c.get("/api/library").json()
    assert summary == {
        "types": [
            {"model_type": "lora", "files": 2, "bytes": 4100},
            {"model_type": "checkpoint", "files": 1, "bytes": 4000},
            {"model_type": "vae", "files": 1, "bytes": 700},
        ],
        "base_models": ["SD 1.5", "SDXL 1.0"],
        "files": 4,
        "bytes": 8800,
    }
    d.stop()


def test_rows_completed_before_base_models_were_kept_get_theirs_from_the_job(tmp_path):
    db = Database(tmp_path / "completed.db")
    migrations.apply(db, stop_before="009_completed_base_model")
    info = json.dumps({"id": 10, "baseModel": "Pony"})
    db["jobs"].insert(
        {
            "id": 7,
            "status": "completed",
            "model_type": "lora",
            "priority": 5,
            "created_at": "x",
            "info": info,
        }
    )
    db["jobs"].insert(
        {
            "id": 8,
            "status": "completed",
            "model_type": "lora",
            "priority": 5,
            "created_at": "x",
            "info": "not json",
        }
    )
    for job_id in (7, 8, None):
        db["completed"].insert({"job_id": job_id, "path": f"/m/{job_id}", "model_type": "lora"})
    migrations.apply(db)
    rows = db.execute("select job_id, base_model from completed order by id").fetchall()
    assert rows == [(7, "Pony"), (8, None), (None, None)]


# Disk -----------------------------------------------------------------------------------------


def test_status_reports_the_disk_of_download_dir_as_the_kernel_counts_it(civitai, daemon, tmpfs):
    disk = tmpfs("models-disk", "size=24m")
    d = daemon(download_dir=str(disk.path), wrap=disk.wrap)
    here = disk.seen_from_here(d)
    job = _download(civitai, d, 1, 10, os.urandom(3_000_000), "m.safetensors")
    (here / "someone-elses.bin").write_bytes(os.urandom(2_000_000))
    with d.client() as c:
        status = c.get("/api/status").json()
    st = os.statvfs(here)
    assert status["disk"] == {
        "path": str(disk.path),
        "total": st.f_blocks * st.f_frsize,
        "used": (st.f_blocks - st.f_bfree) * st.f_frsize,
        "free": st.f_bavail * st.f_frsize,
    }
    assert status["disk"]["total"] == 24 * 1024 * 1024
    assert status["disk"]["used"] >= 5_000_000
    assert status["library_bytes"] == job["bytes_total"] == 3_000_000
    d.stop()
