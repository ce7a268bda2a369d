"""The browser tests' watch for issue 27 (the GUI's third pass): a page whose console errors,
page errors and CSP violations are collected, where no request may leave the machine (any
non-loopback request is refused and counted as a problem), and screenshots for a person's eye
in tests/artifacts/gui3 (git-ignored; GUI3_SCREENS names another folder)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page

from tests.test_gui_queue import Watched

SCREENS = Path(os.environ.get("GUI3_SCREENS", Path(__file__).parent / "artifacts" / "gui3"))
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SIZES = (("light", 1280, 800), ("dark", 1280, 800), ("light", 390, 844), ("dark", 390, 844))


class Guarded(Watched):
    """A Watched page that never reaches past loopback."""

    def __init__(self, chromium: Browser, **kw) -> None:
        super().__init__(chromium, **kw)
        self.context.route("**/*", self._route)

    def _route(self, route) -> None:
        url = route.request.url
        host = urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
            return
        self.problems.append(f"a request left the machine: {url}")
        route.abort()


def screens(page: Page, name: str) -> None:
    """The page as it is now, whole, into SCREENS/<name>.png."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)


def order(page: Page, group: str = "queued") -> list[int]:
    """The job ids a group shows, top to bottom."""
    return page.locator(f"#group-{group} .job-row").evaluate_all(
        "rows => rows.map(r => Number(r.id.slice(4)))"
    )
