"""A Hugging Face file kept in git is verified by its git blob SHA-1 (the Hub's ETag), and a file
of the wrong size fails with SizeMismatch (issue 23). Against tests/fake_hf.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import run_job
from tests.fake_hf import FakeHub, git_blob_sha1
from tests.test_huggingface import HF, start

CONFIG = b'{"_class_name": "AutoencoderKL", "latent_channels": 4, "sample_size": 1024}\n' * 3


def test_a_file_kept_in_git_is_verified_by_its_git_blob_sha1(daemon, hf: FakeHub):
    commit = hf.add_repo("acme/vae", {"vae/config.json": CONFIG, "other.json": CONFIG[::-1]})
    d = start(daemon, hf, retries=2)
    # Bytes of the right length that are not the file its ETag names, on both fetches.
    hf.fault("hub", corrupt=True, get_only=True, times=2)
    url = f"{HF}/acme/vae/resolve/main/vae/config.json"
    failed = run_job(d, {"url": url, "model_type": "vae"}, statuses=("failed",))
    assert failed["verified_by"] == "git-sha1"
    corrupted = bytes(b ^ 0xFF for b in CONFIG[:64]) + CONFIG[64:]
    assert failed["error"] == (
        f"Git blob SHA-1 mismatch: expected {git_blob_sha1(CONFIG)}, got "
        f"{git_blob_sha1(corrupted)} (the Hub's ETag of a file kept in git); the bytes are kept "
        f"as {failed['path']}.unverified."
    )
    assert not Path(failed["path"]).exists()  # never put in place
    assert Path(failed["path"] + ".unverified").read_bytes() == corrupted
    gets = [r for r in hf.requests_to("hub", f"/resolve/{commit}/vae/") if r.method == "GET"]
    assert len(gets) == 2  # fetched once more before failing, as a SHA256 mismatch is

    job = run_job(d, {"url": f"{HF}/acme/vae/resolve/main/other.json", "model_type": "vae"})
    assert job["verified_by"] == "git-sha1"
    assert Path(job["path"]).read_bytes() == CONFIG[::-1]
    assert job["sha256"] == hashlib.sha256(CONFIG[::-1]).hexdigest()
    d.stop()


@pytest.mark.parametrize("etag", [True, False], ids=["git-sha1", "size-only"])
def test_a_file_of_another_size_than_the_hub_announces_fails_with_size_mismatch(
    daemon, hf: FakeHub, etag: bool
):
    hf.git_etags = etag  # without an ETag the size is all that can be checked
    hf.add_repo("acme/vae", {"config.json": CONFIG})
    d = start(daemon, hf, retries=2)
    hf.fault("hub", serve=CONFIG + b"\n", get_only=True, times=2)
    url = f"{HF}/acme/vae/resolve/main/config.json"
    failed = run_job(d, {"url": url, "model_type": "vae"}, statuses=("failed",))
    assert failed["verified_by"] == ("git-sha1" if etag else "size")
    assert failed["error"] == (
        f"The file came twice with {len(CONFIG) + 1} bytes, not the {len(CONFIG)} announced (it "
        "has no published SHA256: its size is what is checked); the bytes are kept at "
        f"{failed['path']}.unverified."
    )
    assert not Path(failed["path"]).exists()
    d.stop()
