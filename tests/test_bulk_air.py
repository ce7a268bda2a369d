"""Civitai in bulk and by AIR (issue 17): a job named by its AIR, a creator's models previewed
over Civitai's cursor pages and queued once, against the fake Civitai over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from errors import InvalidRequest
from sources.air import Air, parse_air
from tests.conftest import assert_file_is, wait_job

REPO = Path(__file__).resolve().parent.parent


# AIR ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("urn:air:sdxl:lora:civitai:328553@368189", Air("sdxl", "lora", 328553, 368189)),
        ("urn:air:sd1:model:civitai:2421@43533", Air("sd1", "model", 2421, 43533)),
        ("urn:air:flux1:checkpoint:civitai:618692", Air("flux1", "checkpoint", 618692)),
        ("URN:AIR:SDXL:LORA:CIVITAI:1@2", Air("sdxl", "lora", 1, 2)),
        (" urn:air:sdxl:lycoris:civitai:1@2+3 ", Air("sdxl", "lycoris", 1, 2, 3)),
        (
            "urn:air:sd1:embedding:civitai:7@8.safetensor",
            Air("sd1", "embedding", 7, 8, None, "safetensor"),
        ),
    ],
)
def test_an_air_names_a_civitai_model_version_and_file_as_civitai_writes_it(text, expected):
    assert parse_air(text) == expected


@pytest.mark.parametrize(
    ("air", "model_type"),
    [
        ("urn:air:sdxl:lora:civitai:1@2", "lora"),
        ("urn:air:sdxl:lycoris:civitai:1@2", "locon"),
        ("urn:air:sd1:embedding:civitai:1@2", "embedding"),
        ("urn:air:sd1:model:civitai:1@2", "checkpoint"),
        ("urn:air:sdxl:hypernet:civitai:1@2", "hypernetwork"),
        ("urn:air:flux1:unet:civitai:1@2", "diffusion_models"),
        ("urn:air:sdxl:vae:civitai:1@2", "vae"),
        ("urn:air:sdxl:unknown:civitai:1@2", None),
    ],
)
def test_the_air_type_names_the_folder(air, model_type):
    assert parse_air(air).model_type == model_type


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("urn:air:sdxl:lora:huggingface:stabilityai/sdxl-vae", "only Civitai AIRs"),
        ("urn:air:sdxl:lora", "is not a valid AIR"),
        ("urn:air:sdxl:lora:civitai:1@", "is not a valid AIR"),
        ("urn:air:sdxl:lora:civitai:abc@1", "the model id must be a Civitai id"),
        ("urn:air:sdxl:lora:civitai:1@v2", "the version id must be a Civitai id"),
        ("https://civitai.com/models/1", "must start with 'urn:air:'"),
    ],
)
def test_a_malformed_or_foreign_air_is_refused_saying_why(text, why):
    with pytest.raises(InvalidRequest, match=why.replace("(", r"\(")):
        parse_air(text)


def test_a_model_downloaded_by_its_air_lands_in_the_folder_its_type_names(civitai, daemon, home):
    lora = civitai.add_simple(328553, 368189, b"lora bytes" * 3000, filename="style.safetensors")
    older = civitai.file(b"old" * 1000, name="emb_v1.safetensors")
    newer = civitai.file(b"new" * 1000, name="emb_v2.safetensors")
    civitai.add_model(
        7, "An embedding", "TextualInversion",
        [civitai.version(9, [newer], published_at="2025-06-01T00:00:00Z"),
         civitai.version(8, [older], published_at="2025-05-01T00:00:00Z")],
    )  # fmt: skip
    d = daemon()
    with d.client() as c:
        # In `url`, as a person pastes it; no model_type: the AIR's type (lora) names the folder.
        r = c.post("/api/download", json={"url": "urn:air:sdxl:lora:civitai:328553@368189"})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["id"])
        assert (job["modelId"], job["modelVersionId"], job["model_type"]) == (
            328553,
            368189,
            "lora",
        )
        assert_file_is(home / "data/models/lora/style.safetensors", lora.sha256)
        # In `air`, without a version: the newest published one.
        r = c.post("/api/download", json={"air": "urn:air:sd1:embedding:civitai:7"})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["id"])
        assert job["modelVersionId"] == 9
        assert_file_is(home / "data/models/embedding/emb_v2.safetensors", newer.sha256)
        # The same AIR again is the same file: the completed job, not a second download.
        again = c.post("/api/download", json={"air": "urn:air:sdxl:lora:civitai:328553@368189"})
        assert again.status_code == 200 and again.json()["duplicate"] is True
        assert again.json()["path"] == str(home / "data/models/lora/style.safetensors")
        # A foreign source, a malformed one, and ids that disagree: 422 with the reason.
        for body, why in [
            ({"url": "urn:air:sdxl:lora:huggingface:org/repo"}, "only Civitai AIRs"),
            ({"air": "urn:air:sdxl:lora:civitai:x@1"}, "the model id must be a Civitai id"),
            ({"air": "urn:air:sdxl:lora"}, "is not a valid AIR"),
            ({"air": "urn:air:sdxl:lora:civitai:1@2", "modelVersionId": 3}, "disagrees"),
        ]:
            r = c.post("/api/download", json=body)
            assert r.status_code == 422, r.text
            assert why in r.json()["detail"], r.json()
        # The GUI's look-up takes an AIR too.
        looked = c.get("/api/lookup", params={"url": "urn:air:sd1:embedding:civitai:7@8"}).json()
        assert (looked["modelId"], looked["selectedVersionId"]) == (7, 8)
    # The CLI's `add` takes it as its URL.
    cli = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "--home", str(home), "add",
         "urn:air:sdxl:lora:civitai:328553@368189", "--json"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["duplicate"] is True
    d.stop()
