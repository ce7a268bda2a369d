"""Civitai in bulk and by AIR (issue 17): a job named by its AIR, a creator's models previewed
over Civitai's cursor pages and queued once, against the fake Civitai over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from errors import InvalidRequest
from sources.air import Air, parse_air
from tests.conftest import assert_file_is, wait_for, wait_job
from tests.fake_civitai import FakeCivitai
from tests.test_downloads import sha
from tests.test_gui import log_in, open_tab, shot
from tests.test_gui_add import watch

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
    civitai.add_simple(500, 501, b"five" * 100, filename="five.safetensors")
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
        # A version names its model: an AIR naming another model for it gets Civitai's.
        other = c.post("/api/download", json={"air": "urn:air:sdxl:lora:civitai:999@501"})
        assert other.status_code == 202, other.text
        assert wait_job(c, other.json()["id"])["modelId"] == 500
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


# Bulk ---------------------------------------------------------------------------------------


def creator_catalogue(civitai: FakeCivitai) -> dict[int, bytes]:
    """alice: three SFW models (two pages at two a page), one NSFW, one with training data
    only; bob: one."""
    contents = {}
    for model_id, kind, base in [(11, "LORA", "SDXL 1.0"), (12, "Checkpoint", "SD 1.5"),
                                 (13, "LORA", "SD 1.5"), (14, "LORA", "SDXL 1.0")]:  # fmt: skip
        contents[model_id] = f"model {model_id} ".encode() * 2000
        new = civitai.file(contents[model_id], name=f"m{model_id}.safetensors")
        old = civitai.file(b"old", name=f"m{model_id}_old.safetensors")
        civitai.add_model(
            model_id, f"Alice {model_id}", kind,
            # listed older first: the newest is chosen by publishedAt, not by order
            [civitai.version(model_id * 10, [old], base_model=base,
                             published_at="2025-01-01T00:00:00Z"),
             civitai.version(model_id * 10 + 1, [new], base_model=base,
                             published_at="2025-03-01T00:00:00Z")],
            creator="alice", nsfw=model_id == 14,
        )  # fmt: skip
    zip_only = civitai.file(b"zip", name="data.zip", type="Training Data")
    civitai.add_model(15, "Alice 15", "LORA", [civitai.version(150, [zip_only])], creator="alice")
    civitai.add_simple(21, 210, b"bob" * 100, creator="bob")
    civitai.page_limit = 2
    return contents


def list_requests(civitai: FakeCivitai) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(r.path).query) for r in civitai.requests_to("api", "/api/v1/models?")]


def test_a_creators_models_are_previewed_over_civitais_pages_with_their_newest_files(
    civitai, daemon
):
    creator_catalogue(civitai)
    civitai.add_recorded(json.loads((FIXTURES / "models_list_page_based_2025-10.json").read_text()))
    d = daemon()
    with d.client() as c:
        r = c.post("/api/bulk/preview", json={"username": "alice"})
        assert r.status_code == 200, r.text
        preview = r.json()
        asked = list_requests(civitai)
        # Two pages of two: the cursor was followed, the filters kept on each page.
        assert len(asked) == preview["pages"] == 2, asked
        assert "cursor" not in asked[0] and asked[1]["cursor"] == ["2|4|fake"]
        assert all(q["username"] == ["alice"] and q["nsfw"] == ["false"] for q in asked)
        items = {i["modelId"]: i for i in preview["items"]}
        assert sorted(items) == [11, 12, 13, 15]  # no NSFW model, none of bob's
        assert items[11]["modelVersionId"] == 111 and items[11]["filename"] == "m11.safetensors"
        assert items[11]["size"] == len(b"model 11 ") * 2000
        assert items[11]["model_type"] == "lora" and items[12]["model_type"] == "checkpoint"
        assert items[15]["state"] == "unavailable"
        assert "training data" in items[15]["problem"]
        assert {items[i]["state"] for i in (11, 12, 13)} == {"new"}
        sizes = sum(items[i]["size"] for i in (11, 12, 13))
        assert preview["totals"] == {
            "models": 3, "bytes": sizes, "new": 3, "new_bytes": sizes,
            "queued": 0, "downloaded": 0, "unavailable": 1,
        }  # fmt: skip
        assert preview["limit"]["hit"] is None

        # NSFW only when asked, and show_nsfw on; types and base models passed on to Civitai
        # as it takes them.
        assert c.patch("/api/settings", json={"show_nsfw": True}).status_code == 200
        civitai.requests.clear()
        body = {"username": "alice", "types": ["lora"], "baseModels": ["SDXL 1.0"], "nsfw": True}
        preview = c.post("/api/bulk/preview", json=body).json()
        assert [i["modelId"] for i in preview["items"]] == [11, 14, 15]  # 15: SDXL, no file
        assert preview["items"][1]["nsfw"] is True
        asked = list_requests(civitai)
        assert len(asked) == 2  # three models, two a page
        for q in asked:
            assert (q["types"], q["baseModels"], q["nsfw"]) == (["LORA"], ["SDXL 1.0"], ["true"])

        # A real recorded answer: its creator's model with the size Civitai gave.
        [real] = c.post("/api/bulk/preview", json={"username": "LeonDoesntDraw"}).json()["items"]
        assert (real["modelId"], real["filename"], real["baseModel"]) == (
            11821,
            "VSK.safetensors",
            "SD 1.5",
        )
        assert real["size"] == round(73888.6953125 * 1024)

        # Refusals, each in the one error shape.
        r = c.post("/api/bulk/preview", json={"username": "nobody-here"})
        assert r.status_code == 404
        assert r.json() == {
            "detail": "Civitai has no creator named 'nobody-here': check the name as it appears "
            "in their profile's address, civitai.com/user/<name>"
        }
        r = c.post("/api/bulk/preview", json={"username": "alice", "types": ["Lollipop"]})
        assert r.status_code == 422 and "'Lollipop' is not a Civitai type" in r.json()["detail"]
        civitai.fault("api", status=503)
        r = c.post("/api/bulk/preview", json={"username": "alice"})
        assert r.status_code == 503 and set(r.json()) == {"detail"}, r.text
        assert "503" in r.json()["detail"]
    d.stop()


def test_a_preview_stops_at_its_page_bound_and_says_so(civitai, daemon):
    for i in range(12):
        civitai.add_simple(100 + i, 1000 + i, b"x" * 10, creator="prolific")
    civitai.page_limit = 1
    d = daemon()
    with d.client() as c:
        preview = c.post("/api/bulk/preview", json={"username": "prolific"}).json()
    assert preview["pages"] == 10 and len(preview["items"]) == 10
    assert preview["limit"]["hit"] == "pages"
    assert "stopped after 10 pages" in preview["limit"]["detail"]
    assert len(list_requests(civitai)) == 10
    d.stop()


def test_the_confirmed_models_are_queued_once_and_tracked(civitai, daemon, home):
    contents = creator_catalogue(civitai)
    d = daemon(viewer_token="viewer-key-0123456789abcdef")
    with d.client() as c:
        items = c.post("/api/bulk/preview", json={"username": "alice"}).json()["items"]
        chosen = [i for i in items if i["state"] == "new" and i["modelId"] != 13]
        r = c.post("/api/bulk", json={"items": chosen, "track": True})
        assert r.status_code == 202, r.text
        jobs = r.json()["jobs"]
        assert r.json()["errors"] == []
        for job in jobs:
            wait_job(c, job["id"])
        assert_file_is(home / "data/models/lora/m11.safetensors", sha(contents[11]))
        assert_file_is(home / "data/models/checkpoint/m12.safetensors", sha(contents[12]))
        assert not (home / "data/models/lora/m13.safetensors").exists()
        wait_for(lambda: tracked(home) == {11, 12}, 10, what="both tracked in manifest.json")
        # Asked again: the same jobs, completed and in place; nothing downloaded twice.
        sent = civitai.requests_to("cdn", "/file/")
        again = c.post("/api/bulk", json={"items": chosen, "track": True})
        assert again.status_code == 202
        assert [j["id"] for j in again.json()["jobs"]] == [j["id"] for j in jobs]
        assert all(j["duplicate"] for j in again.json()["jobs"])
        assert civitai.requests_to("cdn", "/file/") == sent
        # Model 13 queued (and paused, so it stays so) by hand: the preview shows its job.
        held = c.post("/api/download", json={"modelVersionId": 131, "model_type": "lora"}).json()
        assert c.post(f"/api/jobs/{held['id']}/pause").status_code == 200
        items = {
            i["modelId"]: i
            for i in c.post("/api/bulk/preview", json={"username": "alice"}).json()["items"]
        }
        states = {model_id: i["state"] for model_id, i in items.items()}
        assert states == {11: "downloaded", 12: "downloaded", 13: "queued", 15: "unavailable"}
        assert (items[13]["job_id"], items[13]["job_status"]) == (held["id"], "paused")
        assert items[11]["path"] == str(home / "data/models/lora/m11.safetensors")
        # Bad items are reported by index; nothing to queue is a 422; a viewer may not.
        r = c.post("/api/bulk", json={"items": [{"modelVersionId": 999_999}]})
        assert r.status_code == 422 and r.json()["errors"][0]["index"] == 0
        assert "999999" in r.json()["errors"][0]["detail"]
        viewer = {"Authorization": "Bearer viewer-key-0123456789abcdef"}
        r = c.post("/api/bulk/preview", json={"username": "alice"}, headers=viewer)
        assert r.status_code == 403
    d.stop()


def tracked(home: Path) -> set[int]:
    path = home / "manifest.json"
    return {e["modelId"] for e in json.loads(path.read_text())} if path.exists() else set()


def bulk_cli(home: Path, *args: str, answer: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "--home", str(home), "bulk", *args],
        input=answer, capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip


def test_the_cli_previews_a_creators_models_and_queues_them_only_when_told(civitai, daemon, home):
    contents = creator_catalogue(civitai)
    d = daemon()
    said_no = bulk_cli(home, "alice", "--type", "LORA", answer="n\n")
    assert said_no.returncode == 0, said_no.stderr
    assert "Alice 11" in said_no.stdout and "Alice 13" in said_no.stdout
    assert "Alice 12" not in said_no.stdout  # a checkpoint
    assert "Queue 2 model(s), 36.0 KB? [y/N]" in said_no.stdout
    assert "Nothing queued" in said_no.stdout
    with d.client() as c:
        assert c.get("/api/jobs").json()["total"] == 0
        said_yes = bulk_cli(home, "alice", "--type", "LORA", "--track", answer="y\n")
        assert said_yes.returncode == 0, said_yes.stderr
        assert "Queued 2 model(s) (tracked)." in said_yes.stdout
        wait_for(lambda: c.get("/api/jobs?status=completed").json()["total"] == 2, 30)
        for i in (11, 13):
            assert_file_is(home / f"data/models/lora/m{i}.safetensors", sha(contents[i]))
        wait_for(lambda: tracked(home) == {11, 13}, 10, what="both tracked in manifest.json")
        # --yes: no question; only what is new (the checkpoint) is queued.
        yes = bulk_cli(home, "alice", "--yes")
        assert yes.returncode == 0, yes.stderr
        assert "[y/N]" not in yes.stdout and "Queued 1 model(s)." in yes.stdout
        wait_for(lambda: c.get("/api/jobs?status=completed").json()["total"] == 3, 30)
        assert_file_is(home / "data/models/checkpoint/m12.safetensors", sha(contents[12]))
    unknown = bulk_cli(home, "nobody-here", "--yes")
    assert unknown.returncode == 1
    assert "Civitai has no creator named 'nobody-here'" in unknown.stderr
    d.stop()


# GUI ----------------------------------------------------------------------------------------


def test_the_add_tab_previews_a_creators_models_and_downloads_the_selected_ones(
    civitai, daemon, home, page
):
    contents = creator_catalogue(civitai)
    problems = watch(page)
    d = daemon()
    log_in(page, d)
    open_tab(page, "add")
    page.fill("#bulk-username", "alice")
    page.select_option("#bulk-type", "LORA")
    page.click("#bulk-preview-button")
    expect(page.locator(".bulk-row")).to_have_count(3)  # 11, 13 and 15 are LoRAs
    page.select_option("#bulk-type", "")
    page.click("#bulk-preview-button")
    rows = page.locator(".bulk-row")
    expect(rows).to_have_count(4)
    expect(page.locator("#bulk-summary")).to_contain_text("3 to fetch")
    unavailable = page.locator(".bulk-row[data-model-id='15']")
    expect(unavailable.locator(".badge")).to_have_text("unavailable")
    expect(unavailable.locator(".bulk-pick")).to_be_disabled()
    expect(unavailable.locator(".bulk-why")).to_contain_text("training data")
    # Every new model starts picked; leave model 13 out.
    page.locator(".bulk-row[data-model-id='13'] .bulk-pick").uncheck()
    size = len(contents[11]) + len(contents[12])
    expect(page.locator("#bulk-selected")).to_have_text(f"2 selected · {size / 1000:.1f} KB")
    table = page.locator("#bulk-table").bounding_box()
    assert table is not None and table["width"] > 500 and table["height"] > 100, table
    button = page.locator("#bulk-download")
    expect(button).to_be_enabled()
    button.scroll_into_view_if_needed()
    box = button.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 20, box
    shot(page, "bulk-preview")
    button.click()
    expect(page.locator(".bulk-row[data-model-id='11'] .badge")).to_have_text("queued")
    expect(page.locator(".bulk-row[data-model-id='13'] .badge")).to_have_text("new")
    expect(button).to_be_disabled()
    with d.client() as c:
        wait_for(lambda: c.get("/api/jobs?status=completed").json()["total"] == 2, 30)
    assert_file_is(home / "data/models/lora/m11.safetensors", sha(contents[11]))
    assert_file_is(home / "data/models/checkpoint/m12.safetensors", sha(contents[12]))
    wait_for(lambda: tracked(home) == {11, 12}, 10, what="both tracked in manifest.json")
    page.click("#bulk-preview-button")
    expect(page.locator(".bulk-row[data-model-id='12'] .badge")).to_have_text("downloaded")
    shot(page, "bulk-preview-after-download")
    page.fill("#bulk-username", "nobody-here")
    page.click("#bulk-preview-button")
    expect(page.locator("#bulk-error")).to_have_text(
        "Preview of nobody-here failed: Civitai has no creator named 'nobody-here': check the "
        "name as it appears in their profile's address, civitai.com/user/<name>"
    )
    expect(page.locator("#bulk-result")).to_be_hidden()
    shot(page, "bulk-unknown-creator")
    # The one console line is the browser's own note of the 404 the preview got; nothing else.
    missing = [p for p in problems if "status of 404" in p and "/api/bulk/preview" in p]
    assert len(missing) == 1, problems
    problems.remove(missing[0])
    assert problems == [], problems
    d.stop()


def test_a_listing_answer_of_another_shape_is_a_clear_503_not_an_internal_error(civitai, daemon):
    civitai.add_simple(100, 1000, b"x" * 10, creator="alice")
    d = daemon()
    with d.client() as c:
        for body in (b"[1, 2]", b'"items"', b'{"items": "x"}', b'{"items": [], "metadata": []}'):
            civitai.fault("api", status=200, body=body)
            r = c.post("/api/bulk/preview", json={"username": "alice"})
            assert r.status_code == 503, (body, r.text)
            assert r.json()["detail"].startswith("Civitai sent an answer "), r.text
        fine = c.post("/api/bulk/preview", json={"username": "alice"})
        assert fine.status_code == 200
        assert [i["modelId"] for i in fine.json()["items"]] == [100]
    d.stop()
