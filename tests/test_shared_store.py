"""Issue 29 item 1: a fleet of daemons shares one S3 store (SPEC §15, `store`).

A real S3 server (SeaweedFS, tests/s3_server.py), the fake Civitai over real HTTP, daemons as
real processes; files read back from disk and hashed. Each test keeps to a prefix of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tests.conftest import (
    REPO,
    assert_file_is,
    read_config,
    run_job,
    wait_for,
    wait_job,
    write_config,
)
from tests.fake_civitai import TOKEN
from tests.s3_server import RecordingProxy, free_ports

HF_TOKEN = "hf_" + "x" * 34


def log_text(home: Path) -> str:
    path = home / "logs" / "download.log"
    return path.read_text(errors="replace") if path.exists() else ""


def start(daemon_factory, home: Path, civitai, store: dict | None, **config: object):
    """A daemon of the fleet: its own home, the shared fake Civitai, the given store."""
    values = {"civitai_base_url": civitai.base_url, "retries": 3, "timeout": 10, "store": store}
    values.update(config)
    write_config(home, **values)
    return daemon_factory(home).start()


def committed(home: Path, job_id: int) -> int:
    """Bytes of the job's parts saved in the database (what a resume starts from)."""
    db = sqlite3.connect(home / "data" / "completed.db")
    try:
        rows = db.execute("select done from parts where job_id = ?", [job_id]).fetchall()
    finally:
        db.close()
    return sum(r[0] for r in rows)


def scraped(d, name: str) -> float:
    """A counter of the daemon's GET /metrics, as Prometheus would read it."""
    with d.client() as c:
        text = c.get("/metrics").text
    found = re.search(rf"^civitai_daemon_{name}_total (\S+)$", text, re.M)
    assert found, f"{name} is not in GET /metrics"
    return float(found[1])


def prefix() -> str:
    return f"t{secrets.token_hex(4)}/"


def downloads(civitai) -> int:
    """Requests for a file's bytes: Civitai's download endpoint and its CDN."""
    return len(civitai.requests_to("api", "/api/download")) + len(civitai.requests_to("cdn"))


def test_the_second_daemon_of_a_fleet_downloads_from_the_store_and_never_from_civitai(
    civitai, s3, daemon_factory, tmp_path
):
    # Over 64 MiB: the first daemon's upload is multipart, the second's download ranged over
    # several connections.
    content = os.urandom(65 * 1024 * 1024 + 12345)
    sha = hashlib.sha256(content).hexdigest()
    civitai.add_simple(71, 710, content, filename="fleet.safetensors")
    where = prefix()
    key = f"{where}sha256/{sha}"

    first = start(daemon_factory, tmp_path / "a", civitai, s3.store_config(where))
    job = run_job(first, {"modelVersionId": 710, "model_type": "lora"}, timeout=120)
    assert_file_is(job["path"], sha)
    assert downloads(civitai) >= 2  # the download endpoint, then the CDN
    head = wait_for(lambda: s3.head(key), timeout=60, what="the upload to the store")
    assert head["ContentLength"] == len(content)
    assert head["ETag"].strip('"').endswith("-2")  # two parts of 64 MiB at most: multipart
    meta = head["Metadata"]
    assert (meta["modelid"], meta["versionid"], meta["filename"]) == ("71", "710", job["filename"])
    assert meta["source"].startswith("http") and TOKEN not in meta["source"]
    assert hashlib.sha256(s3.get(key)).hexdigest() == sha
    assert (scraped(first, "store_uploads"), scraped(first, "store_hits")) == (1, 0)

    before = downloads(civitai)
    with RecordingProxy(s3.ports["s3.port"]) as proxy:
        second = start(
            daemon_factory,
            tmp_path / "b",
            civitai,
            s3.store_config(where, endpoint=proxy.endpoint),
            civitai_token=TOKEN,
            hf_token=HF_TOKEN,
            connections=4,
        )
        job = run_job(second, {"modelVersionId": 710, "model_type": "lora"}, timeout=120)
        assert_file_is(job["path"], sha)
        assert downloads(civitai) == before  # not one request for the bytes to Civitai
        gets = [r for r in proxy.seen if r.method == "GET" and r.path.startswith(f"/models/{key}")]
        assert len({r.headers.get("Range") for r in gets}) >= 2, gets  # ranged, in parts
        assert all(r.headers.get("Range", "").startswith("bytes=") for r in gets)
        assert not [r for r in gets if "Authorization" in r.headers]  # presigned: no header
        for r in proxy.seen:  # no Civitai or Hub token reaches the store, in any header
            if "Authorization" in r.headers:  # boto3's own HEAD, signed with the store's key
                signed = f"AWS4-HMAC-SHA256 Credential={s3.access_key}/"
                assert r.headers["Authorization"].startswith(signed), r
            assert not any(TOKEN in v or HF_TOKEN in v for v in r.headers.values()), r
            assert TOKEN not in r.path and HF_TOKEN not in r.path
        assert not [r for r in proxy.seen if r.method in ("PUT", "POST")]  # nothing to upload
        assert (scraped(second, "store_hits"), scraped(second, "store_uploads")) == (1, 0)
        second.stop()
    assert "downloaded from the shared store" in log_text(tmp_path / "b")
    first.stop()


def test_a_hub_lfs_file_is_shared_too_and_the_hub_token_never_reaches_the_store(
    civitai, hf, s3, daemon_factory, tmp_path
):
    data = os.urandom(400_000)
    sha = hashlib.sha256(data).hexdigest()
    hf.add_repo("acme/vae", {"vae.safetensors": data})
    url = "https://huggingface.co/acme/vae/resolve/main/vae.safetensors"
    where = prefix()
    key = f"{where}sha256/{sha}"
    config = {"hf_base_url": hf.base_url, "hf_token": HF_TOKEN}
    first = start(daemon_factory, tmp_path / "a", civitai, s3.store_config(where), **config)
    assert_file_is(run_job(first, {"url": url, "model_type": "vae"})["path"], sha)
    head = wait_for(lambda: s3.head(key), timeout=30, what="the upload to the store")
    assert head["Metadata"]["filename"] == "vae.safetensors"
    assert head["Metadata"]["source"].startswith("https://huggingface.co/acme/vae/")
    fetched = len(hf.requests_to("cdn"))

    with RecordingProxy(s3.ports["s3.port"]) as proxy:
        store = s3.store_config(where, endpoint=proxy.endpoint)
        second = start(daemon_factory, tmp_path / "b", civitai, store, **config)
        assert_file_is(run_job(second, {"url": url, "model_type": "vae"})["path"], sha)
        assert len(hf.requests_to("cdn")) == fetched  # the bytes came from the store
        assert [r for r in proxy.seen if r.method == "GET"]
        assert not any(HF_TOKEN in v for r in proxy.seen for v in r.headers.values())
        second.stop()
    first.stop()


def test_a_download_from_the_store_resumes_after_a_kill_from_where_it_stopped(
    civitai, s3, daemon_factory, tmp_path
):
    content = os.urandom(6 * 1024 * 1024)
    sha = hashlib.sha256(content).hexdigest()
    civitai.add_simple(75, 750, content, filename="big.safetensors")
    where = prefix()
    s3.put(f"{where}sha256/{sha}", content)
    home = tmp_path / "a"
    with RecordingProxy(s3.ports["s3.port"]) as proxy:
        proxy.rate = 1024 * 1024  # 6 s for the whole file
        store = s3.store_config(where, endpoint=proxy.endpoint)
        d = start(daemon_factory, home, civitai, store, workers=1)
        with d.client() as c:
            job = c.post("/api/download", json={"modelVersionId": 750, "model_type": "lora"})
        job_id = job.json()["id"]
        wait_for(lambda: committed(home, job_id) > 2 * 1024 * 1024, what="2 MiB committed")
        d.kill()
        kept = committed(home, job_id)
        assert kept < len(content)
        proxy.rate = None
        seen = len(proxy.seen)
        d = daemon_factory(home).start()
        with d.client() as c:
            done = wait_job(c, job_id, timeout=60)
        assert_file_is(done["path"], sha)
        resumed = [r for r in proxy.seen[seen:] if r.method == "GET"]
        assert resumed[0].headers["Range"] == f"bytes={kept}-{len(content) - 1}"
        assert resumed[0].headers.get("If-Range")  # the store's ETag: the same object
        d.stop()
    assert downloads(civitai) == 0  # every byte from the store, before the kill and after


def test_an_upload_under_way_never_holds_the_next_job(civitai, s3, daemon_factory, tmp_path):
    first, second = os.urandom(500_000), os.urandom(300_000)
    civitai.add_simple(76, 760, first, filename="first.safetensors")
    civitai.add_simple(77, 770, second, filename="second.safetensors")
    where = prefix()
    with RecordingProxy(s3.ports["s3.port"]) as proxy:
        proxy.uploads_open.clear()  # the store takes no upload until the test says so
        store = s3.store_config(where, endpoint=proxy.endpoint)
        d = start(daemon_factory, tmp_path / "a", civitai, store, workers=1)
        run_job(d, {"modelVersionId": 760, "model_type": "lora"})
        wait_for(lambda: [r for r in proxy.seen if r.method == "PUT"], what="the first upload")
        job = run_job(d, {"modelVersionId": 770, "model_type": "lora"})  # while it is held
        assert_file_is(job["path"], hashlib.sha256(second).hexdigest())
        assert not s3.head(f"{where}sha256/{hashlib.sha256(first).hexdigest()}")
        proxy.uploads_open.set()
        for data in (first, second):
            key = f"{where}sha256/{hashlib.sha256(data).hexdigest()}"
            wait_for(lambda key=key: s3.head(key), timeout=60, what=f"the upload of {key}")
        d.stop()


def test_a_direct_download_is_shared_too_with_its_url_signature_left_out(
    civitai, s3, daemon_factory, tmp_path
):
    data = os.urandom(120_000)
    sha = hashlib.sha256(data).hexdigest()
    civitai.add_simple(78, 780, data)
    direct = civitai.signed_url(civitai.models[78].versions[0].files[0])
    signature = parse_qs(urlsplit(direct).query)["X-Signature"][0]
    where = prefix()
    store = s3.store_config(where)
    d = start(daemon_factory, tmp_path / "a", civitai, store, allowed_hosts=["127.0.0.2"])
    job = run_job(d, {"url": direct, "model_type": "other"})
    assert_file_is(job["path"], sha)
    head = wait_for(lambda: s3.head(f"{where}sha256/{sha}"), timeout=30, what="the upload")
    source = unquote(head["Metadata"]["source"])
    assert source.startswith(f"{civitai.cdn_url}/file/") and signature not in source
    assert "X-Signature=***" in source
    d.stop()


def test_a_corrupted_store_copy_falls_back_to_civitai_and_is_replaced(
    civitai, s3, daemon_factory, tmp_path
):
    content = os.urandom(300_000)
    sha = hashlib.sha256(content).hexdigest()
    civitai.add_simple(72, 720, content)
    where = prefix()
    key = f"{where}sha256/{sha}"
    bad = bytearray(content)
    bad[1000] ^= 0xFF
    s3.put(key, bytes(bad))

    d = start(daemon_factory, tmp_path / "a", civitai, s3.store_config(where))
    job = run_job(d, {"modelVersionId": 720, "model_type": "lora"})
    assert_file_is(job["path"], sha)
    assert len(civitai.requests_to("cdn")) == 1  # once, after the store's copy failed
    assert "shared store's copy failed" in log_text(tmp_path / "a")
    # The bad copy is replaced by the verified file.
    wait_for(lambda: s3.get(key) == content, timeout=30, what="the store's copy replaced")
    d.stop()


def test_a_store_that_errors_on_the_transfer_falls_back_to_civitai(
    civitai, s3, daemon_factory, tmp_path
):
    content = os.urandom(200_000)
    sha = hashlib.sha256(content).hexdigest()
    civitai.add_simple(73, 730, content)
    where = prefix()
    s3.put(f"{where}sha256/{sha}", content)
    with RecordingProxy(s3.ports["s3.port"]) as proxy:
        proxy.fail_gets = 503  # HEAD says it is there; its bytes never come
        d = start(daemon_factory, tmp_path / "a", civitai, s3.store_config(where, proxy.endpoint))
        job = run_job(d, {"modelVersionId": 730, "model_type": "lora"})
        assert_file_is(job["path"], sha)
        assert [r for r in proxy.seen if r.method == "GET"]  # the store was tried first
        assert len(civitai.requests_to("cdn")) == 1
        d.stop()
    assert "the store answered 503" in log_text(tmp_path / "a")


def test_a_store_that_is_down_fails_no_job_and_the_upload_is_made_after_a_restart(
    civitai, s3, daemon_factory, tmp_path
):
    content = os.urandom(150_000)
    sha = hashlib.sha256(content).hexdigest()
    civitai.add_simple(74, 740, content)
    where = prefix()
    home = tmp_path / "a"
    down = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    d = start(daemon_factory, home, civitai, s3.store_config(where, endpoint=down))
    job = run_job(d, {"modelVersionId": 740, "model_type": "lora"})
    assert_file_is(job["path"], sha)
    wait_for(lambda: "upload of" in log_text(home) and "failed (attempt 1" in log_text(home))
    assert d.stop() == 0

    # The store is back (here: its real address); the upload waiting in the database is made.
    config = read_config(home)
    config["store"]["endpoint"] = s3.endpoint
    write_config(home, **config)
    d = daemon_factory(home).start()
    head = wait_for(lambda: s3.head(f"{where}sha256/{sha}"), timeout=30, what="the upload")
    assert head["ContentLength"] == len(content)
    assert hashlib.sha256(s3.get(f"{where}sha256/{sha}")).hexdigest() == sha
    d.stop()


def test_store_credentials_are_write_only_and_store_is_set_on_the_machine_only(
    civitai, s3, daemon_factory, tmp_path
):
    home = tmp_path / "a"
    d = start(daemon_factory, home, civitai, s3.store_config(prefix()))
    with d.client() as c:
        shown = c.get("/api/settings").json()["settings"]["store"]
        assert shown["access_key_id"] == {"set": True}
        assert shown["secret_access_key"] == {"set": True}
        assert shown["endpoint"] == s3.endpoint and shown["bucket"] == "models"
        assert s3.secret_key not in c.get("/api/settings").text
        before = (home / "config.json").read_text()
        attacker = {"endpoint": "http://127.0.0.1:9", "bucket": "mine"}
        r = c.patch("/api/settings", json={"store": attacker})
        assert r.status_code == 422
        assert "key 'store'" in r.json()["detail"] and "config.json" in r.json()["detail"]
        assert (home / "config.json").read_text() == before

    # config.json and SIGHUP change it: the daemon looks up there from the next job on.
    write_config(home, store=None)
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: "applied: store" in log_text(home), what="the reload")
    with d.client() as c:
        assert c.get("/api/settings").json()["settings"]["store"] is None
    assert s3.secret_key not in log_text(home)
    d.stop()


def test_the_environment_gives_the_store_its_credentials(tmp_path):
    from config.settings import validate_config

    store = {"endpoint": "http://127.0.0.1:9000", "bucket": "models", "access_key_id": "cfg"}
    env = {"AWS_ACCESS_KEY_ID": "from-env", "AWS_SECRET_ACCESS_KEY": "secret-from-env"}
    settings = validate_config(tmp_path, {"store": store}, env)
    assert settings.store.access_key_id.get_secret_value() == "from-env"
    assert settings.store.secret_access_key.get_secret_value() == "secret-from-env"
    assert "secret-from-env" in settings.secret_values()  # the log redactor hides it


def test_a_daemon_without_a_store_never_imports_the_s3_client():
    code = "import sys, main; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"], out.stdout


def test_a_wrong_store_setting_is_named_without_its_secret(tmp_path):
    from config.settings import ConfigError, validate_config

    secret = "s3-secret-" + secrets.token_hex(8)
    store = {"endpoint": "ftp://x", "secret_access_key": secret, "extra": 1}  # no bucket
    try:
        validate_config(tmp_path, {"store": store}, {})
    except ConfigError as exc:
        said = str(exc)
    else:
        raise AssertionError("a store with an ftp:// endpoint was taken")
    assert "key 'store.endpoint'" in said and "http:// or https://" in said
    assert "key 'store.extra'" in said
    assert "key 'store.bucket'" in said  # shown with the whole object it is missing from
    assert secret not in said
