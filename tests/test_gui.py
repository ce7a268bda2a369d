"""The GUI in a real browser: Debian's Chromium, driven headless by Playwright."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import read_config, wait_for
from tests.fake_civitai import TOKEN

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_tab(page: Page, name: str) -> None:
    page.click(f"#nav-{name}")
    expect(page.locator(f"#tab-{name}")).to_have_css("opacity", "1")


def log_in(page: Page, d, key: str | None = None) -> None:
    page.goto(d.url("/gui"))
    page.fill("#key", key or d.token)
    page.click("button[type=submit]")
    expect(page.locator("#live")).to_be_visible()


def test_login_rejects_a_wrong_key_and_accepts_the_right_one(civitai, daemon, page):
    d = daemon()
    page.goto(d.url("/gui"))
    shot(page, "login")
    page.fill("#key", "wrong")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("not right")
    log_in(page, d)
    expect(page.locator("#role")).to_have_text("admin")
    page.click("#logout")
    expect(page.locator("#key")).to_be_visible()
    d.stop()


def test_after_ten_wrong_keys_the_login_says_for_how_long_keys_are_refused(civitai, daemon, page):
    d = daemon()
    page.goto(d.url("/gui"))
    for i in range(10):
        page.fill("#key", f"wrong-{i}")
        page.click("button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("not right")
    page.fill("#key", d.token)  # the right key too, until the minute ends
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text(
        re.compile(r"Too many wrong keys from 127\.0\.0\.1: .* refused for \d+ s more\.")
    )
    expect(page.locator("#key")).to_be_visible()
    d.stop()


def test_add_by_url_and_watch_it_complete_then_see_it_in_the_library(civitai, daemon, page, home):
    civitai.add_simple(
        4384, 128713, os.urandom(6_000_000), filename="dreamshaper_8.safetensors", type="Checkpoint"
    )
    civitai.default_rate = 2_000_000
    d = daemon()
    log_in(page, d)
    open_tab(page, "add")
    page.fill("#lookup-input", "https://civitai.com/models/4384/dreamshaper?modelVersionId=128713")
    page.click("#lookup-button")
    expect(page.locator("#lookup-name")).to_have_text("Model 4384")
    expect(page.locator("#add-type")).to_have_value("checkpoint")
    expect(page.locator("#add-file")).to_contain_text("dreamshaper_8.safetensors")
    shot(page, "add")
    page.click("#add-button")
    row = page.locator(".job-row").first
    expect(row.locator(".job-status")).to_have_text("downloading")
    expect(row.locator(".progress-bar")).not_to_have_text("0%")
    shot(page, "queue-downloading")
    expect(row.locator(".job-status")).to_have_text("completed", timeout=20_000)
    expect(row.locator(".progress-bar")).to_have_text("100%")
    shot(page, "queue-completed")
    open_tab(page, "library")
    lib = page.locator(".library-row").first
    expect(lib).to_contain_text("dreamshaper_8.safetensors")
    expect(lib).to_contain_text("checkpoint")
    wait_for(
        lambda: lib.locator("img:visible").evaluate("i => i.complete && i.naturalWidth > 0"),
        10,
        what="preview",
    )
    shot(page, "library")
    open_tab(page, "status")
    expect(page.locator("#m-bytes")).to_have_text("6.0 MB")
    expect(page.locator("#m-failures")).to_have_text("0")
    shot(page, "status")
    assert (home / "data/models/checkpoint/dreamshaper_8.safetensors").exists()
    d.stop()


def test_login_required_model_shows_the_token_message(civitai, daemon, page):
    civitai.add_simple(1, 10, b"x" * 1000, login_required=True)
    d = daemon()
    log_in(page, d)
    open_tab(page, "add")
    page.fill("#lookup-input", "1")
    page.click("#lookup-button")
    page.click("#add-button")
    row = page.locator(".job-row").first
    expect(row.locator(".job-status")).to_have_text("failed")
    expect(row.locator(".job-error")).to_contain_text("needs a Civitai login")
    expect(page.locator(".toast").last).to_contain_text("failed")
    shot(page, "failed-token")
    d.stop()


def test_cancel_and_retry(civitai, daemon, page):
    civitai.add_simple(1, 10, os.urandom(4_000_000))
    civitai.default_rate = 500_000
    d = daemon()
    log_in(page, d)
    with d.client() as c:
        c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
    row = page.locator(".job-row").first
    expect(row.locator(".job-status")).to_have_text("downloading")
    row.locator(".job-cancel").click()
    page.click("#cancel-confirm")  # a cancel asks first (test_gui_controls.py)
    expect(row.locator(".job-status")).to_have_text("cancelled")
    civitai.default_rate = None
    row.locator(".job-retry").click()
    expect(row.locator(".job-status")).to_have_text("completed", timeout=20_000)
    d.stop()


def test_manifest_upload_shows_each_rejected_entry(civitai, daemon, page, tmp_path):
    civitai.add_simple(1, 10, b"x" * 1000)
    d = daemon()
    log_in(page, d)
    open_tab(page, "add")
    upload = tmp_path / "manifest.json"
    direct = "https://example.com/a.safetensors"  # off Civitai: its folder must be given
    upload.write_text(json.dumps([{"modelVersionId": 10, "model_type": "lora"}, {"url": direct}]))
    page.set_input_files("#batch-file", str(upload))
    page.click("#batch-file-button")
    expect(page.locator(".batch-error")).to_have_count(1)
    rejected = page.locator(".batch-error")
    expect(rejected).to_contain_text(f"Entry 2: model_type is required for {direct}")
    page.fill("#batch-urls", "https://civitai.com/models/1\nhttps://example.com/nope")
    page.select_option("#batch-type", "lora")
    page.click("#batch-urls-button")
    expect(page.locator(".batch-error")).to_contain_text("https://example.com/nope: ")
    expect(page.locator("#batch-urls")).to_have_value("https://example.com/nope")  # kept to fix
    shot(page, "batch")
    d.stop()


def test_update_flow_after_a_new_version_is_published(civitai, daemon, page, home):
    civitai.add_simple(1, 10, b"old" * 100, filename="a.safetensors")
    (home / "manifest.json").write_text(json.dumps([{"modelId": 1, "model_type": "lora"}]))
    d = daemon()
    with d.client() as c:
        wait_for(lambda: c.get("/api/jobs?status=completed").json()["total"] == 1, 20)
    civitai.publish_version(
        1, civitai.version(11, [civitai.file(b"new" * 100, name="a_v2.safetensors")], name="v2")
    )
    log_in(page, d)
    open_tab(page, "library")
    expect(page.locator("#tracked-list")).to_contain_text("Model 1 · newest version")  # by name
    page.click("#check-updates")
    expect(page.locator(".update-row").first).to_contain_text("v2")
    open_tab(page, "queue")
    expect(page.locator(".job-row").first.locator(".job-status")).to_have_text("completed")
    shot(page, "updates")
    d.stop()


def test_the_page_recovers_after_the_daemon_restarts(civitai, daemon, page, home, daemon_factory):
    civitai.add_simple(1, 10, b"x" * 1000, filename="after.safetensors")
    d = daemon()
    log_in(page, d)
    d.stop()
    expect(page.locator("#offline")).to_be_visible()
    d2 = daemon_factory(home).start()  # same active_port
    assert d2.port == d.port
    expect(page.locator("#live")).to_be_visible(timeout=15_000)
    with d2.client() as c:
        c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
    expect(page.locator(".job-row").first.locator(".job-status")).to_have_text("completed")
    d2.stop()


def test_viewer_sees_everything_but_no_controls(civitai, daemon, page):
    civitai.add_simple(1, 10, b"x" * 1000, login_required=True)
    d = daemon(viewer_token="wall-screen-key")
    with d.client() as c:
        c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
    log_in(page, d, "wall-screen-key")
    expect(page.locator("#role")).to_have_text("viewer")
    expect(page.locator(".job-row .job-status")).to_have_text("failed")
    expect(page.locator(".job-retry")).to_have_count(0)
    expect(page.locator("#nav-add")).to_be_hidden()
    expect(page.locator("#nav-settings")).to_have_count(0)
    expect(page.locator("#tab-settings")).to_have_count(0)
    shot(page, "viewer")
    d.stop()


def test_settings_page_saves_throttle_and_token_and_shows_them_after_a_reload(
    civitai, daemon, page, home
):
    problems: list[str] = []  # console errors (CSP violations are among them), page errors
    page.on(
        "console",
        lambda m: (
            problems.append(f"{m.text} at {m.location.get('url')}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    d = daemon()
    log_in(page, d)
    open_tab(page, "settings")
    expect(page.locator("#set-civitai_token-state")).to_have_text("not set")
    for key in ("host", "active_port", "download_dir"):
        expect(page.locator(f"#set-{key}-row .applies-later")).to_have_text("applies at next start")
    expect(page.locator("#set-throttle-row .applies-later")).to_have_count(0)
    before = (home / "config.json").read_bytes()
    page.fill("#set-workers", "0")
    page.click("#settings-save")
    expect(page.locator("#set-workers-error")).to_have_text("Workers must be at least 1.")
    expect(page.locator("#set-workers")).to_have_class(re.compile("is-invalid"))
    assert (home / "config.json").read_bytes() == before  # nothing written (nothing sent)
    shot(page, "settings-error")
    page.fill("#set-workers", "3")
    page.fill("#set-throttle", "5")  # MB/s
    page.fill("#set-civitai_token", TOKEN)
    page.click("#notify-add-discord")
    page.fill(".notify-url", "https://discord.example/api/webhooks/1/abc")
    page.click("#settings-save")
    expect(page.locator(".toast").last).to_contain_text("Applied now")
    page.reload()
    expect(page.locator("#live")).to_be_visible()
    open_tab(page, "settings")
    expect(page.locator("#set-throttle")).to_have_value("5")
    assert read_config(home)["throttle"] == 5_000_000
    expect(page.locator("#set-workers")).to_have_value("3")
    expect(page.locator("#set-civitai_token-state")).to_have_text("set")
    expect(page.locator("#set-civitai_token")).to_have_value("")
    # The webhook's token is in its path: the page is shown only its id, and keeps the URL.
    expect(page.locator(".notify-url")).to_have_value("")
    expect(page.locator(".notify-url")).to_have_attribute(
        "placeholder", "set: https://discord.example/api/webhooks/1/… (empty: keep)"
    )
    shot(page, "settings")
    assert TOKEN not in page.content()
    config = read_config(home)
    assert config["throttle"] == 5_000_000 and config["workers"] == 3
    assert config["civitai_token"] == TOKEN
    assert config["notify"] == [
        {"type": "discord", "url": "https://discord.example/api/webhooks/1/abc"}
    ]
    with d.client() as c:
        assert c.get("/api/status").json()["workers"] == 3  # applied, not only written
    assert problems == [], problems
    d.stop()


def test_an_apps_folder_name_typed_as_the_folder_queues_into_that_folder(
    civitai, daemon, page, home
):
    """An A1111 user types `Stable-diffusion` (the browser once refused it by pattern); the
    file lands in models/Stable-diffusion under the a1111 layout."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    blob = os.urandom(50_000)
    civitai.add_simple(4384, 128713, blob, filename="dreamshaper_8.safetensors", type="Checkpoint")
    d = daemon(layout="a1111")
    log_in(page, d)
    open_tab(page, "add")
    page.fill("#lookup-input", "4384")
    page.click("#lookup-button")
    expect(page.locator("#add-type")).to_have_value("checkpoint")
    page.fill("#add-type", "Stable-diffusion")
    page.click("#add-button")
    row = page.locator(".job-row").first
    expect(row.locator(".job-status")).to_have_text("completed", timeout=20_000)
    expect(row).to_contain_text("checkpoint")
    target = home / "data/models/models/Stable-diffusion/dreamshaper_8.safetensors"
    assert target.read_bytes() == blob
    assert problems == [], problems
    d.stop()


@pytest.mark.parametrize(
    ("etag", "shown"),
    [
        (True, "checked by its git blob SHA-1: its source publishes no SHA256"),
        (False, "checked by size only: its source publishes no SHA256"),
    ],
    ids=["git-sha1", "size-only"],
)
def test_a_file_checked_without_a_sha256_says_how_in_the_queue(
    civitai, hf, daemon, page, home, etag, shown
):
    """A Hugging Face file kept in git has no published SHA256: its row says it was checked by
    its git blob SHA-1 (the Hub's ETag), or by size only when no ETag came, so nobody takes it
    for SHA256-verified."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    hf.git_etags = etag
    hf.add_repo("acme/cfg", {"config.yaml": b"model: tiny\n" * 50})
    d = daemon(hf_base_url=hf.base_url)
    url = "https://huggingface.co/acme/cfg/resolve/main/config.yaml"
    with d.client() as c:
        job = c.post("/api/download", json={"url": url, "model_type": "other"}).json()
        wait_for(lambda: c.get(f"/api/jobs/{job['id']}").json()["status"] == "completed", 20)
    log_in(page, d)
    row = page.locator(".job-row").first
    expect(row.locator(".job-status")).to_have_text("completed")
    expect(row.locator(".job-verified-by")).to_have_text(shown)
    assert (home / "data/models/other/config.yaml").read_bytes() == b"model: tiny\n" * 50
    assert problems == [], problems
    d.stop()


def test_settings_page_keeps_urls_holding_credentials_it_never_sees_on_save(
    civitai, daemon, page, home
):
    webhook = "https://hook-user:hook-pass-0123@hooks.example/in?token=query-secret-99"
    discord = "https://discord.example/api/webhooks/77/discord-token-secret"
    d = daemon(webhook_url=webhook, notify=[{"type": "discord", "url": discord}])
    log_in(page, d)
    open_tab(page, "settings")
    expect(page.locator("#set-webhook_url-state")).to_have_text("set: https://hooks.example/…")
    expect(page.locator("#set-webhook_url")).to_have_value("")
    expect(page.locator("#set-download_dir")).to_have_attribute("readonly", "readonly")
    expect(page.locator("#set-download_dir")).to_have_value("data/models")
    for secret in ("hook-pass", "query-secret", "discord-token"):
        assert secret not in page.content()
    page.fill("#set-throttle", "7")  # MB/s
    page.click("#notify-add-telegram")  # and removed again: the targets are sent back as shown
    page.locator(".notify-remove").last.click()
    page.click("#settings-save")
    expect(page.locator(".toast").last).to_contain_text("Applied now")
    config = read_config(home)
    assert config["throttle"] == 7_000_000
    assert config["webhook_url"] == webhook
    assert config["notify"] == [{"type": "discord", "url": discord}]
    page.check("#set-webhook_url-clear")
    page.click("#settings-save")
    expect(page.locator("#set-webhook_url-state")).to_have_text("not set")
    assert read_config(home)["webhook_url"] is None
    assert read_config(home)["notify"] == [{"type": "discord", "url": discord}]
    d.stop()
