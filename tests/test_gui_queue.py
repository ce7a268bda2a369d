"""The GUI as a person's eye sees it: bars drawn to their percentage, every page free of console
errors and CSP violations in light and dark, a queue of 2,000 jobs, toasts, a phone's width."""

from __future__ import annotations

import os
import time

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import wait_for, wait_job
from tests.test_gui import log_in, open_tab, shot

# Every CSP violation reaches the test, whatever page it happens on (console text aside).
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.reportViolation(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ` +
    `${e.sourceFile || location.href}:${e.lineNumber}`);
});
"""
TABS = ("queue", "add", "library", "status", "settings")


class Watched:
    """A page whose console errors, uncaught errors and CSP violations are collected."""

    def __init__(self, chromium: Browser, width: int = 1280, height: int = 860, scheme="light"):
        self.context = chromium.new_context(
            viewport={"width": width, "height": height}, color_scheme=scheme
        )
        self.problems: list[str] = []
        self.context.expose_function("reportViolation", lambda t: self.problems.append(f"CSP {t}"))
        self.context.add_init_script(CSP_LISTENER)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))

    def _console(self, m) -> None:
        if m.type == "error":
            self.problems.append(f"console: {m.text} at {m.location.get('url')}")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser):
    made: list[Watched] = []

    def make(**kw) -> Watched:
        w = Watched(browser, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def box(locator) -> dict:
    b = locator.bounding_box()
    assert b is not None, f"{locator} is not rendered"
    return b


def overlaps(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def bar_measure(page: Page, job_id: int) -> dict:
    """In one go: the bar's drawn width, its track's, and the percentage the row says."""
    return page.locator(f"#job-{job_id} .progress").evaluate(
        """t => ({track: t.getBoundingClientRect().width,
                  bar: t.querySelector('.progress-bar').getBoundingClientRect().width,
                  pct: Number(t.getAttribute('aria-valuenow'))})"""
    )


def api_pct(c, job_id: int) -> float:
    job = c.get(f"/api/jobs/{job_id}").json()
    return 100 * job["bytes_done"] / job["bytes_total"] if job["bytes_total"] else 0.0


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_bar_is_drawn_to_its_percentage_of_the_track(civitai, daemon, watched, scheme):
    civitai.add_simple(1, 10, os.urandom(300_000), filename="done.safetensors")
    civitai.add_simple(2, 20, os.urandom(8_000_000), filename="slow.safetensors")
    d = daemon(workers=2)
    w = watched(scheme=scheme)
    page = w.page
    with d.client() as c:
        done = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_job(c, done["id"])
        civitai.default_rate = 400_000  # 20 s for the whole file: mid-way for a while
        slow = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"}).json()
        log_in(page, d)
        assert page.evaluate("document.documentElement.dataset.bsTheme") == scheme
        # Measured once the row is laid out (a row redrawn by the feed has no width for a frame).
        m = wait_for(
            lambda: (x := bar_measure(page, done["id"]))["track"] > 0 and x, 10, what="a track"
        )
        assert m["pct"] == 100
        assert abs(m["bar"] - m["track"]) <= 0.03 * m["track"], m
        assert m["track"] > 100, m  # a real track, not a collapsed one
        # Mid-way: the API's percentage just before and just after bound the one drawn.
        wait_for(lambda: 15 < api_pct(c, slow["id"]) < 70, 30, what="the slow job mid-way")
        expect(page.locator(f"#job-{slow['id']} .job-status")).to_have_text("downloading")
        low = api_pct(c, slow["id"])

        def caught_up() -> dict | None:
            # The feed may be a message behind the API, and the bar's width eases (0.6 s) to
            # its percentage: wait for the row to reach what the API said, drawn to its number.
            m = bar_measure(page, slow["id"])
            drawn = 100 * m["bar"] / m["track"]
            return m if m["pct"] >= int(low) - 1 and abs(drawn - m["pct"]) <= 3 else None

        m = wait_for(caught_up, 15, what=f"the bar at {low:.0f}% or more, drawn to its number")
        high = api_pct(c, slow["id"])
        assert m["pct"] <= high + 1, (low, m, high)  # never ahead of the daemon
        drawn = 100 * m["bar"] / m["track"]
        assert 10 < drawn < 80, m  # neither empty nor full
        shot(page, f"progress-bars-{scheme}")
        civitai.default_rate = None
    assert w.problems == [], w.problems
    d.stop()


@pytest.mark.parametrize(
    ("scheme", "width", "height"),
    [("light", 1280, 860), ("dark", 1280, 860), ("light", 390, 844), ("dark", 390, 844)],
)
def test_every_page_is_free_of_console_errors_and_csp_violations(
    civitai, daemon, watched, scheme, width, height
):
    civitai.add_simple(1, 10, os.urandom(200_000), filename="dreamshaper_8.safetensors")
    civitai.add_simple(2, 20, b"x" * 100, filename="locked.safetensors", login_required=True)
    d = daemon()
    with d.client() as c:
        for version in (10, 20):
            job = c.post("/api/download", json={"modelVersionId": version, "model_type": "lora"})
            wait_job(c, job.json()["id"], ("completed", "failed"))
    w = watched(scheme=scheme, width=width, height=height)
    page = w.page
    name = f"{scheme}-{width}"
    page.goto(d.url("/gui"))
    expect(page.locator("#key")).to_be_visible()
    assert page.evaluate("document.documentElement.dataset.bsTheme") == scheme
    login = box(page.locator("#login-form"))
    assert login["width"] <= min(width, 28 * 16) + 1, login  # the login box keeps its width
    shot(page, f"page-login-{name}")
    page.fill("#key", "wrong")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("not right")
    shot(page, f"page-login-error-{name}")
    log_in(page, d)
    expect(page.locator(".job-row")).to_have_count(2)
    ready = {
        "queue": ".job-row .job-status",
        "add": "#lookup-input",
        "library": ".library-row",
        "status": "#m-failures",
        "settings": "#set-throttle",
    }
    for tab in TABS:
        open_tab(page, tab)
        expect(page.locator(ready[tab]).first).to_be_visible()
        if tab == "library":
            wait_for(
                lambda: page.locator(".library-row img:visible").first.evaluate(
                    "i => i.complete && i.naturalWidth > 0"
                ),
                10,
                what="the preview",
            )
        shot(page, f"page-{tab}-{name}")
    assert w.problems == [], w.problems
    d.stop()


def test_a_queue_of_2000_jobs_shows_running_first_in_pages_and_narrows_to_a_search(
    civitai, daemon, watched
):
    civitai.add_simple(1, 10, os.urandom(50_000), filename="finished_first.safetensors")
    civitai.add_simple(2, 20, os.urandom(20_000_000), filename="running_now.safetensors")
    for i in range(2000):
        civitai.add_simple(100 + i, 10_000 + i, i.to_bytes(4, "big") * 8, f"file_{i:04d}.bin")
    d = daemon(workers=1)
    with d.client() as c:
        first = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_job(c, first["id"])
        civitai.default_rate = 100_000  # the running job holds the one worker
        running = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"})
        wait_job(c, running.json()["id"], ("downloading",))
        batch = [{"modelVersionId": 10_000 + i, "model_type": "lora"} for i in range(2000)]
        r = c.post("/api/batch", json=batch, timeout=60)
        assert r.status_code == 202 and len(r.json()["jobs"]) == 2000, r.text[:300]
        # The same finished file asked again is that job again, not a second row.
        again = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"})
        assert again.status_code == 200 and again.json()["id"] == first["id"]
        assert again.json()["duplicate"] is True
    w = watched()
    page = w.page
    started = time.monotonic()
    log_in(page, d)
    groups = page.locator(".queue-group:not(.d-none)")
    expect(groups.first).to_have_attribute("data-group", "running")
    expect(groups.first.locator(".job-row .job-status")).to_have_text("downloading")
    shown_after = time.monotonic() - started
    assert shown_after < 10, f"the running group took {shown_after:.1f} s"
    expect(page.locator("#group-queued .group-count")).to_have_text("2,000")
    expect(page.locator("#group-finished .group-count")).to_have_text("1")
    expect(page.locator("#group-queued .job-row")).to_have_count(50)
    assert page.locator(".job-row").count() <= 60  # 1 running, 50 queued, 1 finished
    expect(page.locator("#group-finished .job-row", has_text="finished_first")).to_have_count(1)
    shot(page, "queue-2000-jobs")
    page.locator("#group-queued .show-more").click()
    expect(page.locator("#group-queued .job-row")).to_have_count(100)
    expect(page.locator("#group-queued .show-more")).to_contain_text("1,900 not shown")
    # Queued in the order they will run: the batch's first entry first.
    expect(page.locator("#group-queued .job-row").first).to_contain_text("file_0000.bin")
    # A search by a version id finds a batch job Civitai was not asked about yet; by a name,
    # a resolved one.
    page.fill("#queue-search", "11234")
    expect(page.locator(".job-row")).to_have_count(1)
    expect(page.locator("#group-queued .group-count")).to_have_text("1")
    expect(page.locator("#group-running")).to_be_hidden()
    shot(page, "queue-2000-jobs-search")
    page.fill("#queue-search", "RUNNING_now")
    expect(page.locator(".job-row")).to_have_count(1)
    expect(page.locator("#group-running .job-row")).to_contain_text("running_now.safetensors")
    page.fill("#queue-search", "no such thing")
    expect(page.locator("#queue-empty")).to_have_text("No job matches “no such thing”.")
    page.fill("#queue-search", "")
    expect(page.locator("#group-queued .group-count")).to_have_text("2,000")
    # A group folds away, and stays folded after a reload.
    page.locator("#group-queued .group-toggle").click()
    expect(page.locator("#group-queued .job-row")).to_have_count(0)
    page.reload()
    expect(page.locator("#live")).to_be_visible()
    expect(page.locator("#group-queued .group-count")).to_have_text("2,000")
    expect(page.locator("#group-queued .group-toggle")).to_have_attribute("aria-expanded", "false")
    expect(page.locator("#group-queued .job-row")).to_have_count(0)
    expect(page.locator("#group-running .job-row")).to_have_count(1)
    civitai.default_rate = None
    assert w.problems == [], w.problems
    d.stop()


def test_ten_failures_at_once_make_one_counted_toast_that_covers_no_button(
    civitai, daemon, watched
):
    for i in range(10):
        civitai.add_simple(i + 1, 100 + i, b"x" * 100, f"locked_{i}.bin", login_required=True)
    d = daemon(workers=2)
    w = watched(height=700)
    page = w.page
    log_in(page, d)
    with d.client() as c:
        batch = [{"modelVersionId": 100 + i, "model_type": "lora"} for i in range(10)]
        assert c.post("/api/batch", json=batch).status_code == 202
        for job in c.get("/api/jobs?limit=10").json()["jobs"]:
            wait_job(c, job["id"], ("failed",))
    expect(page.locator("#group-failed .job-row")).to_have_count(10)
    expect(page.locator("#group-failed .group-count")).to_have_text("10")
    for gone in ("running", "queued", "finished"):
        expect(page.locator(f"#group-{gone}")).to_be_hidden()
    failed = page.locator(".toast", has_text="failed")
    expect(failed).to_have_count(1)
    expect(failed.locator(".toast-count")).to_have_text("×10")
    expect(failed).to_contain_text("needs a Civitai login")
    seen = page.evaluate(
        """() => {
          const rect = (n) => { const r = n.getBoundingClientRect();
            return {x: r.x, y: r.y, width: r.width, height: r.height}; };
          const shown = (n) => n.getClientRects().length > 0;
          return {
            toasts: [...document.querySelectorAll(".toast")].filter(shown).map(rect),
            buttons: [...document.querySelectorAll(".job-row button")].filter(shown).map(rect),
            main: rect(document.getElementById("app")),
          };
        }"""
    )
    assert 1 <= len(seen["toasts"]) <= 3, seen
    assert len(seen["buttons"]) == 10, seen  # a Retry button a row
    # The page scrolls above the dock: the buttons on screen are those in the page's box.
    on_screen = [b for b in seen["buttons"] if overlaps(b, seen["main"])]
    assert len(on_screen) >= 3, seen
    for t in seen["toasts"]:
        assert not overlaps(t, seen["main"]), (t, seen["main"])  # below the page, not over it
        for b in on_screen:
            assert not overlaps(t, b), (t, b)
    assert seen["main"]["height"] >= 0.6 * 700, seen  # the dock leaves the page most of the room
    shot(page, "toasts-ten-failures")
    # Many distinct notes: three in view, the rest counted behind them.
    for n in range(5):
        page.evaluate(f"toast('note {n}', 'info')")
    expect(page.locator(".toast:visible")).to_have_count(3)
    expect(page.locator("#toasts-more-text")).to_have_text("3 older messages")
    # Notes go by themselves; the error stays until closed.
    expect(page.locator(".toast", has_text="note")).to_have_count(0, timeout=15_000)
    expect(failed).to_be_visible()
    failed.locator(".btn-close").click()
    expect(page.locator(".toast")).to_have_count(0)
    # Clear failed: the rows go, with a toast saying the files stay.
    page.click("#clear-failed")
    expect(page.locator(".toast", has_text="Cleared 10 jobs")).to_contain_text("the files stay")
    expect(page.locator(".job-row")).to_have_count(0)
    with d.client() as c:
        assert c.get("/api/jobs").json()["total"] == 0
    assert w.problems == [], w.problems
    d.stop()


def test_on_a_phone_the_status_and_cancel_are_on_screen_without_scrolling_sideways(
    civitai, daemon, watched
):
    civitai.add_simple(
        1, 10, os.urandom(8_000_000), filename="a_rather_long_checkpoint_name_v2_fp16.safetensors"
    )
    civitai.default_rate = 200_000
    d = daemon()
    w = watched(width=390, height=844)
    page = w.page
    log_in(page, d)
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
    row = page.locator(f"#job-{job['id']}")
    expect(row.locator(".job-status")).to_have_text("downloading")
    for part in (row.locator(".job-status"), row.locator(".job-cancel"), row.locator(".progress")):
        b = box(part)
        assert b["x"] >= 0 and b["x"] + b["width"] <= 390, (part, b)
        assert b["y"] >= 0 and b["y"] + b["height"] <= 844, (part, b)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
    assert page.evaluate("document.getElementById('app').scrollWidth") <= 390
    shot(page, "queue-phone-390")
    row.locator(".job-cancel").click()
    confirm = page.locator("#cancel-confirm")
    expect(confirm).to_be_visible()  # it asks first, on a phone too
    b = box(confirm)
    assert b["x"] >= 0 and b["x"] + b["width"] <= 390, b
    confirm.click()
    expect(row.locator(".job-status")).to_have_text("cancelled")
    civitai.default_rate = None
    assert w.problems == [], w.problems
    d.stop()
