"""`.ci/run` as CI runs it: the README's test command, with CI set so no drill may skip."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ci_run_calls_the_readmes_test_command_with_ci_set_even_where_ci_is_not(tmp_path):
    # A stand-in python3 first on the PATH records what .ci/run hands it.
    seen = tmp_path / "seen"
    stub = tmp_path / "bin" / "python3"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "CI=$CI cwd=$(pwd) args=$*" > {seen}\n')
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{stub.parent}:{env['PATH']}"
    done = subprocess.run(["bash", str(REPO / ".ci" / "run")], env=env, timeout=30)
    assert done.returncode == 0
    assert seen.read_text().strip() == f"CI=true cwd={REPO} args=run_tests.py"
    assert "python3 run_tests.py" in (REPO / "README.md").read_text()
