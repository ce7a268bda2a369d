"""Authentication that keeps strangers out: keys, roles, the GUI session, browser attacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import pytest
from jose import jwt

from tests.conftest import read_config, wait_job

PROTECTED = [
    ("POST", "/api/download"),
    ("POST", "/api/batch"),
    ("GET", "/api/status"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/1"),
    ("POST", "/api/jobs/1/cancel"),
    ("POST", "/api/jobs/1/retry"),
    ("GET", "/api/completed"),
    ("GET", "/api/metrics"),
    ("POST", "/api/updates/check"),
    ("GET", "/api/updates"),
    ("POST", "/api/scan"),
    ("GET", "/api/scan"),
]


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_without_the_key_nothing_but_health_answers(civitai, daemon):
    d = daemon()
    for n, (method, path) in enumerate(PROTECTED):
        # Each route from its own address (as nginx would say): wrong keys are limited per
        # address (test_auth_limits.py), and this test sends more than the limit.
        address = {"X-Forwarded-For": f"192.0.2.{n + 1}"}
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"X-API-Key": "nope"},
            {"Authorization": "Basic eDp5"},
        ):
            r = httpx.request(method, d.url(path), headers={**headers, **address}, json={})
            assert r.status_code == 401, (method, path, headers, r.text)
    assert httpx.get(d.url("/api/health")).status_code == 200
    for headers in ({"Authorization": f"Bearer {d.token}"}, {"X-API-Key": d.token}):
        assert httpx.get(d.url("/api/status"), headers=headers).status_code == 200
    d.stop()


def test_viewer_key_reads_everything_and_changes_nothing(civitai, daemon, home):
    civitai.add_simple(1, 10, b"x")
    d = daemon(viewer_token="viewer-key-for-the-wall-screen")
    viewer = {"X-API-Key": "viewer-key-for-the-wall-screen"}
    for method, path in PROTECTED:
        r = httpx.request(
            method, d.url(path), headers=viewer, json={"modelVersionId": 10, "model_type": "lora"}
        )
        if method == "GET":
            assert r.status_code in (200, 404), (path, r.text)
        else:
            assert r.status_code == 403 and "viewer key can only read" in r.json()["detail"], path
    with d.client() as c:
        assert c.get("/api/jobs").json()["total"] == 0  # the viewer queued nothing
    d.stop()


def login(d, key: str) -> httpx.Response:
    return httpx.post(d.url("/gui/login"), data={"key": key}, headers={"Origin": d.base_url})


def test_gui_login_sets_a_strict_httponly_session_and_logout_clears_it(civitai, daemon):
    d = daemon()
    page = httpx.get(d.url("/gui"))
    assert page.status_code == 200 and 'name="key"' in page.text
    bad = login(d, "wrong")
    assert bad.status_code == 200 and "not right" in bad.text and "set-cookie" not in bad.headers
    ok = login(d, d.token)
    assert ok.status_code == 303 and ok.headers["location"] == "/gui"
    cookie = ok.headers["set-cookie"]
    assert cookie.startswith("civitai_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
    session = ok.cookies["civitai_session"]
    jar = {"civitai_session": session}
    assert httpx.get(d.url("/api/status"), cookies=jar).status_code == 200
    assert 'id="logout"' in httpx.get(d.url("/gui"), cookies=jar).text
    out = httpx.post(d.url("/gui/logout"), cookies=jar, headers={"Origin": d.base_url})
    assert out.status_code == 303 and 'civitai_session=""' in out.headers["set-cookie"]
    d.stop()


def test_forged_sessions_are_refused(civitai, daemon, home):
    d = daemon()
    secret = (home / "data" / "session.key").read_text()
    now = int(time.time())
    fp = hmac.new(secret.encode(), d.token.encode(), hashlib.sha256).hexdigest()[:32]
    claims = {"sub": "admin", "iat": now, "exp": now + 60, "jti": "s1", "fp": fp}
    good = jwt.encode(claims, secret, algorithm="HS256")
    forged = {
        "alg none": b64({"alg": "none", "typ": "JWT"})
        + "."
        + b64({"sub": "admin", "exp": now + 60})
        + ".",
        "wrong secret": jwt.encode({"sub": "admin", "exp": now + 60}, "guess", algorithm="HS256"),
        "expired": jwt.encode(
            {"sub": "admin", "iat": now - 99, "exp": now - 10}, secret, algorithm="HS256"
        ),
        "HS512": jwt.encode({"sub": "admin", "exp": now + 60}, secret, algorithm="HS512"),
        "unknown role": jwt.encode({"sub": "root", "exp": now + 60}, secret, algorithm="HS256"),
        "garbage": "not.a.jwt",
    }
    for name, token in forged.items():
        r = httpx.get(d.url("/api/status"), cookies={"civitai_session": token})
        assert r.status_code == 401, name
        assert "login" in httpx.get(d.url("/gui"), cookies={"civitai_session": token}).text.lower()
    assert httpx.get(d.url("/api/status"), cookies={"civitai_session": good}).status_code == 200
    d.stop()


def test_foreign_host_and_origin_are_refused(civitai, daemon):
    d = daemon()
    key = {"Authorization": f"Bearer {d.token}"}
    rebinding = httpx.get(d.url("/api/status"), headers={**key, "Host": "evil.example.com"})
    assert rebinding.status_code == 400 and "not this daemon" in rebinding.json()["detail"]
    assert httpx.get(d.url("/api/health"), headers={"Host": "attacker.test:80"}).status_code == 400
    for origin in ("https://evil.example.com", "http://127.0.0.1:1", "null"):
        r = httpx.post(d.url("/api/download"), headers={**key, "Origin": origin}, json={})
        assert r.status_code == 403, origin
    cross = httpx.post(
        d.url("/api/download"), headers={**key, "Sec-Fetch-Site": "cross-site"}, json={}
    )
    assert cross.status_code == 403
    form = httpx.post(
        d.url("/api/download"), headers=key, data={"model_type": "lora", "modelId": "1"}
    )
    assert form.status_code == 415
    plain = httpx.post(
        d.url("/api/batch"), headers={**key, "Content-Type": "text/plain"}, content=b"[]"
    )
    assert plain.status_code == 415
    same = httpx.post(
        d.url("/api/download"), headers={**key, "Origin": d.base_url}, json={"model_type": "lora"}
    )
    assert same.status_code == 422  # got through to validation
    d.stop()


def test_trusted_hosts_admits_a_reverse_proxy_name(civitai, daemon):
    d = daemon(trusted_hosts=["models.example.net"])
    r = httpx.get(d.url("/api/health"), headers={"Host": "models.example.net"})
    assert r.status_code == 200
    d.stop()


def test_binding_beyond_loopback_warns_naming_the_exposure(civitai, daemon, home, daemon_factory):
    daemon().stop()
    d = daemon_factory(home, "--host", "0.0.0.0").start()
    d.stop()
    assert "reachable from other machines" in d.stderr_text()


def test_secrets_never_appear_in_responses_logs_or_webhooks(civitai, daemon, home, daemon_factory):
    civitai.add_simple(1, 10, b"x" * 100, login_required=True)
    from tests.fake_civitai import TOKEN

    d = daemon_factory(home, env={"CIVITAI_TOKEN": TOKEN})
    from tests.conftest import write_config

    write_config(home, civitai_base_url=civitai.base_url, webhook_secret="hook-secret-123")
    d.start()
    session_secret = (home / "data" / "session.key").read_text()
    bodies = []
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_job(c, job["id"])
        for path in (
            "/api/status",
            "/api/jobs",
            f"/api/jobs/{job['id']}",
            "/api/completed",
            "/api/metrics",
            "/api/updates",
            "/openapi.json",
            "/gui",
            "/docs",
        ):
            bodies.append(c.get(path).text)
    d.stop()
    texts = bodies + [p.read_text() for p in (home / "logs").iterdir()]
    for secret in (TOKEN, session_secret, "hook-secret-123"):
        assert not any(secret in t for t in texts), secret
    assert TOKEN.encode() not in (home / "data" / "completed.db").read_bytes()
    assert oct((home / "data" / "session.key").stat().st_mode & 0o777) == "0o600"
    assert oct((home / "config.json").stat().st_mode & 0o777) == "0o600"
    assert len(read_config(home)["api_token"]) >= 40


@pytest.fixture
def signed(civitai, daemon):
    civitai.add_simple(1, 10, b"from a webhook" * 10)
    return daemon(webhook_secret="inbound-secret")


def sign(body: bytes, secret: str = "inbound-secret", delivery: str = "d-1") -> dict[str, str]:
    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), f"{ts}.{delivery}.".encode() + body, hashlib.sha256)
    return {
        "Content-Type": "application/json",
        "X-Timestamp": ts,
        "X-Delivery-Id": delivery,
        "X-Signature-256": "sha256=" + mac.hexdigest(),
    }


def test_inbound_webhook_needs_a_valid_signature_and_ignores_replays(signed):
    d = signed
    body = json.dumps({"modelVersionId": 10, "model_type": "lora"}).encode()
    url = d.url("/webhook")
    ct = {"Content-Type": "application/json"}
    assert httpx.post(url, content=body, headers=ct).status_code == 401
    assert httpx.post(url, content=body, headers=sign(body, "wrong")).status_code == 401
    zz = {**sign(body), "X-Signature-256": "sha256=zz"}
    assert httpx.post(url, content=body, headers=zz).status_code == 401
    tampered = body.replace(b"10", b"11")
    assert httpx.post(url, content=tampered, headers=sign(body)).status_code == 401
    first = httpx.post(url, content=body, headers=sign(body))
    assert first.status_code == 202 and len(first.json()["jobs"]) == 1
    with d.client() as c:
        wait_job(c, first.json()["jobs"][0]["id"])
        replay = httpx.post(url, content=body, headers=sign(body))
        assert replay.status_code == 202 and replay.json()["duplicate"] is True
        assert c.get("/api/jobs").json()["total"] == 1
        many = json.dumps(
            [{"modelVersionId": 10, "model_type": "vae"}, {"model_type": "lora"}]
        ).encode()
        r = httpx.post(url, content=many, headers=sign(many, delivery="d-2"))
        assert len(r.json()["jobs"]) == 1 and r.json()["errors"][0]["index"] == 1
        again = httpx.post(url, content=many, headers=sign(many, delivery="d-2"))
        assert again.json()["duplicate"] is True
        assert c.get("/api/jobs").json()["total"] == 2
    d.stop()


def test_inbound_webhook_without_secret_takes_the_api_key(civitai, daemon):
    civitai.add_simple(1, 10, b"x")
    d = daemon()
    body = {"modelVersionId": 10, "model_type": "lora"}
    assert httpx.post(d.url("/webhook"), json=body).status_code == 401
    r = httpx.post(d.url("/webhook"), json=body, headers={"X-API-Key": d.token})
    assert r.status_code == 202 and r.json()["jobs"][0]["modelVersionId"] == 10
    bad = httpx.post(
        d.url("/webhook"),
        content=b"{nope",
        headers={"X-API-Key": d.token, "Content-Type": "application/json"},
    )
    assert bad.status_code == 422 and "not valid JSON" in bad.json()["detail"]
    d.stop()


def test_openapi_documents_every_route_with_models(civitai, daemon):
    d = daemon()
    spec = httpx.get(d.url("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/api/download",
        "/api/batch",
        "/api/status",
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/cancel",
        "/api/jobs/{job_id}/retry",
        "/api/completed",
        "/api/metrics",
        "/api/updates/check",
        "/api/updates",
        "/api/scan",
        "/api/health",
        "/webhook",
    ):
        assert path in paths, path
    download = paths["/api/download"]["post"]
    assert "JobRequest" in json.dumps(download["requestBody"])
    assert "Job" in json.dumps(download["responses"]["202"])
    assert httpx.get(d.url("/docs")).status_code == 200
    d.stop()
