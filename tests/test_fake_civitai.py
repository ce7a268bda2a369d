"""The fake Civitai itself: each behaviour later tests rely on, over real HTTP."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.fake_civitai import TOKEN, FakeCivitai

SHARED = Path(__file__).resolve().parents[2] / "shared" / "civitai-responses"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DATA = bytes(range(256)) * 400  # 102400 bytes


@pytest.fixture
def fake(civitai: FakeCivitai) -> FakeCivitai:
    civitai.add_simple(100, 200, DATA, filename="my lora [v1] ü 日本.safetensors")
    civitai.add_simple(101, 201, b"secret bytes", login_required=True)
    return civitai


def follow(fake: FakeCivitai, version_id: int, **headers: str) -> str:
    r = httpx.get(f"{fake.base_url}/api/download/models/{version_id}", headers=headers)
    assert r.status_code == 307, r.text
    return r.headers["location"]


def test_model_and_version_shapes_match_the_real_api(fake):
    model = httpx.get(f"{fake.base_url}/api/v1/models/100").json()
    real = json.loads((FIXTURES / "model_1580878_2025-08.json").read_text())
    assert set(model) <= set(real) | {"creator"}
    version = model["modelVersions"][0]
    f = version["files"][0]
    assert set(f) <= set(real["modelVersions"][0]["files"][0]) | {"primary"}
    assert f["hashes"]["SHA256"] == hashlib.sha256(DATA).hexdigest().upper()
    assert f["hashes"]["AutoV2"] == f["hashes"]["SHA256"][:10]
    single = httpx.get(f"{fake.base_url}/api/v1/model-versions/200").json()
    assert single["model"] == {"name": "Model 100", "type": "LORA", "nsfw": False, "poi": False}
    assert not single["updatedAt"].endswith("Z")  # Civitai's timestamp quirk


def test_batch_models_by_ids_and_by_hash(fake):
    r = httpx.get(f"{fake.base_url}/api/v1/models", params={"ids": "100,101,999"}).json()
    assert sorted(m["id"] for m in r["items"]) == [100, 101]
    sha = hashlib.sha256(DATA).hexdigest()
    for h in (sha, sha[:10].upper()):
        assert httpx.get(f"{fake.base_url}/api/v1/model-versions/by-hash/{h}").json()["id"] == 200
    assert httpx.get(f"{fake.base_url}/api/v1/model-versions/by-hash/{'0' * 64}").status_code == 404
    assert httpx.get(f"{fake.base_url}/api/v1/models/555").status_code == 404


def test_download_redirects_to_a_cdn_on_another_host_with_disposition_and_etag(fake):
    location = follow(fake, 200)
    assert location.startswith(fake.cdn_url)
    assert httpx.URL(location).host == "127.0.0.2" != httpx.URL(fake.base_url).host
    r = httpx.get(location)
    assert r.content == DATA
    assert r.headers["etag"] and r.headers["accept-ranges"] == "bytes"
    disposition = r.headers["content-disposition"]
    assert disposition == 'attachment; filename="my lora [v1] ü 日本.safetensors"'


def test_range_if_range_and_416(fake):
    location = follow(fake, 200)
    etag = httpx.head(location).headers["etag"]
    r = httpx.get(location, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == DATA[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(DATA)}"
    r = httpx.get(location, headers={"Range": "bytes=1000-", "If-Range": etag})
    assert r.status_code == 206 and r.content == DATA[1000:]
    r = httpx.get(location, headers={"Range": "bytes=1000-", "If-Range": '"other"'})
    assert r.status_code == 200 and r.content == DATA
    assert httpx.get(location, headers={"Range": f"bytes={len(DATA)}-"}).status_code == 416


def test_cdn_rejects_authorization_and_expired_links(fake):
    location = follow(fake, 200)
    assert httpx.get(location, headers={"Authorization": "Bearer x"}).status_code == 400
    fake.expire_links()
    assert httpx.get(location).status_code == 403
    assert httpx.get(follow(fake, 200)).status_code == 200
    fake.link_ttl = -1
    assert httpx.get(follow(fake, 200)).status_code == 403


def test_login_required_model_needs_the_token(fake):
    r = httpx.get(f"{fake.base_url}/api/download/models/201")
    assert r.status_code == 401 and "logged in" in r.json()["message"]
    assert follow(fake, 201, Authorization=f"Bearer {TOKEN}")
    bad = httpx.get(
        f"{fake.base_url}/api/download/models/201", headers={"Authorization": "Bearer no"}
    )
    assert bad.status_code == 401


def test_download_errors_of_the_real_service(civitai):
    civitai.add_simple(1, 11, b"x", disabled=True)
    civitai.add_simple(2, 12, b"x", early_access=True)
    civitai.add_simple(3, 13, b"x", archived=True)
    base = f"{civitai.base_url}/api/download/models"
    assert "disabled downloads" in httpx.get(f"{base}/11").json()["message"]
    assert httpx.get(f"{base}/12").json()["error"] == "Early Access"
    assert httpx.get(f"{base}/13").status_code == 410
    assert httpx.get(f"{base}/99").json() == {"error": "File not found"}
    browser = httpx.get(f"{base}/11", headers={"User-Agent": "Mozilla/5.0"})
    assert browser.status_code == 307 and "/login" in browser.headers["location"]


def test_file_id_pins_the_file_and_default_is_not_always_primary(civitai):
    pruned = civitai.file(b"pruned", name="same.safetensors", primary=False, id=5)
    full = civitai.file(b"full", name="same.safetensors", primary=True, id=6)
    civitai.add_model(7, "Two files", "Checkpoint", [civitai.version(70, [pruned, full])])
    base = f"{civitai.base_url}/api/download/models/70"
    assert httpx.get(follow(civitai, 70)).content == b"pruned"
    assert httpx.get(httpx.get(base + "?fileId=6").headers["location"]).content == b"full"
    files = httpx.get(f"{civitai.base_url}/api/v1/model-versions/70").json()["files"]
    assert "primary" not in files[0] and files[1]["primary"] is True


def test_status_sequence_with_retry_after_then_success(fake):
    fake.fault("api", status=503, times=2)
    fake.fault("api", status=429, retry_after=2)
    url = f"{fake.base_url}/api/v1/models/100"
    assert [httpx.get(url).status_code for _ in range(3)] == [503, 503, 429]
    r = httpx.get(url)
    assert r.status_code == 200
    fake.fault("api", status=429, retry_after=2)
    assert httpx.get(url).headers["retry-after"] == "2"


def test_html_page_instead_of_json(fake):
    fake.fault("api", html=True)
    r = httpx.get(f"{fake.base_url}/api/v1/models/100")
    assert r.headers["content-type"] == "text/html" and b"Just a moment" in r.content


def test_drop_after_n_bytes_cuts_the_body(fake):
    fake.fault("cdn", drop_after=5000)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(follow(fake, 200))


def test_corrupt_bytes_and_ignored_range(fake):
    location = follow(fake, 200)
    fake.fault("cdn", corrupt=True)
    r = httpx.get(location)
    assert len(r.content) == len(DATA) and r.content != DATA
    fake.fault("cdn", ignore_range=True)
    r = httpx.get(location, headers={"Range": "bytes=100-"})
    assert r.status_code == 200 and r.content == DATA


def test_stalled_body_keeps_the_socket_silent(fake):
    fake.fault("cdn", stall_after=1000)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(follow(fake, 200), timeout=httpx.Timeout(5, read=0.5))


def test_rate_limit_slows_the_body(fake):
    fake.fault("cdn", rate=200_000)
    started = time.monotonic()
    assert httpx.get(follow(fake, 200)).content == DATA
    assert time.monotonic() - started >= 0.4  # 102400 bytes at 200 kB/s


def test_publish_new_version_shows_first(fake):
    fake.publish_version(100, fake.version(300, [b"new version bytes"]))
    versions = httpx.get(f"{fake.base_url}/api/v1/models/100").json()["modelVersions"]
    assert [v["id"] for v in versions] == [300, 200]


def test_requests_are_recorded_per_server(fake):
    httpx.get(follow(fake, 201, Authorization=f"Bearer {TOKEN}"))
    assert fake.requests_to("api", "/api/download")[0].headers["authorization"].endswith(TOKEN)
    assert "authorization" not in fake.requests_to("cdn", "/file")[0].headers


def test_real_fixtures_are_kept_beside_the_tests():
    names = {p.name for p in FIXTURES.glob("*.json")}
    if SHARED.exists():
        assert {p.name for p in SHARED.glob("*.json")} <= names
    assert "models_list_cursor_based_2024-05_dreamshaper_trimmed.json" in names
