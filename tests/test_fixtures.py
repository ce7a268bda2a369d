"""The test fixtures' own promises: a hung daemon fails its test in time, saying why."""

from __future__ import annotations

import sys
import time

import pytest

from tests.conftest import DaemonProcess

HANG = (
    "import sys, time; print('stuck before printing', file=sys.stderr, flush=True); time.sleep(30)"
)


class _SilentDaemon(DaemonProcess):
    """A "daemon" that writes to stderr, never prints its GUI line, and sleeps."""

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-c", HANG]


def test_a_daemon_that_prints_nothing_fails_within_the_timeout_showing_its_stderr(tmp_path):
    d = _SilentDaemon(tmp_path / "home")
    started = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        d.start(timeout=2)
    assert time.monotonic() - started < 10
    assert "no first line within 2 s" in str(failure.value)
    assert "stuck before printing" in str(failure.value)
    assert d.proc is not None and d.proc.poll() is not None  # not left running
