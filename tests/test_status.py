"""What the status page and /api/status report: the last update check across restarts, the
speeds (current and average, each defined), and a job waiting between attempts."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.test_gui import browser, log_in, open_tab, page  # noqa: F401 (fixtures)
from tests.test_updates import write_manifest


def test_last_update_check_is_still_reported_after_a_restart(home, civitai, daemon, page):  # noqa: F811
    civitai.add_simple(1, 101, b"tracked" * 100, filename="a.safetensors")
    write_manifest(home, [{"modelId": 1, "model_type": "lora"}])
    d = daemon(update_check={"enabled": False})
    with d.client() as c:
        checked = c.post("/api/updates/check").json()
        assert checked["checked"] == 1 and checked["finished_at"]
    assert d.stop() == 0
    again = daemon(update_check={"enabled": False})
    with again.client() as c:
        last = c.get("/api/metrics").json()["last_update_check"]
        listed = c.get("/api/updates").json()["last_check"]
    assert last is not None, "the check before the restart is forgotten"
    assert last["finished_at"] == checked["finished_at"] and last["checked"] == 1
    assert listed["finished_at"] == checked["finished_at"]
    assert listed["started_at"] == checked["started_at"] and listed["requests"] == 1
    log_in(page, again)
    open_tab(page, "status")
    shown = page.locator("#m-check")
    expect(shown).not_to_have_text("never")
    expect(shown).to_contain_text("0 update(s)")
    again.stop()
