"""One size rule for people: the CLI's Python and the GUI's JavaScript over the same table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.sizes import human_bytes
from tests.conftest import wait_job
from tests.test_cli import cli
from tests.test_gui import log_in

CASES = json.loads((Path(__file__).parent / "fixtures" / "sizes.json").read_text())["cases"]


@pytest.mark.parametrize(("n", "text"), CASES, ids=[str(c[0]) for c in CASES])
def test_python_size_rule_prints_each_size_of_the_shared_table(n, text):
    assert human_bytes(n) == text


def test_gui_size_rule_prints_each_size_of_the_shared_table_in_the_browser(daemon, page):
    d = daemon()
    log_in(page, d)
    shown = page.evaluate("(cases) => cases.map(([n]) => bytes(n))", CASES)
    assert shown == [text for _, text in CASES]
    d.stop()


def test_cli_prints_sizes_with_the_shared_rule(home, civitai, daemon):
    civitai.add_simple(1, 10, b"z" * 1_250, filename="z.safetensors")
    d = daemon()
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
    with d.client() as c:
        wait_job(c, job["id"])
    listed = cli(home, "completed").stdout
    assert " 1.3 KB " in listed, listed
    d.stop()
