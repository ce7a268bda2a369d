"""The GUI as a person's eye sees it: bars drawn to their percentage, every page free of console
errors and CSP violations in light and dark, a queue of 2,000 jobs, toasts, a phone's width."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import wait_for, wait_job
from tests.test_gui import browser, log_in, open_tab, shot  # noqa: F401 (browser: a fixture)

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
def watched(browser):  # noqa: F811
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
        m = bar_measure(page, done["id"])
        assert m["pct"] == 100
        assert abs(m["bar"] - m["track"]) <= 0.03 * m["track"], m
        assert m["track"] > 100, m  # a real track, not a collapsed one
        # Mid-way: the API's percentage just before and just after bound the one drawn.
        wait_for(lambda: 15 < api_pct(c, slow["id"]) < 70, 30, what="the slow job mid-way")
        expect(page.locator(f"#job-{slow['id']} .job-status")).to_have_text("downloading")
        low = api_pct(c, slow["id"])
        m = bar_measure(page, slow["id"])
        high = api_pct(c, slow["id"])
        assert int(low) - 1 <= m["pct"] <= high + 1, (low, m, high)
        drawn = 100 * m["bar"] / m["track"]
        assert abs(drawn - m["pct"]) <= 3, (drawn, m)
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
                lambda: page.locator(".library-row img").first.evaluate(
                    "i => i.complete && i.naturalWidth > 0"
                ),
                10,
                what="the preview",
            )
        shot(page, f"page-{tab}-{name}")
    assert w.problems == [], w.problems
    d.stop()
