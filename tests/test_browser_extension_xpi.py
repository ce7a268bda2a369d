"""The browser extension packed as README says (an unsigned .xpi of integrations/browser) and
installed in Firefox ESR as a person installs a file, kept across restarts: ESR takes it once
`xpinstall.signatures.required` is false, with its sites granted. A Firefox of its own: removing
the other module's temporary add-on would give the kept one a new moz-extension:// UUID."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import wait_for
from tests.firefox import BiDiError, Firefox, Tab
from tests.test_browser_extension import EXTENSION
from tests.test_browser_extension_firefox import GECKO_ID, ORIGIN, UUID, has_its_sites


def opened(tab: Tab, url: str) -> bool:
    """The tab shows `url`; False while the add-on is still starting (NS_ERROR_NOT_AVAILABLE)."""
    try:
        tab.goto(url)
    except BiDiError as exc:
        if "NS_ERROR_NOT_AVAILABLE" not in str(exc):
            raise
        return False
    return True


XPI_TEST = "test_firefox_esr_keeps_the_unsigned_xpi_readme_builds_with_its_sites"


def test_firefox_esr_keeps_the_unsigned_xpi_readme_builds_with_its_sites(tmp_path: Path):
    xpi = tmp_path / "civitai-daemon.xpi"
    command = f"python3 -m zipfile -c {xpi} integrations/browser/*"  # as README says
    subprocess.run(["sh", "-c", command], cwd=EXTENSION.parent.parent, check=True)
    # What README tells an ESR user to set in about:config.
    firefox = Firefox(
        tmp_path / "profile", {GECKO_ID: UUID}, **{"xpinstall.signatures.required": False}
    )
    try:
        assert firefox.install(xpi, permanent=True) == GECKO_ID
        options = firefox.tab()
        wait_for(lambda: opened(options, f"{ORIGIN}/options.html"), 20, 0.2, "its options page")
        assert options.text("#origin") == ORIGIN
        kept = options.call("async () => (await browser.management.getSelf()).installType")
        assert kept == "normal", kept  # a temporary add-on is "development"
        assert has_its_sites(options)
        assert (tmp_path / "profile/extensions" / f"{GECKO_ID}.xpi").is_file()
        assert firefox.strays() == []
    finally:
        firefox.close()


def test_without_firefox_its_tests_fail_never_skip_with_the_fix(tmp_path: Path):
    missing = tmp_path / "no-such-firefox"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", f"{__file__}::{XPI_TEST}", "-q", "-p", "no:cacheprovider"],
        cwd=EXTENSION.parent.parent,
        env={**os.environ, "FIREFOX": str(missing)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout and "skipped" not in result.stdout
    assert f"{missing} is missing" in result.stdout
    assert "sudo apt-get install firefox-esr" in result.stdout
