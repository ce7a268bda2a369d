"""Civitai's real data through the real code: which version is the newest, early access,
training data, NSFW models hidden from lists, answers over several pages, and every recorded
response in tests/fixtures served by the fake and run through resolve and the update check."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

import errors
from sources.civitai import pick_file
from sources.versions import newest_version
from tests.conftest import assert_file_is, wait_for, wait_job
from tests.test_cli import cli
from tests.test_updates import read_manifest, tracked, write_manifest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DREAMSHAPER = "models_list_cursor_based_2024-05_dreamshaper_trimmed.json"
RECORDED = [
    DREAMSHAPER,
    "models_list_page_based_2025-10.json",
    "model_1580878_2025-08.json",
    "model_version_1805971_2025-05_images_trimmed.json",
    "model_version_1318_wiki_2022-12.json",
]


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def dreamshaper() -> dict:
    return recorded(DREAMSHAPER)["items"][0]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The newest version and the file of a version, as pure functions of Civitai's JSON -------------


def test_newest_is_the_latest_published_downloadable_version_not_the_first_listed():
    model = dreamshaper()
    listed = [v["id"] for v in model["modelVersions"]]
    assert listed[:4] == [128713, 252914, 131004, 303662]  # the creator's order
    now = datetime(2024, 6, 1, tzinfo=UTC)
    # The latest published is 303662 "8-diffusers" (2024-01-18), whose only file is a Diffusers
    # zip: no app loads it from a checkpoint folder, so "the newest" is the latest with a file
    # loaded as is, 252914 "8 LCM" (2023-12-06); a tracked zip (archives=True) gets 303662.
    newest = newest_version(model, now)
    assert newest is not None
    assert (newest["id"], newest["name"], newest["publishedAt"]) == (
        252914,
        "8 LCM",
        "2023-12-06T21:31:32.438",
    )
    diffusers = newest_version(model, now, archives=True)
    assert (diffusers["id"], diffusers["name"]) == (303662, "8-diffusers")
    assert newest_version(model, now, archives=False)["id"] == 252914
    # Before 252914 was published, 131004 ("8-inpainting", 2023-08-01) was the newest.
    assert newest_version(model, datetime(2023, 12, 1, tzinfo=UTC))["id"] == 131004
    # A model with nothing but archives: "the newest" still names one.
    only_zips = {"modelVersions": [v for v in model["modelVersions"] if v["id"] == 303662]}
    assert newest_version(only_zips, now)["id"] == 303662
    assert newest_version(only_zips, now, archives=False) is None

    versions = {v["id"]: v for v in model["modelVersions"]}
    draft = copy.deepcopy(versions[128713]) | {"id": 999001, "publishedAt": None}
    scheduled = copy.deepcopy(versions[128713]) | {
        "id": 999002,
        "publishedAt": "2024-07-01T00:00:00.000Z",
        "status": "Scheduled",
    }
    training_only = copy.deepcopy(versions[111861]) | {
        "id": 999003,
        "publishedAt": "2024-05-01T00:00:00Z",
    }
    generation_only = copy.deepcopy(versions[128713]) | {
        "id": 999004,
        "publishedAt": "2024-05-02T00:00:00Z",
        "usageControl": "Generation",
    }
    early = copy.deepcopy(versions[128713]) | {
        "id": 999005,
        "publishedAt": "2024-05-03T00:00:00Z",
        "earlyAccessEndsAt": "2024-06-10T00:00:00.000Z",
        "availability": "EarlyAccess",
    }
    model["modelVersions"] += [draft, scheduled, training_only, generation_only, early]
    assert newest_version(model, now)["id"] == 252914  # none of those is downloadable now
    assert newest_version(model, now, early=True)["id"] == 999005  # the update check sees it
    after = datetime(2024, 6, 10, 0, 0, 1, tzinfo=UTC)
    assert newest_version(model, after)["id"] == 999005  # its deadline passed
    # Two versions published at the same moment: the larger id is the newer.
    twin = copy.deepcopy(early) | {"id": 999006, "earlyAccessEndsAt": None, "availability": None}
    model["modelVersions"].insert(0, twin)
    assert newest_version(model, after)["id"] == 999006


def test_pick_file_never_picks_training_data_unless_the_request_names_it():
    versions = {v["id"]: v for v in dreamshaper()["modelVersions"]}
    with pytest.raises(errors.OnlyTrainingData) as refused:
        pick_file(versions[111861], None)
    assert str(refused.value) == (
        "Model version 111861 has no model file, only training data: "
        "dreamshaper_7Diffusers_trainingData.zip (fileId 79212). Ask for that file by its "
        "fileId to download it anyway."
    )
    assert pick_file(versions[111861], 79212)["name"] == "dreamshaper_7Diffusers_trainingData.zip"
    # The training-data zip marked primary beside a model file: the model file.
    mixed = copy.deepcopy(versions[111861])
    mixed["files"].append(copy.deepcopy(versions[109123]["files"][0]) | {"primary": None})
    assert pick_file(mixed, None)["name"] == "dreamshaper_7.safetensors"
    assert pick_file(mixed, None, type="Training Data")["id"] == 79212  # a URL that names it


# Every recorded response through resolve and the update check ----------------------------------

# (request, version, file name, file id, sizeKB, SHA256): read off the recorded answers by hand.
EXPECTED = [
    (  # the newest by publishedAt with a file loaded as is, listed second (303662, published
        # later and listed fourth, holds only a Diffusers zip)
        {"modelId": 4384},
        252914,
        "dreamshaper_8LCM.safetensors",
        196006,
        2083793.9375,
        "A4F3E1526C5DC4FCBE342F5C410D83AE202C7A415FCEFCBB92E0F93FCD0A87C3",
    ),
    (  # asked for by version: the diffusers zip (type Model) is what it holds
        {"modelVersionId": 303662},
        303662,
        "dreamshaper_8Diffusers.zip",
        239723,
        5490490.637695312,
        "36573722A60B46F45ED85D12182D5C760F1CAC2BB4FBF8AE1B50D3AE63375E2E",
    ),
    (
        {"modelVersionId": 128713},
        128713,
        "dreamshaper_8.safetensors",
        93211,
        2082642.474609375,
        "879DB523C30D3B9017143D56705015E15A2CB5628762C11D086FED9538ABD7FD",
    ),
    (  # two files named alike: the primary (pruned) one, not the full one without `primary`
        {"modelVersionId": 94081},
        94081,
        "dreamshaper_631BakedVae.safetensors",
        65091,
        2082642.474609375,
        "853E7E85C46BE9AD4815666CD335545DF32DAB5E0D22AFE5CCC6AD9BDA834B52",
    ),
    (  # the full one, named by fileId
        {"modelVersionId": 94081, "fileId": 65090},
        94081,
        "dreamshaper_631BakedVae.safetensors",
        65090,
        5823471.634765625,
        "2336DBF342B059F88CAE7E4F40D5619F3B7AD8CA6F8583FC913E7DDDE18FB197",
    ),
    (  # four files; the primary is a "Pruned Model"
        {"modelVersionId": 6202},
        6202,
        "dreamshaper_332BakedVaeClipFix.safetensors",
        6459,
        3761486.485351562,
        "C464E275684C36B987481638B420F3833077118F5D4CF89344E4010642CE76EA",
    ),
    (  # a training-data zip, only when asked for by its fileId
        {"modelVersionId": 111861, "fileId": 79212},
        111861,
        "dreamshaper_7Diffusers_trainingData.zip",
        79212,
        3149675.362304688,
        "B4696B31BFC141B0DE73FF7495FB21CBCA51DA621B4834D383EE3D5E8D127557",
    ),
    (
        {"modelId": 1580878},
        1967584,
        "Semi_realistic.safetensors",
        1865079,
        223107.16015625,
        "7C0B4B21DAD60CE4E5A3F78D33261F4E556F94042E7FD19FBC8C734A80EC5A81",
    ),
    (
        {"modelId": 11821},
        127062,
        "VSK.safetensors",
        91869,
        73888.6953125,
        "260F2989F160C67B09FD68482D1CC45DE61A33EEC5D2FA6FCD6CF7E09BBA7D47",
    ),
    (
        {"modelVersionId": 1805971},
        1805971,
        "hyphoriaIlluNAI_v001.safetensors",
        1706678,
        6775429.966796875,
        "416DAECFBEF167DC59FFCE19BC79987BA0E8B0DE8E79F79ED215C196D893479D",
    ),
    (  # the 2022 wiki example: no publishedAt, legacy fields
        {"modelVersionId": 1318},
        1318,
        "froggyStyle_toad.ckpt",
        289,
        2546414.971679688,
        "0DF040C8CD48125174B54C251A87822E8ED61D529A92C42C1FA1BEF483B10B0D",
    ),
]


def all_recorded_versions(civitai) -> dict[int, dict]:
    return {v["id"]: v for m in civitai.recorded.values() for v in m["modelVersions"]}


def test_every_recorded_response_resolves_to_the_right_file(civitai, daemon):
    for name in RECORDED:
        civitai.add_recorded(recorded(name))
    d = daemon()
    with d.client() as c:
        for request, version_id, filename, file_id, size_kb, sha256 in EXPECTED:
            r = c.post("/api/download", json={**request, "model_type": "checkpoint"})
            assert r.status_code == 202, (request, r.text)
            job = r.json()
            assert (job["modelVersionId"], job["filename"]) == (version_id, filename), request
            assert job["bytes_total"] == round(size_kb * 1024)
            assert job["sha256"] == sha256.lower()
            pinned = f"/api/download/models/{version_id}?fileId={file_id}"
            wait_for(
                lambda p=pinned: civitai.requests_to("api", p),
                20,
                what=f"the download of {pinned}",  # the very file, pinned by its id
            )
            c.post(f"/api/jobs/{job['id']}/cancel")  # resolved: the next one may share its name
        # The GUI's look-up preselects the version a download by model id fetches.
        looked = c.get("/api/lookup", params={"url": "https://civitai.com/models/4384/dreamshaper"})
        assert looked.json()["selectedVersionId"] == 252914
        assert looked.json()["versions"][0]["id"] == 128713  # listed in Civitai's order
        # Every version of every recorded model: its primary model file, its size and SHA256.
        for version in all_recorded_versions(civitai).values():
            request = {"modelVersionId": version["id"], "model_type": "checkpoint"}
            r = c.post("/api/download", json=request)
            models = [f for f in version["files"] if f["type"] != "Training Data"]
            if not models:
                assert r.status_code == 404
                assert "no model file, only training data" in r.json()["detail"]
                continue
            assert r.status_code in (200, 202), r.text
            job = r.json()
            primary = next(f for f in models if f.get("primary"))
            assert job["filename"] == primary["name"]
            assert job["sha256"] == primary["hashes"]["SHA256"].lower()
            assert job["bytes_total"] == round(primary["sizeKB"] * 1024)
            # Resolution is what is checked here: cancel it, so that another version's file of
            # the same name (two of VSK's share one) is not refused as a second writer of it.
            if job["status"] != "completed":
                c.post(f"/api/jobs/{job['id']}/cancel")
    d.stop()


def test_update_check_on_recorded_models_finds_the_latest_published_version(civitai, daemon, home):
    for name in RECORDED:
        civitai.add_recorded(recorded(name))
    write_manifest(
        home,
        [
            {"modelId": 4384, "modelVersionId": 109123, "model_type": "checkpoint"},  # "7"
            {"modelId": 1580878, "modelVersionId": 1788945, "model_type": "lora"},
            {"modelId": 11821, "modelVersionId": 13966, "model_type": "lora"},
            {"modelId": 1595884, "modelVersionId": 1805971, "model_type": "checkpoint"},
            {"modelId": 1244, "modelVersionId": 1318, "model_type": "checkpoint"},
        ],
    )
    d = daemon()
    with d.client() as c:
        result = c.post("/api/updates/check").json()
        assert result["errors"] == [] and result["checked"] == 5
        # DreamShaper's newest by publishedAt is 303662, listed fourth (not 128713, listed
        # first), but it holds only a Diffusers zip: the tracked .safetensors is updated to
        # 252914 ("8 LCM"), the latest with a .safetensors. The two models from a
        # model-versions answer hold only the tracked version.
        found = {u["modelId"]: u for u in result["updates"]}
        assert {m: (u["old_version_id"], u["new_version_id"]) for m, u in found.items()} == {
            4384: (109123, 252914),
            1580878: (1788945, 1967584),
            11821: (13966, 127062),
        }
        files = {}
        for u in found.values():
            job = c.get(f"/api/jobs/{u['job_id']}").json()
            files[u["modelId"]] = (job["modelVersionId"], job["filename"], job["sha256"])
        assert files == {
            4384: (
                252914,
                "dreamshaper_8LCM.safetensors",
                "a4f3e1526c5dc4fcbe342f5c410d83ae202c7a415fcefcbb92e0f93fcd0a87c3",
            ),
            1580878: (
                1967584,
                "Semi_realistic.safetensors",
                "7c0b4b21dad60ce4e5a3f78d33261f4e556f94042e7fd19fbc8c734a80ec5a81",
            ),
            11821: (
                127062,
                "VSK.safetensors",
                "260f2989f160c67b09fd68482d1cc45de61a33eec5d2fa6fcd6cf7e09bba7d47",
            ),
        }
        entries = {e["modelId"]: e["modelVersionId"] for e in read_manifest(home)}
        assert entries == {
            4384: 252914,
            1580878: 1967584,
            11821: 127062,
            1595884: 1805971,
            1244: 1318,
        }
    d.stop()


# Early access, training data, NSFW and paging, through the fake ---------------------------------


def test_an_update_in_early_access_is_reported_with_its_date_and_queued_once_it_ends(
    civitai, daemon, home
):
    d, c = tracked(civitai, daemon, home, [("a.safetensors", b"old" * 1000)])
    jobs_before = c.get("/api/jobs").json()["total"]
    manifest_before = (home / "manifest.json").read_text()
    new = b"early" * 2000
    version = civitai.version(201, [civitai.file(new, name="a_v2.safetensors")], name="v2")
    version.early_access_until = time.time() + 3600
    civitai.publish_version(1, version)
    deadline = httpx.get(f"{civitai.base_url}/api/v1/model-versions/201").json()[
        "earlyAccessEndsAt"
    ]

    first = c.post("/api/updates/check").json()
    assert first["errors"] == []
    [update] = first["updates"]
    assert (update["old_version_id"], update["new_version_id"]) == (101, 201)
    assert update["early_access_until"] == deadline and update["job_id"] is None
    assert c.get("/api/updates").json()["updates"][0]["early_access_until"] == deadline
    shown = cli(home, "updates")
    assert shown.returncode == 0 and f"early access until {deadline}" in shown.stdout
    # Not queued, nothing asked of the download endpoint (it would answer 403), manifest as it was.
    assert c.get("/api/jobs").json()["total"] == jobs_before
    assert civitai.requests_to("api", "/api/download/models/201") == []
    assert (home / "manifest.json").read_text() == manifest_before
    # Still in early access: the next check reports nothing new and queues nothing.
    assert c.post("/api/updates/check").json()["updates"] == []
    assert c.get("/api/jobs").json()["total"] == jobs_before

    civitai.end_early_access(201)
    [queued] = c.post("/api/updates/check").json()["updates"]
    assert queued["id"] == update["id"] and queued["new_version_id"] == 201
    assert queued["early_access_until"] is None and queued["job_id"] is not None
    job = wait_job(c, queued["job_id"])
    assert_file_is(home / "data/models/lora/a_v2.safetensors", sha(new))
    assert job["path"] == str(home / "data/models/lora/a_v2.safetensors")
    assert read_manifest(home)[0]["modelVersionId"] == 201
    [listed] = c.get("/api/updates").json()["updates"]
    assert listed["job_id"] == queued["job_id"] and listed["early_access_until"] is None
    assert c.post("/api/updates/check").json()["updates"] == []
    d.stop()


def test_a_version_whose_primary_file_is_training_data_downloads_its_model_file(
    civitai, daemon, home
):
    d, c = tracked(civitai, daemon, home, [("a.safetensors", b"old" * 1000)])
    zip_bytes, model = b"PK training images" * 500, b"the model itself" * 700
    training = civitai.file(
        zip_bytes, name="a_trainingData.zip", type="Training Data", format="Other"
    )
    weights = civitai.file(model, name="a_v2.safetensors", primary=False)
    civitai.publish_version(1, civitai.version(201, [training, weights]))
    # The update check fetches the model file, never the zip.
    [update] = c.post("/api/updates/check").json()["updates"]
    job = wait_job(c, update["job_id"])
    folder = home / "data/models/lora"
    assert job["filename"] == "a_v2.safetensors"
    assert_file_is(folder / "a_v2.safetensors", sha(model))
    assert not (folder / "a_trainingData.zip").exists()
    # Asked by version or by model: the model file too (the same one, already in place).
    for request in ({"modelVersionId": 201}, {"modelId": 1}):
        r = c.post("/api/download", json={**request, "model_type": "lora"})
        assert r.json()["filename"] == "a_v2.safetensors", request
    # Named by its fileId, the zip is what is fetched.
    r = c.post(
        "/api/download", json={"modelVersionId": 201, "fileId": training.id, "model_type": "lora"}
    )
    assert r.status_code == 202 and r.json()["filename"] == "a_trainingData.zip"
    wait_job(c, r.json()["id"])
    assert_file_is(folder / "a_trainingData.zip", sha(zip_bytes))
    d.stop()


def test_nsfw_and_unlisted_models_are_checked_and_only_a_deleted_one_is_reported(
    civitai, daemon, home
):
    files = [(f"m{i}.safetensors", f"model {i}".encode() * 100) for i in range(1, 6)]
    d, c = tracked(civitai, daemon, home, files)
    civitai.models[1].nsfw = True  # Civitai lists it only to nsfw=true
    civitai.models[2].listed = False  # its page answers, lists leave it out
    civitai.models[3].deleted = True
    civitai.page_limit = 2  # a batch answered over two pages, as Civitai pages with `limit`
    for i in (1, 2, 4, 5):
        v = civitai.version(
            200 + i, [civitai.file(f"new {i}".encode(), name=f"m{i}_v2.safetensors")]
        )
        civitai.publish_version(i, v)
    # The fake hides the NSFW model from a list that does not ask for it.
    plain = httpx.get(f"{civitai.base_url}/api/v1/models", params={"ids": "1,4,5"}).json()
    assert [m["id"] for m in plain["items"]] == [4, 5]
    before = len(civitai.requests_to("api"))

    result = c.post("/api/updates/check").json()
    assert result["errors"] == [
        {"entry": 3, "modelId": 3, "detail": "No model 3 on Civitai (deleted)"}
    ]
    assert sorted(u["new_version_id"] for u in result["updates"]) == [201, 202, 204, 205]
    assert result["checked"] == 4
    asked = [r.path for r in civitai.requests_to("api")[before:] if "/download/" not in r.path]
    lists = [p for p in asked if p.startswith("/api/v1/models?")]
    assert len(lists) == 2 and all("nsfw=true" in p for p in lists)
    assert "cursor=" in lists[1]  # the second page, by metadata.nextCursor
    assert sorted(p for p in asked if p.startswith("/api/v1/models/")) == [
        "/api/v1/models/2",
        "/api/v1/models/3",
    ]
    assert result["requests"] == 4
    for u in result["updates"]:
        i = u["modelId"]
        wait_job(c, u["job_id"])
        assert_file_is(home / f"data/models/lora/m{i}_v2.safetensors", sha(f"new {i}".encode()))
    d.stop()
