"""Issue 26 items 1, 5, 6: every file known (the scan, by-hash batches, unknown files searchable
by SHA256 or AutoV2), twins merged, and a library moved to a second daemon."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from websockets.sync.client import connect

from tests.conftest import REPO, Tmpfs, assert_file_is, run_job, wait_for, wait_job, write_config


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scanned(c, timeout: float = 30) -> dict:
    return wait_for(
        lambda: (r := c.get("/api/scan").json())["finished_at"] and not r["running"] and r,
        timeout,
        what="the scan to finish",
    )


def posts(civitai) -> list:
    return [
        r
        for r in civitai.requests_to("api", "/api/v1/model-versions/by-hash")
        if r.method == "POST"
    ]


def test_the_start_scan_asks_civitai_in_batches_and_keeps_unknown_files_findable_by_hash(
    civitai, daemon, home
):
    """120 files by hand, one of them Civitai's: the scan at start asks in two POSTs of at most
    100 hashes (a 429 answered once is retried), adopts the known one and lists the others as
    unknown, found by SHA256 or AutoV2 in any case; a file Civitai learns later moves to known at
    the next scan, and a file deleted from disk leaves the list. Progress is on the feed."""
    root = home / "data/models"
    (root / "lora").mkdir(parents=True)
    known = b"a lora civitai knows" * 100
    civitai.add_simple(5, 500, known, filename="theirs.safetensors")
    (root / "lora/mine.safetensors").write_bytes(known)
    blobs = {f"lora/u{n:03}.safetensors": f"homemade {n}".encode() * 20 for n in range(119)}
    for rel, data in blobs.items():
        (root / rel).write_bytes(data)
    civitai.fault("api", status=429, retry_after=0)
    d = daemon(auto_scan=True)
    with d.client() as c:
        report = scanned(c)
        assert report["files"] == 120 and report["hashed"] == 120, report
        assert [m["path"] for m in report["matched"]] == [str(root / "lora/mine.safetensors")]
        assert len(report["unknown"]) == 119 and report["errors"] == []
        sent = [json.loads(r.body) for r in posts(civitai)]
        assert [len(s) for s in sent] == [100, 100, 20], "a batch retried after its 429"
        assert not [r for r in civitai.requests if "/by-hash/" in r.path], "no lookups one by one"
        assert (root / "lora/mine.civitai.info").exists()

        rel, data = "lora/u007.safetensors", blobs["lora/u007.safetensors"]
        for q in (sha(data).upper(), sha(data)[:10].lower(), sha(data)[:10].upper()):
            [f] = c.get("/api/library/files", params={"q": q}).json()["files"]
            assert f["path"] == str(root / rel) and f["status"] == "unknown"
            assert f["sha256"] == sha(data) and f["autov2"] == sha(data)[:10].upper()
        [f] = c.get("/api/library/files", params={"q": sha(known)[:10]}).json()["files"]
        assert f["status"] == "known" and f["modelVersionId"] == 500
        bad = c.get("/api/library/files", params={"q": "not-a-hash"})
        assert bad.status_code == 422 and "AutoV2" in bad.json()["detail"]

        civitai.add_simple(6, 600, data, filename="learned.safetensors")
        (root / "lora/u008.safetensors").unlink()
        with connect(d.base_url.replace("http", "ws") + f"/ws/downloads?token={d.token}") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
            assert c.post("/api/scan").status_code == 202
            seen = []
            while not (seen and seen[-1]["phase"] == "done"):
                msg = json.loads(ws.recv(timeout=20))
                if msg["type"] == "scan":
                    seen.append(msg["scan"])
        assert seen[0]["running"] and not seen[-1]["running"]
        assert seen[-1]["files"] == 118 and seen[-1]["matched"] == 1 and seen[-1]["unknown"] == 117
        second = scanned(c)
        assert second["hashed"] == 0 and second["cached"] == 118
        [f] = c.get("/api/library/files", params={"q": sha(data)}).json()["files"]
        assert f["status"] == "known" and f["modelVersionId"] == 600
        gone = sha(blobs["lora/u008.safetensors"])
        assert c.get("/api/library/files", params={"q": gone}).json()["files"] == []
    d.stop()


def test_a_scan_killed_while_asking_civitai_resumes_at_the_next_start_without_hashing_again(
    civitai, daemon, home
):
    root = home / "data/models/checkpoint"
    root.mkdir(parents=True)
    known = b"a checkpoint" * 500
    civitai.add_simple(7, 700, known, filename="c.safetensors", type="Checkpoint")
    (root / "c.safetensors").write_bytes(known)
    (root / "other.safetensors").write_bytes(b"nobody's" * 300)
    civitai.by_hash_open.clear()  # the scan hashes both files, then waits on Civitai
    d = daemon(auto_scan=True)
    wait_for(lambda: posts(civitai), what="the scan's by-hash request")
    d.kill()
    civitai.by_hash_open.set()
    d = daemon(auto_scan=False)  # resumed anyway: files wait to be asked about
    with d.client() as c:
        report = scanned(c)
        assert report["hashed"] == 0 and report["cached"] == 2, report
        assert [m["modelVersionId"] for m in report["matched"]] == [700]
        assert report["unknown"] == [str(root / "other.safetensors")]
    d.stop()


def test_twins_are_listed_then_hard_linked_or_deleted_keeping_one_copy(civitai, daemon, home):
    data = b"the same lora twice" * 400
    civitai.add_simple(1, 101, data, filename="orig.safetensors")
    d = daemon()
    job = run_job(d, {"modelVersionId": 101, "model_type": "lora"})
    keep = Path(job["path"])
    twins = [keep.parent / "copy.safetensors", keep.parent / "sub/copy2.safetensors"]
    for t in twins:
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_bytes(data)
    (keep.parent / "lonely.safetensors").write_bytes(b"no twin")
    with d.client() as c:
        c.post("/api/scan")
        scanned(c)
        [group] = c.get("/api/library/duplicates").json()["groups"]
        assert group["sha256"] == sha(data) and group["size"] == len(data)
        assert group["paths"] == sorted(map(str, [keep, *twins]))
        assert group["copies"] == 3 and group["freeable"] == 2 * len(data)
        url = f"/api/library/duplicates/{sha(data).upper()}"
        r = c.post(url, json={"action": "hardlink", "keep": "/etc/passwd"})
        assert r.status_code == 422 and "keep must be one of" in r.json()["detail"]
        assert (
            c.post(
                f"/api/library/duplicates/{'0' * 64}", json={"action": "delete", "keep": str(keep)}
            ).status_code
            == 404
        )
        r = c.post(url, json={"action": "hardlink", "keep": str(keep)})
        assert r.status_code == 200, r.text
        assert sorted(r.json()["linked"]) == sorted(map(str, twins)) and r.json()[
            "freed"
        ] == 2 * len(data)
        for t in twins:
            assert os.stat(t).st_ino == os.stat(keep).st_ino
            assert_file_is(t, sha(data))
        [group] = c.get("/api/library/duplicates").json()["groups"]
        assert group["copies"] == 1 and group["freeable"] == 0
        r = c.post(url, json={"action": "delete", "keep": str(twins[0])})
        assert r.status_code == 200, r.text
        assert not keep.exists() and not twins[1].exists()
        assert not (keep.parent / (keep.stem + ".civitai.info")).exists()
        assert_file_is(twins[0], sha(data))
        assert c.get("/api/library/duplicates").json()["groups"] == []
    d.stop()


def test_a_download_already_on_disk_elsewhere_becomes_a_hard_link(civitai, daemon, home):
    data = b"bytes already here" * 500
    f = civitai.add_simple(2, 201, data, filename="wanted.safetensors")
    mine = home / "data/models/lora/by_hand.safetensors"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(data)
    d = daemon(link_duplicates=True)
    with d.client() as c:
        c.post("/api/scan")
        scanned(c)
    job = run_job(d, {"modelVersionId": 201, "model_type": "checkpoint", "sha256": f.sha256})
    assert job["linked_from"] == str(mine), job
    assert os.stat(job["path"]).st_ino == os.stat(mine).st_ino
    assert_file_is(job["path"], sha(data))
    assert not [r for r in civitai.requests if r.server == "cdn"], "nothing downloaded"
    civitai.add_simple(3, 301, data, filename="again.safetensors")
    with d.client() as c:
        r = c.patch("/api/settings", json={"link_duplicates": False})
        assert r.status_code == 200 and r.json()["restart_needed"] == [], r.text
    job = run_job(d, {"modelVersionId": 301, "model_type": "lora"})
    assert job["linked_from"] is None and civitai.requests_to("cdn")
    assert os.stat(job["path"]).st_ino != os.stat(mine).st_ino
    assert_file_is(job["path"], sha(data))
    d.stop()


def test_twins_on_two_file_systems_are_not_hard_linked_and_nothing_changes(civitai, daemon, home):
    models = home / "data/models"
    (models / "lora/disk2").mkdir(parents=True)
    disk = Tmpfs(models / "lora/disk2", "size=8m").mount()
    try:
        d = daemon(wrap=disk.wrap)
        data = b"a twin on another disk" * 300
        (models / "lora/a.safetensors").write_bytes(data)
        (disk.seen_from_here(d) / "b.safetensors").write_bytes(data)
        with d.client() as c:
            c.post("/api/scan")
            scanned(c)
            [group] = c.get("/api/library/duplicates").json()["groups"]
            assert group["paths"] == [
                str(models / "lora/a.safetensors"),
                str(models / "lora/disk2/b.safetensors"),
            ]
            keep = str(models / "lora/a.safetensors")
            r = c.post(
                f"/api/library/duplicates/{sha(data)}", json={"action": "hardlink", "keep": keep}
            )
            assert r.status_code == 409 and "another file system" in r.json()["detail"], r.text
            assert c.get("/api/library/duplicates").json()["groups"] == [group]
        assert_file_is(disk.seen_from_here(d) / "b.safetensors", sha(data))
        assert_file_is(models / "lora/a.safetensors", sha(data))
        d.stop()
    finally:
        disk.unmount()


def test_the_daily_check_is_followed_by_a_scan(civitai, daemon, home):
    started = time.monotonic()
    daemon(update_check={"enabled": False}).stop()
    lead = 2 * (time.monotonic() - started) + 8
    at = (datetime.now().astimezone() + timedelta(seconds=lead)).replace(microsecond=0)
    when = {"hour": at.hour, "minute": at.minute, "second": at.second}
    d = daemon(auto_scan=True, update_check={"enabled": True, **when})
    with d.client() as c:
        assert scanned(c)["files"] == 0  # the scan at start: nothing yet
        dropped = home / "data/models/lora/later.safetensors"
        dropped.parent.mkdir(parents=True)
        dropped.write_bytes(b"put there after the start")
        wait_for(lambda: posts(civitai), 60, what="the scan after the daily check")
        report = scanned(c)
        assert report["files"] == 1 and report["unknown"] == [str(dropped)]
    d.stop()


def test_a_library_exported_from_one_daemon_is_imported_into_another_on_an_empty_home(
    civitai, daemon, home, tmp_path, daemon_factory
):
    a, b = b"first lora" * 700, b"second checkpoint" * 900
    civitai.add_simple(1, 101, a, filename="a.safetensors")
    civitai.add_simple(2, 201, b, filename="b.safetensors", type="Checkpoint")
    v = b"a vae put there by hand" * 300
    vae_file = civitai.add_simple(3, 301, v, filename="v.safetensors", type="VAE")
    d = daemon()
    run_job(d, {"modelVersionId": 101, "model_type": "lora", "track": True})
    run_job(
        d, {"modelVersionId": 201, "model_type": "checkpoint", "filename": "renamed.safetensors"}
    )
    stray = home / "data/models/lora/deep/mine.safetensors"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"only mine")
    (home / "data/models/vae").mkdir()
    (home / "data/models/vae/by_hand.safetensors").write_bytes(v)  # adopted by the scan
    with d.client() as c:
        c.post("/api/scan")
        scanned(c)
    exported = tmp_path / "library.json"
    out = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "--home", str(home), "export", str(exported)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(exported.read_text())
    assert body["format"] == "civitai-daemon-library" and body["version"] == 1
    by_path = {f["path"]: f for f in body["files"]}
    assert set(by_path) == {
        "lora/a.safetensors",
        "checkpoint/renamed.safetensors",
        "lora/deep/mine.safetensors",
        "vae/by_hand.safetensors",
    }
    assert (
        by_path["lora/a.safetensors"]["tracked"]
        and not by_path["checkpoint/renamed.safetensors"]["tracked"]
    )
    assert by_path["lora/a.safetensors"]["air"].endswith(":civitai:1@101")
    assert by_path["lora/deep/mine.safetensors"]["air"] is None
    assert by_path["vae/by_hand.safetensors"]["fileId"] == vae_file.id
    assert by_path["vae/by_hand.safetensors"]["tracked"]
    d.stop()

    air = "urn:air:sd1:lora:civitai:1@101"
    for bad in (
        "../outside.safetensors",
        str(tmp_path / "abs/x.safetensors"),
        "embedding/x.safetensors",
    ):
        body["files"].append({"path": bad, "sha256": sha(a), "air": air})
    other = tmp_path / "home2"
    (tmp_path / "elsewhere").mkdir()
    (other / "data/models").mkdir(parents=True)
    (other / "data/models/embedding").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    write_config(other, civitai_base_url=civitai.base_url, retries=5, timeout=10, auto_scan=False)
    e = daemon_factory(other).start()
    cli = [sys.executable, str(REPO / "cli.py"), "--home", str(other), "import", str(exported)]
    out = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "0 present, 3 to download" in out.stdout and "1 unavailable" in out.stdout, out.stdout
    assert "lora/deep/mine.safetensors" in out.stdout
    with e.client() as c:
        plan = c.post("/api/library/import", params={"dry_run": "true"}, json=body)
        assert plan.status_code == 200, plan.text
        plan = plan.json()
        status = {f["path"]: f["status"] for f in plan["files"]}
        assert status == {
            "lora/a.safetensors": "to_download",
            "checkpoint/renamed.safetensors": "to_download",
            "vae/by_hand.safetensors": "to_download",
            "lora/deep/mine.safetensors": "unavailable",
            "../outside.safetensors": "unavailable",
            str(tmp_path / "abs/x.safetensors"): "unavailable",
            "embedding/x.safetensors": "unavailable",
        }
        why = {f["path"]: f.get("detail") or "" for f in plan["files"]}
        assert (
            "symbolic link" in why["embedding/x.safetensors"]
            and "relative" in why[str(tmp_path / "abs/x.safetensors")]
        )
        assert plan["bytes_to_download"] == len(a) + len(b) + len(v) and plan["present"] == 0
        assert not (other / "data/models/lora").exists(), "a dry run queues nothing"
        done = c.post("/api/library/import", json=body).json()
        jobs = [f["job"] for f in done["files"] if f["status"] == "queued"]
        assert len(jobs) == 3
        for job_id in jobs:
            job = wait_job(c, job_id)
            assert job["sha256"] in (sha(a), sha(b), sha(v))
        assert_file_is(other / "data/models/lora/a.safetensors", sha(a))
        assert_file_is(other / "data/models/checkpoint/renamed.safetensors", sha(b))
        assert_file_is(other / "data/models/vae/by_hand.safetensors", sha(v))
        assert not (tmp_path / "outside.safetensors").exists()
        assert not (tmp_path / "abs").exists() and list((tmp_path / "elsewhere").iterdir()) == []
        again = c.post("/api/library/import", params={"dry_run": "true"}, json=body).json()
        assert again["present"] == 3 and again["to_download"] == 0
    manifest = json.loads((other / "manifest.json").read_text())
    assert sorted(m["modelVersionId"] for m in manifest) == [101, 301]  # the scan tracks 301
    e.stop()


def test_the_library_tab_shows_a_scan_started_elsewhere_as_it_goes(civitai, daemon, home, browser):
    """A scan started by the API (or at start, or daily) shows in an open Library tab through
    the feed: asking Civitai while it waits on its answer, then the result."""
    from playwright.sync_api import expect

    from tests.test_gui import log_in, open_tab

    folder = home / "data/models/lora"
    folder.mkdir(parents=True)
    known = b"known to civitai" * 200
    civitai.add_simple(4, 400, known, filename="k.safetensors")
    (folder / "k.safetensors").write_bytes(known)
    (folder / "mine.safetensors").write_bytes(b"mine alone" * 100)
    d = daemon()
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    log_in(page, d)
    open_tab(page, "library")
    civitai.by_hash_open.clear()
    try:
        with d.client() as c:
            assert c.post("/api/scan").status_code == 202
        wait_for(lambda: posts(civitai), what="the scan's by-hash request")
        expect(page.locator("#scan-info")).to_have_text(
            "Asking Civitai about 2 file(s): 0 answered"
        )
        expect(page.locator("#scan-progress")).to_be_visible()
    finally:
        civitai.by_hash_open.set()
    expect(page.locator("#scan-info")).to_have_text("2 file(s): 1 adopted, 1 not on Civitai.")
    assert errors == []
    ctx.close()
    d.stop()
