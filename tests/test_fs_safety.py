"""The file system as an attacker or a careless user leaves it: links where the daemon writes,
hostile redirects, a disk that is really full. Real daemon, real fake Civitai, real files.

download_dir is a symlink in every test here (a user pointing data/models at a big disk is
legitimate); what may never happen is a write through a link *below* it.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from PIL import Image

from library import files
from tests.conftest import assert_file_is, run_job, sha256_file, wait_for, wait_job

MB = 1024 * 1024
ENDED = ("failed", "completed")  # wait for either; then check what is on disk first
PRECIOUS = b"a file outside download_dir that must never change\n" * 200


def blob_of(size: int) -> bytes:
    return hashlib.sha256(b"seed").digest() * (size // 32)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """The real models folder, on "another disk"; download_dir is a link to it."""
    real = tmp_path / "big-disk" / "models"
    real.mkdir(parents=True)
    (tmp_path / "models-link").symlink_to(real)
    return real


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside download_dir that a link points to."""
    outside = tmp_path / "outside"
    outside.mkdir()
    f = outside / "victim.bin"
    f.write_bytes(PRECIOUS)
    return f


def start(daemon, tmp_path: Path, **config: object):
    return daemon(download_dir=str(tmp_path / "models-link"), **config)


# 1. Nothing is written through a symlink --------------------------------------------------------


def test_a_link_at_the_part_file_fails_the_job_naming_it_and_its_target_is_unchanged(
    civitai, daemon, tmp_path, disk, victim
):
    civitai.add_simple(1, 10, b"m" * 300_000, filename="x.safetensors")
    (disk / "lora").mkdir()
    link = disk / "lora" / "x.safetensors.part"
    link.symlink_to(victim)
    d = start(daemon, tmp_path)
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ENDED)
    d.stop()
    assert victim.read_bytes() == PRECIOUS
    assert link.is_symlink() and os.readlink(link) == str(victim)  # left for its owner to see
    assert failed["status"] == "failed"
    assert failed["error"] == (
        f"{link} is a symbolic link (to {victim}); the daemon never writes through a link. "
        f"Remove the link and retry the job."
    )
    assert not (disk / "lora" / "x.safetensors").exists()
    assert civitai.requests_to("cdn", "/file") == []  # refused before any byte was fetched


def test_a_part_swapped_for_a_link_before_a_resume_is_never_written_through(
    civitai, daemon, tmp_path, disk, victim
):
    data = os.urandom(4 * MB)
    civitai.add_simple(1, 10, data, filename="x.safetensors")
    civitai.default_rate = 1 * MB
    d = start(daemon, tmp_path, workers=1)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["bytes_done"] > MB)
    d.kill()
    part = disk / "lora" / "x.safetensors.part"
    part.unlink()
    part.symlink_to(victim)
    civitai.default_rate = None
    d2 = start(daemon, tmp_path, workers=1)
    with d2.client() as c:
        failed = wait_job(c, job["id"], ENDED)
    d2.stop()
    assert victim.read_bytes() == PRECIOUS
    assert part.is_symlink() and failed["status"] == "failed"
    assert f"{part} is a symbolic link (to {victim})" in failed["error"]


def test_a_link_at_the_preview_temp_file_or_a_sidecar_is_replaced_never_written_through(
    civitai, daemon, tmp_path, disk, victim
):
    data = b"p" * 200_000
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    (disk / "lora").mkdir()
    other = victim.with_name("victim2.bin")
    other.write_bytes(PRECIOUS)
    (disk / "lora" / "m.preview.png.tmp").symlink_to(victim)  # the old temp name
    (disk / "lora" / "m.civitai.info").symlink_to(other)
    d = start(daemon, tmp_path)
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"})
    d.stop()
    assert victim.read_bytes() == PRECIOUS and other.read_bytes() == PRECIOUS
    preview = disk / "lora" / "m.preview.png"
    assert not preview.is_symlink()
    with Image.open(preview) as im:
        assert im.format == "PNG" and im.size == (1, 1)
    info = disk / "lora" / "m.civitai.info"
    assert not info.is_symlink() and b'"modelId"' in info.read_bytes()
    assert done["path"] == str(disk / "lora" / "m.safetensors")
    assert_file_is(done["path"], sha(data))


def test_a_model_type_folder_linked_out_of_download_dir_is_refused_with_422(
    civitai, daemon, tmp_path, disk
):
    civitai.add_simple(1, 10, b"m" * 1000, filename="x.safetensors")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (disk / "lora").symlink_to(elsewhere)
    d = start(daemon, tmp_path)
    with d.client() as c:
        r = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        assert r.status_code == 422, r.text
        assert r.json() == {
            "detail": f"The folder {disk / 'lora'} leads to {elsewhere}, outside download_dir "
            f"({disk}); the daemon never writes through a link out of download_dir. Replace "
            f"the link with a real folder, or point download_dir itself at the disk you want."
        }
        assert c.get("/api/jobs").json()["total"] == 0
    d.stop()
    assert list(elsewhere.iterdir()) == []
    assert civitai.requests_to("api", "/api/download") == []


def test_a_folder_swapped_for_a_link_after_queueing_fails_the_job_at_run_time(
    civitai, daemon, tmp_path, disk
):
    civitai.add_simple(1, 10, b"a" * 100_000, filename="a.safetensors")
    civitai.add_simple(2, 20, b"b" * 100_000, filename="b.safetensors")
    civitai.fault("cdn", stall_after=1000)  # job A holds the one worker
    d = start(daemon, tmp_path, workers=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with d.client() as c:
        a = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{a['id']}").json()["bytes_done"] > 0)
        b = c.post("/api/download", json={"modelVersionId": 20, "model_type": "embedding"})
        assert b.status_code == 202 and b.json()["status"] == "queued"
        (disk / "embedding").symlink_to(elsewhere)  # swapped in while B waits
        c.post(f"/api/jobs/{a['id']}/cancel")
        failed = wait_job(c, b.json()["id"], ENDED)
    d.stop()
    assert list(elsewhere.iterdir()) == []
    assert failed["status"] == "failed"
    assert f"The folder {disk / 'embedding'} leads to {elsewhere}" in failed["error"]


@pytest.mark.parametrize("outcome", ["verified", "hash mismatch"])
def test_a_folder_moved_out_and_linked_during_a_download_gets_nothing_written_through_it(
    civitai, daemon, tmp_path, disk, outcome
):
    """`mv lora /elsewhere; ln -s /elsewhere/lora lora` while the file is transferred: the
    final rename, the .unverified rename and the sidecars are checked again, so the job fails
    naming the link and the folder outside holds only what was moved there."""
    data = blob_of(2 * MB)
    civitai.add_simple(1, 10, data, filename="m.safetensors")  # with a preview image
    if outcome == "hash mismatch":
        civitai.fault("cdn", corrupt=True, times=2)
    civitai.default_rate = 512 * 1024
    d = start(daemon, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["bytes_done"] > 0)
        (disk / "lora").rename(elsewhere / "lora")
        (disk / "lora").symlink_to(elsewhere / "lora")
        moved = sorted(p.name for p in (elsewhere / "lora").iterdir())
        civitai.default_rate = None
        failed = wait_job(c, job["id"], ENDED, timeout=60)
    d.stop()
    assert moved == ["m.safetensors.part"]
    assert sorted(p.name for p in (elsewhere / "lora").iterdir()) == moved
    assert failed["status"] == "failed"
    assert failed["error"].startswith(f"The folder {disk / 'lora'} leads to {elsewhere / 'lora'}")


def test_a_copy_into_the_archive_never_follows_a_link_planted_at_its_name(tmp_path, victim):
    old = tmp_path / "models" / "m.safetensors"
    old.parent.mkdir()
    old.write_bytes(b"old version")
    planted = tmp_path / "old_versions" / "m.safetensors"
    planted.parent.mkdir()
    planted.symlink_to(victim)  # appears after the free name was chosen
    with pytest.raises(FileExistsError):
        files._link_or_copy(old, planted)
    assert victim.read_bytes() == PRECIOUS and planted.is_symlink()


def test_an_archive_name_held_by_a_dangling_link_is_skipped_not_written_through(tmp_path):
    old = tmp_path / "models" / "m.safetensors"
    old.parent.mkdir()
    old.write_bytes(b"old version")
    archive = tmp_path / "old_versions"
    archive.mkdir()
    outside = tmp_path / "outside" / "created-through-link"
    outside.parent.mkdir()
    (archive / "m.safetensors").symlink_to(outside)
    kept = files.preserve_before_swap(old, "archive", 1, archive)
    assert not outside.exists()
    assert kept == archive / "m.1.safetensors" and kept.read_bytes() == b"old version"


# 2. A redirect to another scheme fails at once ---------------------------------------------------


@pytest.mark.parametrize("where", ["download endpoint", "cdn", "direct url"])
def test_a_redirect_to_file_scheme_fails_at_the_first_attempt_naming_the_scheme(
    civitai, daemon, where
):
    data = b"f" * 10_000
    civitai.add_simple(1, 10, data, filename="x.safetensors")
    request: dict = {"modelVersionId": 10, "model_type": "lora"}
    if where == "download endpoint":
        civitai.fault("download", status=302, location="file:///etc/passwd")
    elif where == "cdn":
        civitai.fault("cdn", status=302, location="file:///etc/passwd")
    else:
        request = {
            "url": f"{civitai.cdn_url}/redirect?to=file:///etc/passwd",
            "model_type": "other",
            "filename": "x.bin",
        }
    d = daemon(retries=3, allowed_hosts=[civitai.cdn_host])
    failed = run_job(d, request, ("failed",))
    d.stop()
    assert failed["error"] == (
        "The download redirected to a file: URL; only http and https are followed. "
        "The link is broken or hostile; it is not tried again."
    )
    assert failed["attempts"] == 0
    hits = {
        "download endpoint": civitai.requests_to("api", "/api/download"),
        "cdn": civitai.requests_to("cdn", "/file"),
        "direct url": civitai.requests_to("cdn", "/redirect"),
    }[where]
    assert len(hits) == 1  # asked once, never again


# 3. A disk that is really full --------------------------------------------------------------------


def test_a_real_disk_too_small_for_the_file_is_refused_before_any_transfer(civitai, daemon, tmpfs):
    small = tmpfs("small-disk", "size=8m")
    civitai.add_simple(1, 10, os.urandom(12 * MB), filename="big.safetensors")
    d = daemon(download_dir=str(small.path), wrap=small.wrap)
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    d.stop()
    assert failed["error"].startswith(f"Not enough disk space in {small.path / 'lora'}: ")
    assert "12.0 MiB needed (plus 16.0 MiB kept free), 8.0 MiB free" in failed["error"]
    assert civitai.requests_to("cdn", "/file") == []


def _fill(folder: Path) -> Path:
    """Write a file into `folder` until the disk refuses more."""
    filler = folder / "filler.bin"
    block = b"\0" * (256 * 1024)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_disk_that_fills_up_mid_download_fails_with_not_enough_space_then_resumes(
    civitai, daemon, tmpfs
):
    disk = tmpfs("filling-disk", "size=40m")
    data = os.urandom(20 * MB)  # 20 MB + the 16 MiB margin pass the pre-check on 40 MiB
    civitai.add_simple(1, 10, data, filename="m.safetensors")
    civitai.default_rate = 2 * MB
    d = daemon(download_dir=str(disk.path), wrap=disk.wrap, workers=1)
    here = disk.seen_from_here(d)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["bytes_done"] > 2 * MB)
        filler = _fill(here)  # another program takes the rest of the disk
        failed = wait_job(c, job["id"], ("failed",))
        assert failed["error"].startswith(
            f"Not enough disk space in {disk.path / 'lora'} (No space left on device)."
        )
        assert "the part already downloaded is kept" in failed["error"]
        part = here / "lora" / "m.safetensors.part"
        assert part.stat().st_size > 2 * MB
        filler.unlink()
        civitai.default_rate = None
        c.post(f"/api/jobs/{job['id']}/retry")
        done = wait_job(c, job["id"])
        assert_file_is(here / "lora" / "m.safetensors", sha(data))
        assert sha256_file(here / "lora" / "m.safetensors") == done["sha256"]
    d.stop()
