"""Failed authentications are limited per client address (issue 23, item 8): ten wrong keys a
minute, then every key from that address is refused with 429 and `Retry-After` on the API, the
GUI's login form, the inbound webhook and the live feed, until the window ends; other addresses
(uvicorn's client address, from X-Forwarded-For behind the README's nginx) are untouched."""

from __future__ import annotations

import json

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import wait_for
from web.auth_limits import LIMIT, MAX_ADDRESSES, OTHERS, WINDOW, FailedAuths

VIEWER = "viewer-key-that-is-right"
COOKIE = "civitai_session"


def from_(address: str) -> dict[str, str]:
    """What nginx adds: uvicorn takes the client address from it on a loopback connection."""
    return {"X-Forwarded-For": address}


def feed_close(d, address: str, token: str | None = None, cookie: str | None = None):
    """The feed's close code and reason for this address; None when it sent the snapshot."""
    url = d.base_url.replace("http://", "ws://") + "/ws/downloads"
    if token is not None:
        url += f"?token={token}"
    headers = from_(address) | ({"Cookie": f"{COOKIE}={cookie}"} if cookie else {})
    with connect(url, additional_headers=headers) as ws:
        try:
            first = json.loads(ws.recv(timeout=5))
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None
        assert first["type"] == "snapshot"
        return None


def limit_lines(d, who: str) -> list[str]:
    log = (d.home / "logs" / "download.log").read_text()
    return [line for line in log.splitlines() if f"wrong keys from {who} within" in line]


def test_ten_wrong_keys_a_minute_then_every_key_from_that_address_is_refused_with_429(
    civitai, daemon
):
    d = daemon(viewer_token=VIEWER)
    attacker, neighbour = "203.0.113.7", "198.51.100.20"
    with httpx.Client(base_url=d.base_url, timeout=20) as c:
        for i in range(LIMIT):
            r = c.get("/api/status", headers={"X-API-Key": f"guess-{i}", **from_(attacker)})
            assert r.status_code == 401, (i, r.text)
        # 200 more in a burst: all refused unchecked, the right keys among them too.
        refused = [
            c.get("/api/status", headers={"Authorization": f"Bearer g{i}", **from_(attacker)})
            for i in range(200)
        ]
        assert {r.status_code for r in refused} == {429}
        r = refused[-1]
        seconds = int(r.headers["Retry-After"])
        assert 1 <= seconds <= WINDOW, r.headers
        assert r.json() == {
            "detail": f"Too many wrong keys from {attacker}: keys from this address are "
            f"refused for {seconds} s more"
        }
        right = {"Authorization": f"Bearer {d.token}", **from_(attacker)}
        assert c.get("/api/status", headers=right).status_code == 429
        assert (
            c.get("/api/status", headers={"X-API-Key": VIEWER, **from_(attacker)}).status_code
            == 429
        )
        hook = c.post("/webhook", json={"modelVersionId": 1}, headers=right)
        assert hook.status_code == 429 and hook.headers["Retry-After"], hook.text
        login = c.post(
            "/gui/login", data={"key": d.token}, headers={"Origin": d.base_url, **from_(attacker)}
        )
        assert login.status_code == 429 and "Retry-After" in login.headers, login.text
        assert "Too many wrong keys from 203.0.113.7" in login.text and COOKIE not in login.cookies
        code, reason = feed_close(d, attacker, token=d.token)
        assert code == 4429 and "try again in" in reason, (code, reason)

        # Another address is not touched: its right key works, its wrong key is a plain 401.
        assert (
            c.get("/api/status", headers={"X-API-Key": VIEWER, **from_(neighbour)}).status_code
            == 200
        )
        assert (
            c.get("/api/status", headers={"X-API-Key": "no", **from_(neighbour)}).status_code == 401
        )
        assert c.get("/api/status", headers={"X-API-Key": d.token}).status_code == 200  # loopback
        # A session (signed, not guessed) still works from the limited address.
        session = c.post(
            "/gui/login", data={"key": d.token}, headers={"Origin": d.base_url, **from_(neighbour)}
        ).cookies[COOKIE]
        with httpx.Client(base_url=d.base_url, cookies={COOKIE: session}, timeout=20) as s:
            assert s.get("/api/status", headers=from_(attacker)).status_code == 200
        assert feed_close(d, attacker, cookie=session) is None

    # One log line for the attacker, not one per attempt: the next address limited is the
    # sync point that its line (and any other) has been written.
    assert limit_lines(d, attacker) == limit_lines(d, attacker)[:1] and limit_lines(d, attacker)
    with httpx.Client(base_url=d.base_url, timeout=20) as c:
        for i in range(LIMIT + 1):
            c.get("/api/status", headers={"X-API-Key": f"x{i}", **from_("192.0.2.99")})
    wait_for(lambda: limit_lines(d, "192.0.2.99"), 10, "the second address's log line")
    assert len(limit_lines(d, attacker)) == 1, limit_lines(d, attacker)
    assert d.token not in (d.home / "logs" / "download.log").read_text()


def test_the_login_form_and_the_feed_token_count_wrong_keys_too(civitai, daemon):
    d = daemon()
    with httpx.Client(base_url=d.base_url, timeout=20) as c:
        for i in range(LIMIT):
            r = c.post(
                "/gui/login", data={"key": f"k{i}"}, headers={"Origin": d.base_url, **from_("::7")}
            )
            assert r.status_code == 200 and "That key is not right" in r.text, i
        r = c.post(
            "/gui/login", data={"key": d.token}, headers={"Origin": d.base_url, **from_("::7")}
        )
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    for i in range(LIMIT):
        assert feed_close(d, "10.9.8.7", token=f"t{i}")[0] == 4401, i
    assert feed_close(d, "10.9.8.7", token=d.token)[0] == 4429
    assert feed_close(d, "10.9.8.6", token=d.token) is None  # its neighbour is fine


def test_the_window_ends_a_right_key_clears_nothing_and_the_memory_is_bounded():
    now = [1000.0]
    limits = FailedAuths(clock=lambda: now[0])
    for _ in range(LIMIT - 1):
        limits.failed("a")
    assert limits.retry_after("a") is None  # nine: still allowed, whatever succeeds meanwhile
    limits.failed("a")
    assert limits.retry_after("a") == WINDOW
    assert limits.retry_after("b") is None
    now[0] += WINDOW - 0.5
    assert limits.retry_after("a") == 1
    now[0] += 0.5
    assert limits.retry_after("a") is None  # the window has passed
    limits.failed("a")
    assert limits.retry_after("a") is None  # a new window, one failure in it

    # Cycling addresses: the table stops at MAX_ADDRESSES, the rest share one limited count.
    for n in range(MAX_ADDRESSES * 3):
        for _ in range(2):
            limits.failed(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
    assert len(limits) <= MAX_ADDRESSES
    assert limits.retry_after("172.16.0.1") is not None  # a new address lands in the shared count
    assert OTHERS in limits._counts
    now[0] += WINDOW + 1.5  # after a window the old entries are pruned and room made again
    limits.failed("172.16.0.2")
    assert "172.16.0.2" in limits._counts and len(limits) < 10
