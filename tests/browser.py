"""Debian's Chromium as the GUI tests drive it: where it is and the flags it starts with."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Browser, Playwright

from run_tests import CHROMIUM_FIX, chromium_path

CHROMIUM = chromium_path() or os.environ.get("CHROMIUM") or "chromium"
# Without the background-networking flags Chromium reaches for Google's hosts at every start.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch(playwright: Playwright, *extra_args: str) -> Browser:
    """Chromium, headless. Never a skip: a GUI left untested shows as a failure, with the fix."""
    assert Path(CHROMIUM).exists(), (
        f"The GUI tests need Chromium; {CHROMIUM} is missing: {CHROMIUM_FIX}."
    )
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*ARGS, *extra_args], headless=True
    )
