"""Civitai's 403s of the download endpoint, each its own job error, through the real daemon."""

from __future__ import annotations

import pytest

from tests.conftest import run_job
from tests.fake_civitai import FORBIDDEN, NO_ACCESS, TOKEN


@pytest.mark.parametrize(
    "body,said",
    [(FORBIDDEN, "(Forbidden)"), (NO_ACCESS, "(You do not have access to download this file)")],
    ids=["forbidden", "no-access"],
)
def test_a_forbidden_download_fails_at_once_saying_the_account_has_no_access(
    civitai, daemon, body, said
):
    civitai.add_simple(1, 10, b"x" * 1000, forbidden=body)
    d = daemon()
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    d.stop()
    assert failed["error"].startswith("Civitai refused the download: no access to this file")
    assert said in failed["error"] and "No Civitai token is set" in failed["error"]
    assert "early access" not in failed["error"]
    assert failed["attempts"] == 0
    assert len(civitai.requests_to("api", "/api/download")) == 1  # never retried


def test_no_access_with_a_token_says_to_check_the_token_and_membership(
    civitai, daemon_factory, home
):
    from tests.conftest import write_config

    civitai.add_simple(1, 10, b"x" * 1000, forbidden=NO_ACCESS)
    write_config(home, civitai_base_url=civitai.base_url)
    d = daemon_factory(home, env={"CIVITAI_TOKEN": TOKEN}).start()
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    d.stop()
    assert "Check that civitai_token belongs to an account" in failed["error"]
    assert "membership" in failed["error"] and failed["attempts"] == 0


def test_early_access_keeps_its_own_message(civitai, daemon):
    civitai.add_simple(1, 10, b"x", early_access=True)
    d = daemon()
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",))
    d.stop()
    assert "early access until 2099-01-01" in failed["error"] and "no access" not in failed["error"]


def test_a_cloudflare_challenge_is_retried_and_the_download_completes_when_it_stops(
    civitai, daemon, home
):
    data = b"challenged" * 10_000
    civitai.add_simple(1, 10, data, filename="cf.safetensors")
    civitai.fault("download", challenge=True, times=2)
    d = daemon(retries=5)
    done = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, timeout=60)
    d.stop()
    assert (home / "data/models/lora/cf.safetensors").read_bytes() == data
    assert done["attempts"] == 2  # two challenges, each one failed attempt, then success
    assert len(civitai.requests_to("api", "/api/download")) == 3
    log = (home / "logs/download.log").read_text()
    assert log.count("Cloudflare browser check") >= 2


def test_a_challenge_that_never_stops_gives_up_after_the_retries(civitai, daemon):
    civitai.add_simple(1, 10, b"x" * 1000)
    civitai.fault("download", challenge=True, times=100)
    d = daemon(retries=3)
    failed = run_job(d, {"modelVersionId": 10, "model_type": "lora"}, ("failed",), timeout=60)
    d.stop()
    assert "Gave up after 3 attempts" in failed["error"]
    assert "Cloudflare browser check" in failed["error"]
    assert len(civitai.requests_to("api", "/api/download")) == 3
