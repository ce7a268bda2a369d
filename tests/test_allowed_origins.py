"""allowed_origins (issue 25): another origin, the browser extension's, may call the API with its
key only when the user listed it; its CORS preflights are answered; every other origin keeps
today's refusals."""

from __future__ import annotations

import httpx

from tests.conftest import assert_file_is, wait_job

EXTENSION = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
PREFLIGHT = {
    "Origin": EXTENSION,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def test_an_origin_is_let_in_only_once_listed_and_then_on_its_key_alone(civitai, daemon, home):
    f = civitai.add_simple(1, 10, b"x" * 20_000, filename="ext.safetensors")
    d = daemon()
    foreign = {"Origin": EXTENSION, "Sec-Fetch-Site": "cross-site"}
    with d.client() as c:
        refused = c.post("/api/download", json={"modelVersionId": 10}, headers=foreign)
        assert refused.status_code == 403, refused.text
        assert refused.json() == {"detail": f"Requests from origin {EXTENSION!r} are not allowed"}
        assert "access-control-allow-origin" not in refused.headers
        unlisted = c.options("/api/download", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in unlisted.headers
        assert c.get("/api/jobs").json()["total"] == 0

        r = c.patch("/api/settings", json={"allowed_origins": [EXTENSION.upper() + "/"]})
        assert r.status_code == 200, r.text
        assert r.json()["changed"] == ["allowed_origins"]
        assert c.get("/api/settings").json()["settings"]["allowed_origins"] == [EXTENSION]

        preflight = c.options("/api/download", headers=PREFLIGHT)
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == EXTENSION
        assert "authorization" in preflight.headers["access-control-allow-headers"]
        assert "access-control-allow-credentials" not in preflight.headers
        job = c.post("/api/download", json={"modelVersionId": 10}, headers=foreign)
        assert job.status_code == 202, job.text
        assert job.headers["access-control-allow-origin"] == EXTENSION
        wait_job(c, job.json()["id"])
    assert_file_is(home / "data/models/lora/ext.safetensors", f.sha256)

    # A listed origin is let in on its key, never on the GUI's session cookie.
    cookie = httpx.post(d.url("/gui/login"), data={"key": d.token}).cookies
    assert cookie.get("civitai_session")
    as_page = httpx.get(d.url("/api/jobs"), cookies=cookie)
    assert as_page.status_code == 200
    as_extension = httpx.get(d.url("/api/jobs"), cookies=cookie, headers={"Origin": EXTENSION})
    assert as_extension.status_code == 401, as_extension.text
    assert as_extension.headers["access-control-allow-origin"] == EXTENSION
    # Another extension is still refused.
    other = "chrome-extension://ppppppppppppppppppppppppppppppppp"
    with d.client() as c:
        r = c.post("/api/download", json={"modelVersionId": 10}, headers={"Origin": other})
        assert r.status_code == 403
    d.stop()


def test_allowed_origins_takes_only_web_and_extension_origins(civitai, daemon, home):
    d = daemon()
    with d.client() as c:
        for bad, why in [
            ("https://example.com/page", "no path"),
            ("file:///etc", "not an origin"),
            ("javascript:alert(1)", "not an origin"),
            ("*", "not an origin"),
            ("null", "not an origin"),
        ]:
            r = c.patch("/api/settings", json={"allowed_origins": [bad]})
            assert r.status_code == 422, (bad, r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, str) and "allowed_origins" in detail and why in detail
        assert c.get("/api/settings").json()["settings"]["allowed_origins"] == []
        good = ["moz-extension://0e7b9f6a-1c1d-4c2a-9f3e-1234567890ab", "http://127.0.0.1:8188"]
        r = c.patch("/api/settings", json={"allowed_origins": good})
        assert r.status_code == 200, r.text
        assert r.json()["keys"]["allowed_origins"]["applies"] == "live"
    d.stop()
