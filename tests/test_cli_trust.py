"""The CLI sends the key only to a daemon that has proven it holds it, trusts data/daemon.json
only when no one else could have written it, and never shows a traceback for a daemon's answer."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.conftest import skip_unless_ci, write_config
from tests.standin import CLOSE, CUT, RESET, StandIn, reply
from tests.test_cli import cli, start_on_port
from web import proof

KEY = "home-key-" + "k" * 40
NOT_HERE = "No daemon answers for this home"


def home_naming(home: Path, port: int) -> None:
    """A home whose config.json names `port` as its daemon's, with no daemon.json."""
    write_config(home, api_token=KEY, active_port=port)


def record(home: Path, url: str, mode: int = 0o600) -> Path:
    """A data/daemon.json naming `url`, for a process that runs (this test's)."""
    path = home / "data" / "daemon.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    port = urlsplit(url).port
    data = {"pid": os.getpid(), "port": port, "host": "127.0.0.1", "url": url, "started": "t"}
    path.write_text(json.dumps(data))
    path.chmod(mode)
    return path


def assert_refused(result, stranger: StandIn, contacted: bool, key: str = KEY) -> None:
    seen = stranger.seen()
    assert key.encode() not in seen, f"the key reached the stranger: {seen!r}"
    assert result.returncode == 3, (result.returncode, result.stderr)
    assert NOT_HERE in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert bool(seen) is contacted, seen


def answers_200(method: str, target: str, request: bytes) -> bytes:
    return reply(200, '{"status": "ok", "version": "1", "jobs": []}')


def answers_like_a_daemon(method: str, target: str, request: bytes) -> bytes:
    """A challenge answer of the right shape with proofs it cannot make."""
    fake = {"salt": "0" * 32, "port": 1, "proofs": ["ab" * 32]}
    return reply(200, json.dumps(fake))


def test_a_stranger_on_the_homes_port_never_receives_the_key(home):
    strangers = {
        "closes at once": lambda *_: CLOSE,
        "answers 404": lambda *_: reply(404, '{"detail": "Not Found"}'),
        "answers 200 to everything": answers_200,
        "answers like a daemon": answers_like_a_daemon,
    }
    for name, answer in strangers.items():
        with StandIn(answer) as stranger:
            home_naming(home, stranger.port)
            for args in (["status"], ["list"], ["url"], ["add", "--version", "1"]):
                result = cli(home, *args)
                assert_refused(result, stranger, contacted=True)
                assert f"127.0.0.1:{stranger.port}" in result.stderr, (name, result.stderr)


def test_the_daemons_proof_names_its_port_so_a_stranger_relaying_it_never_receives_the_key(
    home, civitai, daemon_factory
):
    """The daemon runs on another port; the stranger on the home's active_port forwards the
    challenge to it: the answer proves the daemon's port, not the stranger's."""
    write_config(home, viewer_token="viewer-key-" + "v" * 30)
    d = start_on_port(home, civitai, daemon_factory)
    (home / "data" / "daemon.json").unlink()
    # The route itself: no key needed, a proof for each key, bound to the daemon's port.
    nonce = proof.new_nonce()
    answer = httpx.get(d.url("/api/challenge"), params={"nonce": nonce}).json()
    assert proof.holds_key(answer, d.token, nonce, d.port)
    assert proof.holds_key(answer, "viewer-key-" + "v" * 30, nonce, d.port)
    assert not proof.holds_key(answer, d.token, nonce, d.port + 1)
    assert not proof.holds_key(answer, d.token, proof.new_nonce(), d.port)
    assert not proof.holds_key(answer, d.token + "x", nonce, d.port)
    assert d.token not in json.dumps(answer)
    bad = httpx.get(d.url("/api/challenge"), params={"nonce": "not hex"})
    assert bad.status_code == 422 and "hexadecimal" in bad.json()["detail"]

    def relay(method: str, target: str, request: bytes) -> bytes:
        r = httpx.request(method, d.base_url + target)
        return reply(r.status_code, r.content)

    with StandIn(relay) as stranger:
        write_config(home, active_port=stranger.port)
        result = cli(home, "status")
        assert_refused(result, stranger, contacted=True, key=d.token)
        assert stranger.requests and stranger.requests[0].startswith("GET /api/challenge?")
        write_config(home, active_port=d.port)
        assert cli(home, "status").returncode == 0  # the daemon itself is still found
    d.stop()


def outside_address() -> str:
    """An address of this machine that is not loopback (off this machine, as far as a
    daemon.json is concerned)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
        return s.getsockname()[0]


def test_a_daemon_json_naming_another_address_is_not_used(home):
    with StandIn(answers_200, host="0.0.0.0") as stranger:
        home_naming(home, 0)
        write_config(home, active_port=None)
        record(home, f"http://{outside_address()}:{stranger.port}")
        result = cli(home, "status")
        assert_refused(result, stranger, contacted=False)
        assert "not a loopback address" in result.stderr


def test_a_daemon_json_others_could_have_written_is_not_used(home, tmp_path):
    with StandIn(answers_like_a_daemon) as stranger:
        home_naming(home, None)
        url = f"http://127.0.0.1:{stranger.port}"
        # First a record as the daemon writes it: used (the stranger is asked, and fails).
        record(home, url)
        assert_refused(cli(home, "status"), stranger, contacted=True)
        stranger.received.clear()
        for mode, why in ((0o620, "writable by other users"), (0o602, "writable by other users")):
            record(home, url, mode)
            result = cli(home, "status")
            assert_refused(result, stranger, contacted=False)
            assert why in result.stderr, result.stderr
        path = home / "data" / "daemon.json"
        path.unlink()
        elsewhere = record(tmp_path / "other", url)
        path.symlink_to(elsewhere)
        result = cli(home, "status")
        assert_refused(result, stranger, contacted=False)
        assert "symbolic link" in result.stderr, result.stderr


def test_a_daemon_json_owned_by_another_user_is_not_used(home):
    if os.getuid() != 0:
        skip_unless_ci("chown to another user needs root (the unit test below checks the rule)")
    with StandIn(answers_like_a_daemon) as stranger:
        home_naming(home, None)
        path = record(home, f"http://127.0.0.1:{stranger.port}")
        os.chown(path, 4242, 4242)
        result = cli(home, "status")
        assert_refused(result, stranger, contacted=False)
        assert "owned by user 4242" in result.stderr, result.stderr


def test_a_daemon_json_owned_by_someone_else_is_refused_by_the_reader(tmp_path):
    """Unit, for machines where the suite does not run as root: the owner check itself."""
    from config import daemon_record

    home = tmp_path / "h"
    record(home, "http://127.0.0.1:8123")
    assert daemon_record.read_checked(home, {os.getuid()}).port == 8123
    try:
        daemon_record.read_checked(home, {os.getuid() + 1})
    except daemon_record.Untrusted as exc:
        assert f"owned by user {os.getuid()}" in str(exc)
    else:
        raise AssertionError("a record owned by another user was trusted")


class KnowsTheKey:
    """A stand-in that passes the challenge (it holds the key), then answers `bad`."""

    def __init__(self, bad: bytes) -> None:
        self.bad = bad
        self.prover = proof.Prover()
        self.port = 0

    def __call__(self, method: str, target: str, request: bytes) -> bytes:
        path, _, query = target.partition("?")
        if path == "/api/challenge":
            nonce = parse_qs(query)["nonce"][0]
            return reply(200, json.dumps(self.prover.answer([KEY], nonce, self.port)))
        assert f"Bearer {KEY}".encode() in request
        return self.bad


def test_malformed_answers_after_the_proof_give_one_sentence_and_exit_1(home):
    html = "<!doctype html>\n<html><body>\n<h1>Oops</h1>\n</body></html>\n"
    cases = [
        (["status"], reply(200, "{}")),
        (
            ["status"],
            reply(
                200,
                '{"version": 1, "uptime_s": "long", "workers": [], '
                '"paused": 0, "queued": {}, "active": 7}',
            ),
        ),
        (["status"], reply(200, html, "text/html")),
        (["status"], reply(200, "")),
        (["status"], reply(200, "[1, 2, 3]")),
        (["status"], reply(500, html, "text/html")),
        (["status"], b'HTTP/1.1 200 OK\r\ncontent-length: 400\r\n\r\n{"version": ' + CUT),
        (["status"], RESET),
        (["list"], reply(200, '{"jobs": [{"id": 1}]}')),
        (["list"], reply(200, '{"jobs": "none"}')),
        (["completed"], reply(200, '{"completed": [null]}')),
        (["updates", "--check"], reply(200, '{"checked": 1, "requests": 1, "updates": [{}]}')),
        (["add", "--version", "1"], reply(200, '{"id": 3}')),
        (["cancel", "3"], reply(404, '{"detail": [{"loc": ["x"], "msg": "a\\nb"}]}')),
        (["bulk", "alice", "--yes"], reply(200, '{"items": [{"state": "new"}]}')),
        (["list"], reply(200, b'{"jobs": [\xff\xfe]}')),
        (["scan"], reply(200, '{"running": false, "files": "x"}')),
    ]
    for args, bad in cases:
        answer = KnowsTheKey(bad)
        with StandIn(answer) as standin:
            answer.port = standin.port
            home_naming(home, standin.port)
            result = cli(home, *args)
        shown = (args, bad[:60], result.stderr)
        assert result.returncode == 1, shown
        assert "Traceback" not in result.stderr, shown
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), shown
        assert "<" not in lines[0], shown  # no HTML shown as if it were a message


def test_a_daemon_replaces_a_group_writable_record_with_its_own_that_the_cli_trusts(
    home, civitai, daemon_factory
):
    """A record left writable by others (a chmod, an old copy) would keep the CLI away for good
    if the daemon kept its mode: each start writes its own 0600."""
    record(home, "http://127.0.0.1:1", mode=0o664)
    d = start_on_port(home, civitai, daemon_factory)
    assert (home / "data" / "daemon.json").stat().st_mode & 0o777 == 0o600
    status = cli(home, "status")
    assert status.returncode == 0 and f"at {d.base_url}," in status.stdout, status.stderr
    d.stop()
