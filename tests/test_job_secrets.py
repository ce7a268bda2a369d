"""Credentials in a job's URL are kept apart (issue 23, item 5): `user:password@` and secret
query values (token, key, signature…) are used for the download but stored only in the jobs
table's `url_secrets` column, never returned by the API, sent on the feed or to webhooks,
logged, nor kept in any other column."""

from __future__ import annotations

import json
import sqlite3
from urllib.parse import urlsplit

from websockets.sync.client import connect

from tests.conftest import assert_file_is, sha256_file, wait_job
from tests.fake_civitai import PRIVATE_PASSWORD, PRIVATE_USER
from tests.receiver import Receiver

TOKEN = "tok-9f8e7d6c5b4a"


def test_a_urls_password_token_and_signature_download_but_are_shown_and_stored_nowhere_else(
    civitai, daemon, home
):
    civitai.add_simple(1, 10, b"private weights " * 1000, filename="private.safetensors")
    civitai.add_simple(2, 20, b"signed weights " * 1000, filename="signed.safetensors")
    private, signed = (civitai.models[i].versions[0].files[0] for i in (1, 2))
    cdn = urlsplit(civitai.cdn_url)
    with_password = (
        f"http://{PRIVATE_USER}:{PRIVATE_PASSWORD}@{cdn.netloc}/private/{private.id}/"
        f"private.safetensors?token={TOKEN}"
    )
    with_signature = civitai.signed_url(signed)
    signature = with_signature.rsplit("X-Signature=", 1)[1]
    secrets = (PRIVATE_PASSWORD, TOKEN, signature)
    hook = Receiver().start()
    d = daemon(allowed_hosts=[cdn.hostname], webhook_url=hook.url + "/hook")
    feed_url = d.base_url.replace("http://", "ws://") + f"/ws/downloads?token={d.token}"
    seen: list[str] = []
    with d.client() as c, connect(feed_url) as feed:
        seen.append(feed.recv(timeout=5))
        jobs = [
            c.post("/api/download", json={"url": url, "model_type": "other"}).json()
            for url in (with_password, with_signature)
        ]
        done = [wait_job(c, job["id"]) for job in jobs]
        while '"completed"' not in "".join(seen[-4:]) or len(seen) < 4:
            seen.append(feed.recv(timeout=10))
        shown = json.dumps([*jobs, *done, c.get("/api/jobs").json()])
        shown += c.get(f"/api/jobs/{jobs[0]['id']}").text + c.get("/api/completed").text
    # The downloads used them: the files are here and whole.
    assert_file_is(done[0]["path"], private.sha256)
    assert sha256_file(done[1]["path"]).upper() == signed.sha256.upper()
    # The job object names no URL at all; nothing shown holds a secret.
    assert "url" not in done[0]
    for secret in secrets:
        assert secret not in shown, secret
        assert secret not in "".join(seen), secret
    hook.stop()
    hooked = b"".join(r.body for r in hook.received).decode()
    assert '"completed"' in hooked
    d.stop()
    logs = "".join(p.read_text() for p in (home / "logs").glob("*.log*"))
    db = sqlite3.connect(home / "data" / "completed.db")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("select * from jobs")]
    others = [dict(r) for t in ("completed", "updates") for r in db.execute(f"select * from {t}")]
    for secret in secrets:
        assert secret not in hooked and secret not in logs, secret
        for row in rows:
            kept = {k: v for k, v in row.items() if k != "url_secrets"}
            assert secret not in json.dumps(kept), (secret, kept)
        assert secret not in json.dumps(others), secret
    # Kept apart, for the download: in the url_secrets column only.
    assert TOKEN in rows[0]["url_secrets"] and signature in rows[1]["url_secrets"]


def test_jobs_stored_by_an_older_version_have_their_credentials_moved_apart(tmp_path):
    from database import open_database
    from job_secrets import revealed

    path = tmp_path / "completed.db"
    db = open_database(path)
    url = f"https://user:{PRIVATE_PASSWORD}@files.example.com/m.safetensors?token={TOKEN}&v=2"
    # As today's main left it: the URL in clear in every column, no url_secrets column.
    db.execute("alter table jobs drop column url_secrets")
    db.execute("delete from _sqlite_migrations where name = '015_url_secrets'")
    request = json.dumps({"url": url, "model_type": "other"})
    db.execute(
        "insert into jobs (status, model_type, priority, created_at, url, download_url, request, "
        "request_key, dedupe_key) values ('failed', 'other', 5, '2026-01-01T00:00:00Z', "
        "?, ?, ?, ?, ?)",
        [url, url, request, f"url:{url}", f"url:{url}"],
    )
    db.conn.commit()
    db.close()
    row = next(open_database(path).query("select * from jobs"))
    shown = {k: v for k, v in row.items() if k != "url_secrets"}
    assert TOKEN not in json.dumps(shown) and PRIVATE_PASSWORD not in json.dumps(shown)
    assert row["url"] == "https://***@files.example.com/m.safetensors?token=***&v=2"
    assert (
        revealed(row, "download_url") == url and json.loads(revealed(row, "request"))["url"] == url
    )
