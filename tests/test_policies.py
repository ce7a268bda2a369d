"""Per-model update policies (issue 28 item 2) and early access held (item 3), through the real
daemon and the fake Civitai over HTTP: `notify` lists an update and queues nothing, `replace`
retires the old file whatever manifest_mode says, `{"keep": N}` keeps the N newest versions on
disk; an early-access version is reported with its end date, moved by the creator, and queued by
the first check after it ends; a version that only generates never counts."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import httpx

from sources.versions import FAR_FUTURE, early_access_until, is_downloadable
from tests.conftest import assert_file_is, wait_for, wait_job
from tests.receiver import Receiver
from tests.test_cli import cli
from tests.test_updates import read_manifest, tracked, write_manifest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def set_policy(c: httpx.Client, model_id: int, policy: object) -> httpx.Response:
    return c.patch(f"/api/manifest/{model_id}", json={"policy": policy})


def update_messages(hook: Receiver) -> list[str]:
    """The updates' lines of the Discord messages the receiver got: one message per check, its
    sentence, then a line per update ("New version of <model>: <what>")."""
    return [
        line
        for r in hook.received
        if r.path == "/discord" and r.json["embeds"][0]["title"] == "Update check"
        for line in r.json["embeds"][0]["description"].splitlines()
        if line.startswith("New version of ")
    ]


def completed_versions(home, model_id: int) -> list[int]:
    with sqlite3.connect(home / "data/completed.db") as db:
        rows = db.execute(
            "select modelVersionId from completed where modelId = ? order by modelVersionId",
            [model_id],
        ).fetchall()
    return [r[0] for r in rows]


def test_a_policy_is_set_from_the_api_kept_in_the_manifest_and_a_bad_one_is_refused(
    civitai, daemon, home
):
    d, c = tracked(civitai, daemon, home, [("a.safetensors", b"a" * 100), ("b.bin", b"b" * 10)])
    view = c.get("/api/manifest").json()
    # A person's entries without the key stay valid: they download updates, as before.
    assert [t["policy"] for t in view["tracked"]] == ["download", "download"]
    assert view["problems"] == []

    r = set_policy(c, 1, {"keep": 3})
    assert r.status_code == 200, r.text
    assert [t["policy"] for t in r.json()["tracked"]] == [{"keep": 3}, "download"]
    first, second = read_manifest(home)
    assert first["policy"] == {"keep": 3} and first["note"] == "mine 1"  # the rest is kept
    assert "policy" not in second
    assert set_policy(c, 2, "notify").status_code == 200
    assert read_manifest(home)[1]["policy"] == "notify"

    before = (home / "manifest.json").read_text()
    for bad, shown in [
        ({"keep": 0}, '{"keep": 0}'),
        ("everything", '"everything"'),
        ({"keep": 2, "more": 1}, '{"keep": 2, "more": 1}'),
        (5, "5"),
    ]:
        r = set_policy(c, 1, bad)
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == (
            'policy must be "notify", "download", "replace" or {"keep": N} with N from 1 to '
            f"1000, not {shown}"
        )
    assert c.patch("/api/manifest/1", json={}).status_code == 422
    r = set_policy(c, 99, "notify")
    assert r.status_code == 404
    assert r.json()["detail"] == "manifest.json does not track model 99"
    assert (home / "manifest.json").read_text() == before  # nothing lost

    # A policy written by hand that is none: that entry is reported, the others still work.
    write_manifest(home, [*read_manifest(home), {"modelId": 3, "model_type": "lora", "policy": 7}])
    view = c.get("/api/manifest").json()
    assert view["problems"] == [
        {
            "entry": 3,
            "modelId": 3,
            "detail": 'policy must be "notify", "download", "replace" or {"keep": N} with N '
            "from 1 to 1000, not 7",
        }
    ]
    d.stop()


def test_notify_lists_an_update_once_and_queues_nothing_until_the_policy_downloads(
    civitai, daemon, home
):
    hook = Receiver().start()
    try:
        d, c = tracked(
            civitai,
            daemon,
            home,
            [("a.safetensors", b"old" * 1000)],
            webhook_url=hook.url,
            notify=[{"type": "discord", "url": hook.url + "/discord"}],
        )
        assert set_policy(c, 1, "notify").status_code == 200
        jobs_before = c.get("/api/jobs").json()["total"]
        manifest_before = (home / "manifest.json").read_text()
        new = b"new" * 2000
        civitai.publish_version(
            1, civitai.version(201, [civitai.file(new, name="a_v2.safetensors")], name="v2")
        )

        [update] = c.post("/api/updates/check").json()["updates"]
        assert (update["new_version_id"], update["job_id"], update["policy"]) == (
            201,
            None,
            "notify",
        )
        wait_for(lambda: [r for r in hook.received if r.json.get("event") == "model.update_found"])
        [found] = [r.json for r in hook.received if r.json.get("event") == "model.update_found"]
        assert found["update"]["policy"] == "notify" and found["update"]["job_id"] is None
        [discord] = wait_for(lambda: update_messages(hook))
        assert discord.split(": ", 1)[1] == (
            "v2 is listed only: this model's update policy is notify."
        )
        assert c.get("/api/updates").json()["updates"][0]["policy"] == "notify"
        shown = cli(home, "updates")
        assert "listed only (policy notify)" in shown.stdout, shown
        # Nothing queued, nothing asked of the download endpoint, the manifest as it was.
        assert c.get("/api/jobs").json()["total"] == jobs_before
        assert civitai.requests_to("api", "/api/download/models/201") == []
        assert (home / "manifest.json").read_text() == manifest_before
        # Listed once: the next check has nothing new.
        assert c.post("/api/updates/check").json()["updates"] == []
        assert c.get("/api/jobs").json()["total"] == jobs_before

        # Under notify a version in early access is listed with its date, never queued either.
        early = civitai.version(301, [b"v3" * 500], name="v3")
        early.early_access_until = time.time() + 3600
        civitai.publish_version(1, early)
        [held] = c.post("/api/updates/check").json()["updates"]
        assert (held["new_version_id"], held["job_id"], held["policy"]) == (301, None, "notify")
        until = held["early_access_until"]
        [message] = wait_for(lambda: [m for m in update_messages(hook) if "v3" in str(m)])
        assert message.split(": ", 1)[1] == (
            f"v3 is listed only: this model's update policy is notify (in early access until "
            f"{until})."
        )
        shown = cli(home, "updates")
        assert f"listed only (policy notify), early access until {until}" in shown.stdout

        # The person now wants it: the next check queues the update it listed.
        assert set_policy(c, 1, "download").status_code == 200
        [queued] = c.post("/api/updates/check").json()["updates"]
        assert queued["id"] == update["id"] and queued["job_id"] is not None
        assert queued["policy"] == "download"
        wait_job(c, queued["job_id"])
        assert_file_is(home / "data/models/lora/a_v2.safetensors", sha(new))
        assert read_manifest(home)[0]["modelVersionId"] == 201
        d.stop()
    finally:
        hook.stop()


def test_replace_retires_the_old_file_per_old_versions_even_in_append_mode(civitai, daemon, home):
    old, new = b"one" * 500, b"two" * 700
    d, c = tracked(
        civitai,
        daemon,
        home,
        [("one.safetensors", old)],
        manifest_mode="append",
        old_versions="archive",
    )
    assert set_policy(c, 1, "replace").status_code == 200
    civitai.publish_version(1, civitai.version(201, [civitai.file(new, name="two.safetensors")]))
    [update] = c.post("/api/updates/check").json()["updates"]
    assert update["policy"] == "replace"
    wait_job(c, update["job_id"])
    folder, archive = home / "data/models/lora", home / "data/old_versions/lora"
    assert_file_is(folder / "two.safetensors", sha(new))
    assert not (folder / "one.safetensors").exists()
    assert not (folder / "one.civitai.info").exists()
    assert_file_is(archive / "one.safetensors", sha(old))
    assert (archive / "one.civitai.info").exists()
    # One entry, naming the new version (an entry of the retired one would fetch it again).
    [entry] = read_manifest(home)
    assert (entry["modelVersionId"], entry["policy"], entry["note"]) == (201, "replace", "mine 1")

    # The same name under replace, in append mode: swapped in place, the old bytes archived.
    third = b"three" * 600
    civitai.publish_version(1, civitai.version(301, [civitai.file(third, name="two.safetensors")]))
    [update] = c.post("/api/updates/check").json()["updates"]
    wait_job(c, update["job_id"])
    assert_file_is(folder / "two.safetensors", sha(third))
    assert_file_is(archive / "two.safetensors", sha(new))
    assert [e["modelVersionId"] for e in read_manifest(home)] == [301]
    d.stop()


def test_keep_two_keeps_the_two_newest_versions_on_disk_and_removes_the_older_ones(
    civitai, daemon, home
):
    v1, v2, v3 = b"first" * 400, b"second" * 400, b"third" * 400
    d, c = tracked(civitai, daemon, home, [("a.safetensors", v1)])
    assert set_policy(c, 1, {"keep": 2}).status_code == 200
    folder = home / "data/models/lora"
    # Every version names its file a.safetensors: each new one goes beside the others.
    civitai.publish_version(1, civitai.version(201, [civitai.file(v2, name="a.safetensors")]))
    [update] = c.post("/api/updates/check").json()["updates"]
    assert update["policy"] == "keep 2"
    job = wait_job(c, update["job_id"])
    assert job["path"] == str(folder / "a_v201.safetensors")
    assert_file_is(folder / "a.safetensors", sha(v1))  # two versions: both kept
    assert_file_is(folder / "a_v201.safetensors", sha(v2))
    assert completed_versions(home, 1) == [101, 201]

    civitai.publish_version(1, civitai.version(301, [civitai.file(v3, name="a.safetensors")]))
    [update] = c.post("/api/updates/check").json()["updates"]
    job = wait_job(c, update["job_id"])
    assert job["path"] == str(folder / "a_v301.safetensors")
    assert_file_is(folder / "a_v301.safetensors", sha(v3))
    assert_file_is(folder / "a_v201.safetensors", sha(v2))
    # The oldest went (before the job said completed), with its sidecars and its record;
    # nothing else in the folder did.
    assert not (folder / "a.safetensors").exists()
    assert not (folder / "a.civitai.info").exists() and not (folder / "a.preview.png").exists()
    assert (folder / "a_v201.civitai.info").exists() and (folder / "a_v301.civitai.info").exists()
    assert completed_versions(home, 1) == [201, 301]
    [entry] = read_manifest(home)
    assert (entry["modelVersionId"], entry["policy"]) == (301, {"keep": 2})
    assert c.post("/api/updates/check").json()["updates"] == []
    d.stop()


def test_early_access_is_held_with_its_date_moved_by_the_creator_then_queued_once_it_ends(
    civitai, daemon, home
):
    hook = Receiver().start()
    try:
        d, c = tracked(
            civitai,
            daemon,
            home,
            [("a.safetensors", b"old" * 1000)],
            webhook_url=hook.url,
            notify=[{"type": "discord", "url": hook.url + "/discord"}],
        )
        jobs_before = c.get("/api/jobs").json()["total"]
        new = b"early" * 2000
        version = civitai.version(201, [civitai.file(new, name="a_v2.safetensors")], name="v2")
        version.early_access_until = time.time() + 3600
        civitai.publish_version(1, version)

        def deadline() -> str:
            return httpx.get(f"{civitai.base_url}/api/v1/model-versions/201").json()[
                "earlyAccessEndsAt"
            ]

        first = deadline()
        [held] = c.post("/api/updates/check").json()["updates"]
        assert (held["early_access_until"], held["job_id"]) == (first, None)
        wait_for(lambda: [r for r in hook.received if r.json.get("event") == "model.update_found"])
        [event] = [r.json for r in hook.received if r.json.get("event") == "model.update_found"]
        assert event["update"]["early_access_until"] == first
        [discord] = wait_for(lambda: update_messages(hook))
        assert discord.split(": ", 1)[1] == (
            f"v2 is in early access until {first}; it is queued once that ends."
        )

        # The creator moves the end a day later: the check reports the new date, queues nothing.
        civitai.move_early_access(201, time.time() + 86400)
        later = deadline()
        assert later != first
        [moved] = c.post("/api/updates/check").json()["updates"]
        assert (moved["id"], moved["early_access_until"], moved["job_id"]) == (
            held["id"],
            later,
            None,
        )
        assert c.get("/api/updates").json()["updates"][0]["early_access_until"] == later
        assert c.post("/api/updates/check").json()["updates"] == []  # the same date: nothing
        assert c.get("/api/jobs").json()["total"] == jobs_before
        assert civitai.requests_to("api", "/api/download/models/201") == []

        # The end passes: the first check after it queues it; no job ever failed.
        civitai.move_early_access(201, time.time() - 1)
        [queued] = c.post("/api/updates/check").json()["updates"]
        assert queued["id"] == held["id"] and queued["early_access_until"] is None
        wait_job(c, queued["job_id"])
        assert_file_is(home / "data/models/lora/a_v2.safetensors", sha(new))
        assert c.get("/api/jobs?status=failed").json()["total"] == 0
        d.stop()
    finally:
        hook.stop()


def test_a_version_that_only_generates_never_counts_as_an_update(civitai, daemon, home):
    d, c = tracked(civitai, daemon, home, [("a.safetensors", b"old" * 1000)])
    jobs_before = c.get("/api/jobs").json()["total"]
    manifest_before = (home / "manifest.json").read_text()
    only_generates = civitai.version(
        201, [civitai.file(b"gen" * 900, name="gen.safetensors")], usage_control="Generation"
    )
    civitai.publish_version(1, only_generates)
    listed = httpx.get(f"{civitai.base_url}/api/v1/models/1").json()["modelVersions"][0]
    assert listed["usageControl"] == "Generation"
    # In early access too: still never an update.
    held = civitai.version(301, [b"gen2" * 900], usage_control="Generation")
    held.early_access_until = time.time() + 3600
    civitai.publish_version(1, held)

    result = c.post("/api/updates/check").json()
    assert result["updates"] == [] and result["errors"] == []
    assert c.get("/api/updates").json()["updates"] == []
    assert c.get("/api/jobs").json()["total"] == jobs_before
    assert civitai.requests_to("api", "/api/download/models/201") == []
    assert civitai.requests_to("api", "/api/download/models/301") == []
    assert (home / "manifest.json").read_text() == manifest_before
    d.stop()


def test_keep_never_deletes_through_a_folder_that_became_a_link_out_of_download_dir(
    civitai, daemon, home, tmp_path
):
    v1, v2 = b"first" * 400, b"second" * 400
    d, c = tracked(civitai, daemon, home, [("a.safetensors", v1)])
    assert set_policy(c, 1, {"keep": 1}).status_code == 200
    # The person moved lora/ to another disk and linked it back; the model now goes to locon/.
    models = home / "data/models"
    outside = tmp_path / "other-disk" / "lora"
    outside.parent.mkdir()
    shutil.move(models / "lora", outside)
    (models / "lora").symlink_to(outside, target_is_directory=True)
    entries = read_manifest(home)
    entries[0]["model_type"] = "locon"
    write_manifest(home, entries)
    civitai.publish_version(1, civitai.version(201, [civitai.file(v2, name="b.safetensors")]))
    [update] = c.post("/api/updates/check").json()["updates"]
    job = wait_job(c, update["job_id"])
    assert job["path"] == str(models / "locon/b.safetensors")
    assert_file_is(models / "locon/b.safetensors", sha(v2))
    # Version 101 is past the one kept, but reached only through the link: left where it is.
    assert_file_is(outside / "a.safetensors", sha(v1))
    assert (outside / "a.civitai.info").exists()
    d.stop()
    assert f"model 1: old version {models / 'lora/a.safetensors'} kept:" in d.stderr_text()


def test_early_access_until_and_downloadable_read_civitais_fields():
    """The two tests of a version every check shares (the follows' check too): the fields of
    Civitai's model-version answer (developer.civitai.com/site/reference/model-versions)."""
    model_file = {"id": 1, "name": "a.safetensors", "type": "Model"}
    public = {
        "id": 1,
        "publishedAt": "2026-01-01T00:00:00.000Z",
        "availability": "Public",
        "usageControl": "Download",
        "earlyAccessEndsAt": None,
        "earlyAccessConfig": None,
        "files": [model_file],
    }
    assert early_access_until(public) is None and is_downloadable(public)
    soon = datetime.now(UTC) + timedelta(days=2)
    ends = soon.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    held = public | {"availability": "EarlyAccess", "earlyAccessEndsAt": ends}
    assert early_access_until(held) == ends and is_downloadable(held)
    assert early_access_until(held | {"earlyAccessEndsAt": "2026-01-02T00:00:00Z"}) is None
    # Today's earlyAccessConfig: `timeframe` days after publication.
    started = datetime.now(UTC) - timedelta(days=1)
    configured = public | {
        "publishedAt": started.isoformat(),
        "earlyAccessConfig": {"timeframe": 3, "chargeForDownload": True},
    }
    assert early_access_until(configured) == (started + timedelta(days=3)).isoformat()
    ended = configured | {"earlyAccessConfig": {"timeframe": 0}}  # Civitai's job ends it so
    assert early_access_until(ended) is None
    # In early access without a date Civitai gives: never taken for downloadable now.
    assert early_access_until(public | {"availability": "EarlyAccess"}) == FAR_FUTURE
    # A version that only generates, or holds only training data, is never downloadable.
    assert not is_downloadable(public | {"usageControl": "Generation"})
    assert not is_downloadable(public | {"files": [{"id": 2, "type": "Training Data"}]})
    assert is_downloadable({k: v for k, v in public.items() if k != "usageControl"})  # 2022's API
