"""The Library page's API (issue 26 items 3 and 4): every file listed with its trigger words and
hashes, searched (by name, file, trigger word, a pasted SHA256 or AutoV2) and filtered, paged
with a total; files a scan did not match listed as unknown; the updates the daily check found
for untracked files marked, planned and queued only when asked. Real daemon, fake Civitai."""

from __future__ import annotations

import hashlib
import json
import sqlite3

from sqlite_utils import Database

from schema import migrations
from tests.conftest import run_job, wait_for, wait_job
from tests.test_cli import cli


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model(civitai, model_id, version_id, data, filename, kind="LORA", base="SDXL 1.0", words=()):
    f = civitai.file(data, name=filename)
    v = civitai.version(version_id, [f], base_model=base, trained_words=list(words))
    civitai.add_model(model_id, f"Model {model_id}", kind, [v])
    return f


def _files(c, **params) -> dict:
    r = c.get("/api/library/models", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _names(page: dict) -> list[str]:
    return [f["filename"] for f in page["files"]]


def test_library_lists_searches_filters_and_pages_every_file(civitai, daemon, home):
    lines = b"l" * 3000
    _model(civitai, 1, 10, lines, "anime_lines.safetensors", "LORA", "SD 1.5", ["lineart", "ink"])
    _model(civitai, 2, 20, b"d" * 5000, "detail.safetensors", "LORA", "SDXL 1.0", ["detailed"])
    _model(civitai, 3, 30, b"j" * 9000, "juggernaut.safetensors", "Checkpoint", "SDXL 1.0")
    (home / "manifest.json").write_text(json.dumps([]))
    d = daemon()
    c = d.client()
    for version, kind in ((10, "lora"), (20, "lora"), (30, "checkpoint")):
        run_job(d, {"modelVersionId": version, "model_type": kind})
    before = len(civitai.requests_to("api"))

    page = _files(c)
    assert page["total"] == 3 and page["page"] == 1
    assert _names(page) == [
        "juggernaut.safetensors",
        "detail.safetensors",
        "anime_lines.safetensors",
    ]
    lines_row = page["files"][2]
    assert lines_row["trained_words"] == ["lineart", "ink"]
    assert lines_row["base_model"] == "SD 1.5" and lines_row["model_type"] == "lora"
    assert lines_row["sha256"] == sha(lines) and lines_row["autov2"] == sha(lines)[:10].upper()
    assert lines_row["page_url"] == f"{civitai.base_url}/models/1?modelVersionId=10"
    assert lines_row["folder"] == "lora" and lines_row["has_preview"] is True
    assert lines_row["tracked"] is False and lines_row["update"] is None
    assert page["folders"] == ["checkpoint", "lora"]

    # Search: a trigger word, a name, a file name, an AutoV2 in either case, a whole SHA256.
    assert _names(_files(c, q="lineart")) == ["anime_lines.safetensors"]
    assert _names(_files(c, q="model 2")) == ["detail.safetensors"]
    assert _names(_files(c, q="JUGGER")) == ["juggernaut.safetensors"]
    assert _names(_files(c, q=sha(lines)[:10].upper())) == ["anime_lines.safetensors"]
    assert _names(_files(c, q=sha(lines)[:10])) == ["anime_lines.safetensors"]
    assert _names(_files(c, q=sha(lines).upper())) == ["anime_lines.safetensors"]
    assert _files(c, q="nothing-like-this")["total"] == 0

    # Filters: type (any name for it), base model, folder, tracked; sorted by size; paged.
    assert _names(_files(c, type="LORA", sort="name")) == [
        "anime_lines.safetensors",
        "detail.safetensors",
    ]
    assert _names(_files(c, base_model="SDXL 1.0", type="checkpoint")) == ["juggernaut.safetensors"]
    assert _files(c, folder="lora")["total"] == 2
    assert _files(c, tracked="true")["total"] == 0
    second = _files(c, sort="size", per_page=2, page=2)
    assert second["total"] == 3 and _names(second) == ["anime_lines.safetensors"]
    assert _files(c, page=9)["total"] == 3  # past the end: empty, still counted
    assert _files(c, unknown="true")["total"] == 0

    # No page view asks Civitai anything.
    assert len(civitai.requests_to("api")) == before
    r = c.get("/api/library/models", params={"sort": "bogus"})
    assert r.status_code == 422 and "detail" in r.json()
    d.stop()


def test_an_unknown_file_the_scan_recorded_is_listed_and_found_by_its_autov2(civitai, daemon, home):
    d = daemon()
    d.stop()
    db = sqlite3.connect(home / "data/completed.db")
    stray = home / "data/models/lora/found by hand.safetensors"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"u" * 4096)
    db.execute(
        "insert into file_hashes (path, size, mtime_ns, sha256, model_type, status, checked_at) "
        "values (?, 4096, 1, ?, 'lora', 'unknown', '2026-01-01T00:00:00Z')",
        [str(stray.resolve()), sha(b"u" * 4096)],
    )
    db.commit()
    db.close()
    d = daemon()
    c = d.client()
    page = _files(c, q=sha(b"u" * 4096)[:10].upper())
    assert page["total"] == 1
    [row] = page["files"]
    assert row["kind"] == "unknown" and row["id"] is None
    assert row["filename"] == "found by hand.safetensors" and row["folder"] == "lora"
    assert _files(c, unknown="true")["total"] == 1
    assert _files(c, unknown="false")["total"] == 0
    d.stop()


def test_old_rows_get_their_trigger_words_from_the_sidecar_once(civitai, daemon, home):
    # A database as the release before made it: the catalog columns are not there yet.
    (home / "data/models/lora").mkdir(parents=True)
    model = (home / "data/models/lora/old.safetensors").resolve()
    model.write_bytes(b"o" * 100)
    info = {
        "baseModel": "Pony",
        "trainedWords": ["oldword"],
        "images": [{"url": "x", "nsfwLevel": 8}],
    }
    model.with_name("old.civitai.info").write_text(json.dumps(info))
    db = Database(home / "data/completed.db")
    migrations.apply(db, stop_before="019_lib-page_catalog")
    db["completed"].insert(
        {
            "model_type": "lora",
            "modelId": 7,
            "modelVersionId": 70,
            "filename": model.name,
            "path": str(model),
            "sha256": sha(b"o" * 100),
            "size": 100,
            "model_name": "Old",
            "completed_at": "2025-01-01T00:00:00Z",
        }
    )
    db.close()
    d = daemon()
    c = d.client()
    [row] = _files(c, q="oldword")["files"]
    assert row["filename"] == "old.safetensors" and row["base_model"] == "Pony"
    assert row["nsfw"] is True and row["blur"] is True  # show_nsfw is off
    d.stop()


def test_updates_of_untracked_files_are_marked_planned_then_queued(civitai, daemon, home):
    old, new = b"1" * 2000, b"2" * 7000
    _model(civitai, 5, 50, old, "style.safetensors")
    d = daemon()
    c = d.client()
    run_job(d, {"modelVersionId": 50, "model_type": "lora"})
    civitai.publish_version(
        5, civitai.version(51, [civitai.file(new, name="style_v2.safetensors")], name="v2")
    )
    result = c.post("/api/updates/check").json()
    [found] = result["updates"]
    assert found["new_version_id"] == 51 and found["job_id"] is None  # noted, not queued
    assert c.get("/api/jobs").json()["total"] == 1
    [listed] = c.get("/api/updates").json()["updates"]
    assert listed["untracked"] is True and listed["job_id"] is None
    shown = cli(home, "updates")
    assert (
        shown.returncode == 0 and "not tracked: download it from the GUI's Library" in shown.stdout
    )

    [row] = _files(c, update="true")["files"]
    assert row["update"]["version_name"] == "v2" and row["update"]["size"] == len(new)
    assert _files(c, update="false")["total"] == 0

    plan = c.post("/api/library/updates?dry_run=true").json()
    [item] = plan["items"]
    target = (home / "data/models/lora/style_v2.safetensors").resolve()
    assert item["state"] == "ready" and item["path"] == str(target)
    assert item["size"] == len(new) and item["replaces"].endswith("style.safetensors")
    assert plan["files"] == 1 and plan["bytes"] == len(new) and plan["queued"] == []
    assert c.get("/api/jobs").json()["total"] == 1  # the plan queued nothing

    done = c.post("/api/library/updates", json={"ids": [row["id"]]}).json()
    [job_id] = done["queued"]
    job = wait_job(c, job_id)
    assert job["sha256"] == sha(new) and sha(target.read_bytes()) == sha(new)
    wait_for(lambda: _files(c, update="true")["total"] == 0, what="the badge gone")
    r = c.post("/api/library/updates", json={"ids": [row["id"]]})
    assert r.status_code == 422 and "update" in r.json()["detail"]
    d.stop()


def test_a_page_past_any_library_is_refused_not_a_server_error(daemon):
    # Found by the schemathesis fuzz: page × per_page overflowed SQLite's INTEGER (a 500).
    c = daemon().client()
    far = c.get("/api/library/models", params={"page": 10**15, "per_page": 500})
    assert far.status_code == 422, far.text
    assert c.get("/api/library/models", params={"page": 1_000_000}).json()["files"] == []
