"""The Civitai model types the daemon accepts are Civitai's own (issue 23): checked against
Civitai's `ModelType` enum kept in tests/fixtures (its source in tests/fixtures/SOURCES.md), not
against the daemon's list itself."""

from __future__ import annotations

import json
from pathlib import Path

from library.layout import CIVITAI_TYPES, Layout
from sources import browse, bulk
from sources.civitai import LIST_TYPES
from tests import fake_civitai

FIXTURE = Path(__file__).parent / "fixtures" / "civitai_model_types_2026-08.json"
CIVITAI = json.loads(FIXTURE.read_text(encoding="utf-8"))["types"]


def test_the_types_the_daemon_searches_and_bulk_queues_are_civitais_own():
    assert len(set(LIST_TYPES)) == len(LIST_TYPES)
    assert sorted(LIST_TYPES) == sorted(CIVITAI), (
        f"missing: {sorted(set(CIVITAI) - set(LIST_TYPES))}; "
        f"not Civitai's: {sorted(set(LIST_TYPES) - set(CIVITAI))}"
    )
    assert sorted(browse.TYPES) == sorted(bulk.CIVITAI_TYPES) == sorted(CIVITAI)


def test_the_fake_civitai_takes_the_same_types_as_civitai():
    assert sorted(fake_civitai.CIVITAI_TYPES) == sorted(CIVITAI)


def test_each_civitai_type_has_a_model_type_and_a_folder_in_every_layout():
    for name in CIVITAI:
        kind = CIVITAI_TYPES.get(name.lower())
        assert kind is not None, f"Civitai's {name!r} maps to no model type"
        for layout in ("default", "comfyui", "a1111", "forge"):
            assert Layout(layout).folder(kind), (name, layout)
