"""Issue 27, the GUI's third pass, in Chromium: each test watches for console errors, CSP
violations and any request that would leave the machine (tests/gui_watch.py)."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests.conftest import wait_for, wait_job
from tests.gui_watch import Guarded, order, screens
from tests.test_gui import browser, log_in  # noqa: F401 (browser: a fixture)


@pytest.fixture
def guarded(browser):  # noqa: F811
    made: list[Guarded] = []

    def make(**kw) -> Guarded:
        g = Guarded(browser, **kw)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def queue_of_four(civitai, daemon):
    """One worker held by a slow file, and four small ones queued behind it (a, b, c, d)."""
    civitai.add_simple(1, 10, os.urandom(6_000_000), filename="running.safetensors")
    files = {
        name: civitai.add_simple(20 + i, 200 + i, os.urandom(20_000), filename=f"{name}.bin").id
        for i, name in enumerate("abcd")
    }
    civitai.default_rate = 150_000
    d = daemon(workers=1)
    with d.client() as c:
        running = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        wait_job(c, running.json()["id"], ("downloading",))
        ids = [
            c.post("/api/download", json={"modelVersionId": 200 + i, "model_type": "lora"}).json()[
                "id"
            ]
            for i in range(4)
        ]
    return d, dict(zip("abcd", ids, strict=True), running=running.json()["id"]), files


def test_queue_moves_show_at_once_top_is_first_rows_drag_and_several_are_selected(
    civitai, daemon, guarded
):
    d, j, files = queue_of_four(civitai, daemon)
    g = guarded()
    page = g.page
    log_in(page, d)
    expect(page.locator("#group-queued .job-row")).to_have_count(4)
    wait_for(lambda: order(page) == [j[n] for n in "abcd"], 5, what="the order they were queued in")

    def moved(name: str, step: str, expected: str) -> None:
        page.locator(f"#job-{j[name]} .job-{step}").click()
        want = [j[n] for n in expected]
        wait_for(lambda: order(page) == want, 5, what=f"{step} {name}: {expected}")

    moved("d", "top", "dabc")  # the row moves at once, not at the next event
    moved("b", "up", "dbac")  # an Up elsewhere does not pass the job sent to the top
    moved("d", "down", "bdac")
    moved("b", "bottom", "dacb")
    moved("c", "up", "dcab")
    screens(page, "queue-moves-1280-light")
    # A row dragged onto another goes just before it.
    page.locator(f"#job-{j['b']}").drag_to(
        page.locator(f"#job-{j['d']}"), target_position={"x": 40, "y": 4}
    )
    wait_for(lambda: order(page) == [j[n] for n in "bdca"], 5, what="b dragged before d")
    # Several rows at once: select two, pause them, resume them, cancel them (asked first).
    for name in "ca":
        page.locator(f"#job-{j[name]} .job-select").check()
    expect(page.locator("#selection-count")).to_have_text("2 selected")
    screens(page, "queue-selection-1280-light")
    page.click("#selection-pause")
    expect(page.locator("#group-paused .job-row")).to_have_count(2)
    page.click("#selection-resume")
    expect(page.locator("#group-paused .job-row")).to_have_count(0)
    wait_for(lambda: order(page) == [j[n] for n in "bdca"], 5, what="the order kept after resume")
    page.click("#selection-cancel")
    expect(page.locator("#cancel-modal-title")).to_have_text("Cancel 2 downloads?")
    page.click("#cancel-confirm")
    expect(page.locator(f"#job-{j['a']} .job-status")).to_have_text("cancelled")
    expect(page.locator(f"#job-{j['c']} .job-status")).to_have_text("cancelled")
    expect(page.locator("#queue-selection")).to_be_hidden()
    # The daemon fetches the rest in the order shown.
    civitai.default_rate = None
    with d.client() as c:
        c.post(f"/api/jobs/{j['running']}/cancel")  # the worker it held takes the next
        for name in "bd":
            wait_job(c, j[name])
    fetched = [r.path.split("/")[2] for r in civitai.requests_to("cdn", "/file/")]
    assert list(dict.fromkeys(fetched))[1:] == [str(files["b"]), str(files["d"])], fetched
    assert g.problems == [], g.problems
    d.stop()
