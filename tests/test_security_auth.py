"""Attacks and careless use against a running daemon: revoked sessions, replayed webhooks,
malformed Host headers, and bodies built to crash the parser."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from jose import jwt
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import REPO, read_config, wait_for, write_config

COOKIE = "civitai_session"


# Sessions -------------------------------------------------------------------------------------


def login(d, key: str) -> str:
    r = httpx.post(d.url("/gui/login"), data={"key": key}, headers={"Origin": d.base_url})
    assert r.status_code == 303, r.text
    return r.cookies[COOKIE]


def ws_close_code(d, session: str) -> int | None:
    """The close code the feed answers a cookie with; None when it sent the snapshot."""
    url = d.base_url.replace("http://", "ws://") + "/ws/downloads"
    with connect(url, additional_headers={"Cookie": f"{COOKIE}={session}"}) as ws:
        try:
            first = json.loads(ws.recv(timeout=5))
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        assert first["type"] == "snapshot"
        return None


def api_status(d, session: str) -> int:
    return httpx.get(d.url("/api/status"), cookies={COOKIE: session}).status_code


def gui_shows_login(d, session: str) -> bool:
    page = httpx.get(d.url("/gui"), cookies={COOKIE: session}).text
    return 'name="key"' in page and 'id="logout"' not in page


def fingerprint(secret: str, key: str) -> str:
    """The documented fingerprint: HMAC-SHA256 of the key under the session secret, truncated."""
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()[:32]


def test_logout_ends_the_session_everywhere_even_when_the_cookie_is_replayed(civitai, daemon):
    d = daemon()
    session = login(d, d.token)
    assert api_status(d, session) == 200
    assert not gui_shows_login(d, session)
    assert ws_close_code(d, session) is None
    out = httpx.post(
        d.url("/gui/logout"), cookies={COOKIE: session}, headers={"Origin": d.base_url}
    )
    assert out.status_code == 303
    # A copy of the cookie kept by an attacker (or a browser that ignored the deletion):
    r = httpx.get(d.url("/api/status"), cookies={COOKIE: session})
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    assert gui_shows_login(d, session)
    assert ws_close_code(d, session) == 4401
    # Survives a restart: the revocation is in SQLite, not in memory.
    d.stop()
    d.start()
    assert api_status(d, session) == 401
    assert ws_close_code(d, session) == 4401
    other = login(d, d.token)  # a new login is not affected
    assert api_status(d, other) == 200
    d.stop()


@contextlib.contextmanager
def open_feed(d, session: str) -> Iterator:
    url = d.base_url.replace("http://", "ws://") + "/ws/downloads"
    with connect(url, additional_headers={"Cookie": f"{COOKIE}={session}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
        yield ws


def close_code_within(ws, seconds: float) -> int | None:
    """The close code the server sends within `seconds`, skipping any feed messages."""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            ws.recv(timeout=left)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        pass
    raise AssertionError(f"the feed was still open after {seconds:g} s")


def test_an_open_feed_is_closed_with_4401_on_log_out_and_when_its_session_expires(
    civitai, daemon, home
):
    civitai.add_simple(1, 10, b"x" * 1000)
    d = daemon()
    leaving, staying = login(d, d.token), login(d, d.token)
    secret = (home / "data" / "session.key").read_text()
    now = int(time.time())
    short = jwt.encode(
        {"sub": "admin", "iat": now, "exp": now + 3, "jti": uuid.uuid4().hex,
         "fp": fingerprint(secret, d.token)},
        secret,
        algorithm="HS256",
    )  # fmt: skip
    with open_feed(d, leaving) as a, open_feed(d, staying) as b, open_feed(d, short) as c:
        out = httpx.post(
            d.url("/gui/logout"), cookies={COOKIE: leaving}, headers={"Origin": d.base_url}
        )
        assert out.status_code == 303
        assert close_code_within(a, 15) == 4401
        assert close_code_within(c, 15) == 4401  # expired while open
        # The other session's feed is still open and still told of every change.
        with d.client() as client:
            job = client.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
            assert job.status_code == 202, job.text
        message = json.loads(b.recv(timeout=15))
        assert message["type"] == "job" and message["job"]["id"] == job.json()["id"]
    d.stop()


def test_the_session_secret_is_never_written_through_a_link_at_its_name(
    civitai, daemon, home, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text("short, not a secret")
    (home / "data").mkdir()
    for target in (outside / "notes.txt", outside / "created-through-the-link"):
        link = home / "data" / "session.key"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        d = daemon()
        assert api_status(d, login(d, d.token)) == 200
        d.stop()
        assert not link.is_symlink() and link.is_file()
        assert link.stat().st_mode & 0o777 == 0o600
        assert len(link.read_text()) >= 32
        assert sorted(p.name for p in outside.iterdir()) == ["notes.txt"]
        assert (outside / "notes.txt").read_text() == "short, not a secret"


def test_a_url_that_is_no_model_page_is_named_without_its_credentials(civitai, daemon):
    d = daemon()
    host = civitai.base_url.split("://", 1)[1]
    url = f"http://someone:hunter2@{host}/images/5?token=abc123secret&nsfw=1"
    with d.client() as c:
        r = c.post("/api/download", json={"url": url, "model_type": "lora"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "is not a Civitai model page" in detail and "/images/5?token=" in detail, detail
    assert "hunter2" not in detail and "abc123secret" not in detail, detail
    d.stop()


def test_changing_api_token_ends_the_admin_sessions_issued_for_the_old_one(civitai, daemon, home):
    d = daemon()
    session = login(d, d.token)
    assert api_status(d, session) == 200
    d.stop()
    write_config(home, api_token="a-brand-new-api-token-after-a-leak-000000000")
    d.start()
    assert api_status(d, session) == 401
    assert gui_shows_login(d, session)
    assert ws_close_code(d, session) == 4401
    assert api_status(d, login(d, "a-brand-new-api-token-after-a-leak-000000000")) == 200
    d.stop()


def test_removing_viewer_token_ends_the_viewer_sessions(civitai, daemon, home):
    d = daemon(viewer_token="wall-screen-viewer-key")
    admin = login(d, d.token)
    viewer = login(d, "wall-screen-viewer-key")
    assert api_status(d, viewer) == 200
    d.stop()
    config = read_config(home)
    del config["viewer_token"]
    (home / "config.json").write_text(json.dumps(config))
    d.start()
    assert api_status(d, viewer) == 401
    assert gui_shows_login(d, viewer)
    assert ws_close_code(d, viewer) == 4401
    assert api_status(d, admin) == 200  # the admin key did not change
    d.stop()


def test_a_signed_session_without_exp_or_with_a_wrong_fingerprint_is_refused(civitai, daemon, home):
    d = daemon()
    secret = (home / "data" / "session.key").read_text()
    now = int(time.time())
    claims = {"sub": "admin", "iat": now, "jti": uuid.uuid4().hex}
    right = fingerprint(secret, d.token)
    good = jwt.encode({**claims, "exp": now + 60, "fp": right}, secret, algorithm="HS256")
    forged = {
        "no exp": jwt.encode({**claims, "fp": right}, secret, algorithm="HS256"),
        "wrong fp": jwt.encode(
            {**claims, "exp": now + 60, "fp": fingerprint(secret, "another-key")},
            secret,
            algorithm="HS256",
        ),
        "no fp": jwt.encode({**claims, "exp": now + 60}, secret, algorithm="HS256"),
        "no jti": jwt.encode(
            {"sub": "admin", "exp": now + 60, "fp": right}, secret, algorithm="HS256"
        ),
    }
    for name, token in forged.items():
        assert api_status(d, token) == 401, name
        assert gui_shows_login(d, token), name
        assert ws_close_code(d, token) == 4401, name
    assert api_status(d, good) == 200
    assert ws_close_code(d, good) is None
    d.stop()


# Inbound webhooks -----------------------------------------------------------------------------

SECRET = "inbound-secret"


def signed_headers(body: bytes, ts: int | None = None, delivery: str | None = None) -> dict:
    ts = int(time.time()) if ts is None else ts
    delivery = delivery or uuid.uuid4().hex
    mac = hmac.new(SECRET.encode(), f"{ts}.{delivery}.".encode() + body, hashlib.sha256)
    return {
        "Content-Type": "application/json",
        "X-Timestamp": str(ts),
        "X-Delivery-Id": delivery,
        "X-Signature-256": "sha256=" + mac.hexdigest(),
    }


def job_total(d) -> int:
    with d.client() as c:
        return c.get("/api/jobs").json()["total"]


def test_a_signed_webhook_cannot_be_replayed_late_early_or_under_a_new_delivery_id(civitai, daemon):
    civitai.add_simple(1, 10, b"from a webhook" * 10)
    d = daemon(webhook_secret=SECRET)
    url = d.url("/webhook")
    body = json.dumps({"modelVersionId": 10, "model_type": "lora"}).encode()

    headers = signed_headers(body)
    first = httpx.post(url, content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert len(first.json()["jobs"]) == 1 and first.json()["duplicate"] is False

    again = httpx.post(url, content=body, headers=headers)
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert again.json()["jobs"] == first.json()["jobs"]

    new_id = {**headers, "X-Delivery-Id": "a-fresh-id-the-attacker-made-up"}
    replay = httpx.post(url, content=body, headers=new_id)
    assert replay.status_code == 401 and "X-Signature-256" in replay.json()["detail"]

    new_ts = {**headers, "X-Timestamp": str(int(time.time()) + 1)}
    assert httpx.post(url, content=body, headers=new_ts).status_code == 401

    old = httpx.post(url, content=body, headers=signed_headers(body, int(time.time()) - 600))
    assert old.status_code == 401 and "older than 5 minutes" in old.json()["detail"]
    future = httpx.post(url, content=body, headers=signed_headers(body, int(time.time()) + 600))
    assert future.status_code == 401 and "in the future" in future.json()["detail"]

    body_only = dict(headers)
    body_only["X-Signature-256"] = (
        "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    )
    body_only["X-Delivery-Id"] = "the-old-scheme"
    assert httpx.post(url, content=body, headers=body_only).status_code == 401
    for missing in ("X-Timestamp", "X-Delivery-Id"):
        h = {k: v for k, v in signed_headers(body).items() if k != missing}
        r = httpx.post(url, content=body, headers=h)
        assert r.status_code == 401 and missing in r.json()["detail"], missing
    too_long = httpx.post(url, content=body, headers=signed_headers(body, delivery="x" * 129))
    assert too_long.status_code == 401 and "128" in too_long.json()["detail"]

    assert job_total(d) == 1  # only the first delivery queued anything
    d.stop()


def readme_block(language: str, marker: str) -> str:
    """The README's code block in `language` that contains `marker`."""
    readme = (REPO / "README.md").read_text()
    for block in re.findall(rf"```{language}\n(.*?)```", readme, re.S):
        if marker in block:
            return block
    raise AssertionError(f"README has no {language} block with {marker!r}")


@pytest.mark.parametrize("language", ["python", "sh"])
def test_the_readme_sender_examples_are_accepted_once(civitai, daemon, language):
    civitai.add_simple(1, 128713, b"sent by the README" * 10)
    d = daemon(webhook_secret="your webhook_secret")
    code = readme_block(language, "X-Delivery-Id")
    placeholder = "http://127.0.0.1:8137/webhook"
    assert placeholder in code
    code = code.replace(placeholder, d.url("/webhook"))
    if language == "python":
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    else:
        sent = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=30)
        assert sent.returncode == 0 and '"duplicate":false' in sent.stdout, sent
    wait_for(lambda: job_total(d) == 1, 10, what="the README's delivery to queue a job")
    with d.client() as c:
        job = c.get("/api/jobs").json()["jobs"][0]
    assert job["modelVersionId"] == 128713
    d.stop()


# Host -----------------------------------------------------------------------------------------


def raw(d, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (httpx would normalise them); the status and the body back."""
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep and (m := re.search(rb"content-length: *(\d+)", head, re.I)):
                if len(rest) >= int(m.group(1)):
                    break
            if sep and b" 101 " in head.split(b"\r\n")[0]:
                break
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def get(host_lines: str) -> bytes:
    return f"GET /api/health HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n".encode()


def test_a_host_header_is_parsed_strictly(civitai, daemon):
    d = daemon()
    p = d.port
    for good in (f"127.0.0.1:{p}", "127.0.0.1", f"LOCALHOST:{p}", f"[::1]:{p}", "[::1]"):
        assert raw(d, get(f"Host: {good}\r\n"))[0] == 200, good
    bad_hosts = [
        f"127.0.0.1:{p}@evil.com",
        f"127.0.0.1:{p}@evil.com:80",
        f"evil.com#@127.0.0.1:{p}",
        f"127.0.0.1:{p}/evil",
        f"127.0.0.1:{p}x",
        "127.0.0.1:",
        f"127.0.0.1:{p}:{p}",
        f"[::1]x:{p}",
        "[::1",
        f"[::1]:{p}@evil.com",
        "user@127.0.0.1",
        "127.0.0.1 evil.com",
        "",
    ]
    for bad in bad_hosts:
        status, body = raw(d, get(f"Host: {bad}\r\n"))
        assert status == 400, bad
        assert "Host" in json.loads(body)["detail"], bad
    for pair in ((f"127.0.0.1:{p}", "evil.com"), (f"127.0.0.1:{p}", f"127.0.0.1:{p}")):
        status, body = raw(d, get("".join(f"Host: {h}\r\n" for h in pair)))
        assert status == 400 and "one Host" in json.loads(body)["detail"], pair
    assert raw(d, get(""))[0] == 400  # HTTP/1.1 without a Host
    assert httpx.get(d.url("/api/health")).status_code == 200
    d.stop()


def test_a_websocket_upgrade_with_a_bad_host_is_refused(civitai, daemon):
    d = daemon()
    p = d.port

    def upgrade(host_lines: str) -> int:
        request = (
            f"GET /ws/downloads?token={d.token} HTTP/1.1\r\n{host_lines}"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        return raw(d, request.encode())[0]

    assert upgrade(f"Host: 127.0.0.1:{p}\r\n") == 101
    assert upgrade(f"Host: 127.0.0.1:{p}@evil.com\r\n") == 400
    assert upgrade(f"Host: 127.0.0.1:{p}\r\nHost: evil.com\r\n") == 400
    with pytest.raises(InvalidStatus):
        url = d.base_url.replace("http://", "ws://") + f"/ws/downloads?token={d.token}"
        with connect(url, additional_headers={"Host": f"127.0.0.1:{p}@evil.com"}):
            pass
    d.stop()


# Bodies ---------------------------------------------------------------------------------------

DEEP = b"[" * 200_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


def assert_refused(r: httpx.Response, status: int, text: str) -> None:
    assert r.status_code == status, (r.request.url, r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    assert text in body["detail"], body


def test_deeply_nested_json_is_refused_with_422_on_every_json_route(civitai, daemon):
    d = daemon()
    key = {"X-API-Key": d.token}
    ct = {**key, "Content-Type": "application/json"}
    for path in ("/api/batch", "/webhook", "/api/download"):
        for body in (DEEP, DEEP_OBJECT):
            r = httpx.post(d.url(path), content=body, headers=ct, timeout=30)
            assert_refused(r, 422, "nested more than 32 levels")
    # FastAPI parses a body without Content-Type as JSON too.
    r = httpx.post(d.url("/api/download"), content=DEEP, headers=key, timeout=30)
    assert_refused(r, 422, "nested more than 32 levels")
    upload = httpx.post(
        d.url("/api/batch"), files={"file": ("m.json", DEEP)}, headers=key, timeout=30
    )
    assert_refused(upload, 422, "nested more than 32 levels")
    # Brackets inside strings are text, not nesting.
    text = json.dumps([{"model_type": "lora", "filename": "[" * 1000 + '\\"{' * 100}])
    r = httpx.post(d.url("/api/batch"), content=text, headers=ct)
    assert r.status_code == 422 and "nested" not in r.text
    assert r.json()["errors"][0]["index"] == 0
    # JSON is UTF-8 (RFC 8259). In UTF-16 each `\\` pairs with the NUL after it, so a scan of the
    # raw bytes would lose track of the strings while json.loads(bytes) decodes and recurses.
    hidden = '["a\\"", ' + "[" * 5000 + "]" * 5001
    for encoding in ("utf-16-le", "utf-16-be", "utf-16", "utf-32-le", "utf-32-be", "utf-32"):
        body = hidden.encode(encoding)
        for path in ("/api/batch", "/webhook", "/api/download"):
            r = httpx.post(d.url(path), content=body, headers=ct, timeout=30)
            assert_refused(r, 422, "must be JSON encoded as UTF-8")
        upload = httpx.post(
            d.url("/api/batch"), files={"file": ("m.json", body)}, headers=key, timeout=30
        )
        assert_refused(upload, 422, "must be JSON encoded as UTF-8")
    # UTF-8 with a byte-order mark, and text beyond ASCII, are still JSON.
    bom = "\ufeff" + json.dumps([{"model_type": "lora", "filename": "café\\x"}], ensure_ascii=False)
    r = httpx.post(d.url("/api/batch"), content=bom.encode("utf-8"), headers=ct)
    assert r.status_code == 422 and "UTF-8" not in r.text, r.text
    assert r.json()["errors"][0]["index"] == 0
    assert httpx.get(d.url("/api/health")).json()["status"] == "ok"
    assert "RecursionError" not in d.stderr_text()
    d.stop()


def test_batch_takes_only_json_or_multipart(civitai, daemon):
    civitai.add_simple(1, 10, b"x")
    d = daemon()
    key = {"X-API-Key": d.token}
    entries = json.dumps([{"modelVersionId": 10, "model_type": "lora"}]).encode()
    for content_type in (
        "application/x-www-form-urlencoded",
        "application/xml",
        "text/csv",
        None,
    ):
        headers = {**key, **({"Content-Type": content_type} if content_type else {})}
        r = httpx.post(d.url("/api/batch"), content=entries, headers=headers)
        assert_refused(r, 415, "application/json")
    ok = httpx.post(
        d.url("/api/batch"),
        content=entries,
        headers={**key, "Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 202 and len(ok.json()["jobs"]) == 1
    with d.client() as c:
        assert c.get("/api/jobs").json()["total"] == 1
        assert c.get("/api/health").status_code == 200
    d.stop()


def guard_verdict(chunks: list[bytes]) -> str:
    """What the body guard says of a body arriving in these chunks: ok, deep or not UTF-8."""
    from errors import InvalidRequest, TooDeeplyNested
    from json_body import BodyGuard

    guard = BodyGuard()
    try:
        for i, chunk in enumerate(chunks):
            guard.feed(chunk, final=i == len(chunks) - 1)
    except TooDeeplyNested:
        return "deep"
    except InvalidRequest as exc:
        assert "must be JSON encoded as UTF-8" in str(exc)
        return "not UTF-8"
    return "ok"


@pytest.mark.parametrize(
    ("body", "verdict"),
    [
        (b"[" * 32 + b"]" * 32, "ok"),
        (b"[" * 33 + b"]" * 33, "deep"),
        (b'{"a":' * 33 + b"1" + b"}" * 33, "deep"),
        (json.dumps(["[" * 100, "{" * 100]).encode(), "ok"),
        (json.dumps(['\\"[[[[', "\\", '"' * 40 + "[" * 40]).encode() + b"[" * 31, "ok"),
        (b'["\\\\"' + b"[" * 32, "deep"),  # an escaped backslash does not escape the quote
        ('["café", "€"]'.encode(), "ok"),  # a character split between chunks is still one
        ('["a\\"", ' + "[" * 40, "not UTF-8"),  # str: encoded below as UTF-16/32
        (b'["\xff"]', "not UTF-8"),
        (b'["\xc3"]', "not UTF-8"),
        (b"[\xc3", "not UTF-8"),  # cut in the middle of a character
    ],
)
def test_the_body_guard_counts_nesting_outside_strings_and_takes_only_utf8_in_any_chunking(
    body, verdict
):
    bodies = (
        [body.encode(e) for e in ("utf-16-le", "utf-16", "utf-32")]
        if isinstance(body, str)
        else [body]
    )
    for b in bodies:
        assert guard_verdict([b]) == verdict, b
        assert guard_verdict([b[i : i + 1] for i in range(len(b))]) == verdict, b
