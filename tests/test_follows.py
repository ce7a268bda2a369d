"""Follows (issue 28): a creator, a search or a tag followed against the fake Civitai, checked
with the daily update check; new models queued once or notified once; early access held."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from notify.webhooks import discord_message, telegram_message
from sources.versions import FAR_FUTURE, early_access_until, is_downloadable
from tests.conftest import REPO, assert_file_is, wait_for, wait_job
from tests.receiver import Receiver
from tests.test_cli import cli
from updater.follow_rules import FollowRule
from updater.follows import listing_params, summary_text

LATER = "2026-06-01T10:00:00.000Z"  # a model published after the ones a follow saw first


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def creator_model(civitai, model_id, creator, data, published=LATER, **kw):
    """A model of `creator` with one version (model_id * 10) holding one file `data`."""
    f = civitai.file(data, name=f"m{model_id}.safetensors")
    version = civitai.version(model_id * 10, [f], published_at=published, **kw)
    civitai.add_model(model_id, f"Model {model_id}", "LORA", [version], creator=creator)
    return f


def listing_requests(civitai) -> int:
    """Listings a follow walks; not the check's questions about the models on disk (`ids=`)."""
    return len([r for r in civitai.requests_to("api", "/api/v1/models?") if "ids=" not in r.path])


def summaries(hook) -> list[dict]:
    return [r.json["summary"] for r in hook.received if r.json.get("event") == "check.summary"]


def test_creator_follow_downloads_a_new_model_once_across_checks_and_restarts(
    civitai, daemon, home
):
    hook = Receiver().start()
    try:
        creator_model(civitai, 1, "alice", b"old" * 500, published="2025-05-19T02:43:46.31")
        d = daemon(webhook_url=hook.url)
        c = d.client()
        made = c.post("/api/follows", json={"username": "alice", "mode": "download"})
        assert made.status_code == 201, made.text
        follow = made.json()
        assert follow["kind"] == "username" and follow["title"] == "creator alice"
        first = c.post(f"/api/follows/{follow['id']}/check").json()
        assert [i["state"] for i in first["items"]] == ["existing"]  # the back catalogue: seen
        assert c.get("/api/jobs").json()["total"] == 0

        new = b"new model" * 1000
        creator_model(civitai, 2, "alice", new)
        result = c.post("/api/updates/check").json()
        [checked] = result["follows"]
        assert "items" not in checked  # every model listed stays in the follow's own result
        [item] = checked["new"]
        assert (item["modelId"], item["modelVersionId"], item["state"]) == (2, 20, "queued")
        job = wait_job(c, item["job_id"])
        assert_file_is(job["path"], sha(new))
        assert job["path"] == str(home / "data/models/lora/m2.safetensors")
        wait_for(lambda: summaries(hook), 10, what="the check's summary webhook")
        assert summaries(hook)[0]["text"] == "1 new model from creator alice (queued)"

        civitai.page_limit = 1  # a page a model: a walk past the models seen would cost more
        before = listing_requests(civitai)
        again = c.post("/api/updates/check").json()["follows"][0]
        assert again["new"] == [] and again["requests"] == 1  # nothing new: one page
        assert listing_requests(civitai) - before == 1
        d.stop()
        d = daemon(webhook_url=hook.url)
        c = d.client()
        after = c.post("/api/updates/check").json()["follows"][0]
        assert after["new"] == [] and c.get("/api/jobs").json()["total"] == 1
        [kept] = c.get("/api/follows").json()["follows"]
        assert kept["last_result"]["new"] == [] and kept["last_check"]
    finally:
        hook.stop()


def test_notify_mode_queues_nothing_and_notifies_each_model_once(civitai, daemon):
    hook = Receiver().start()
    try:
        creator_model(civitai, 1, "bob", b"a" * 100, published="2025-05-19T02:43:46.31")
        creator_model(civitai, 5, "eve", b"e" * 100, published="2025-05-19T02:43:46.31")
        d = daemon(
            notify=[
                {"type": "discord", "url": hook.url + "/discord"},
                {
                    "type": "telegram",
                    "bot_token": "9:tg-secret",
                    "chat_id": 7,
                    "api_base": hook.url,
                },
            ]
        )
        c = d.client()
        for name in ("bob", "eve"):
            assert c.post("/api/follows", json={"username": name}).status_code == 201
        c.post("/api/updates/check")  # the first check: what exists is seen
        creator_model(civitai, 2, "bob", b"b" * 100)
        result = c.post("/api/updates/check").json()
        assert [i["state"] for f in result["follows"] for i in f["new"]] == ["notified"]
        assert c.get("/api/jobs").json()["total"] == 0

        def discord() -> list[dict]:
            return [r.json for r in hook.received if r.path == "/discord"]

        wait_for(lambda: len(discord()) == 1, 10, what="the Discord message")
        embed = discord()[0]["embeds"][0]
        assert embed["title"] == "Update check"
        assert embed["description"] == (
            "1 new model from creator bob (to notify)\ncreator bob: Model 2"
        )
        telegram = wait_for(
            lambda: [r.json for r in hook.received if r.path == "/bot9:tg-secret/sendMessage"],
            10,
            what="the Telegram message",
        )
        assert telegram[0]["text"].startswith("Update check\n1 new model from creator bob")

        creator_model(civitai, 6, "eve", b"f" * 100)  # the next check finds eve's only
        c.post("/api/updates/check")
        wait_for(lambda: len(discord()) == 2, 10, what="the second check's message")
        assert discord()[1]["embeds"][0]["description"].startswith(
            "1 new model from creator eve (to notify)"
        )
        assert "bob" not in discord()[1]["embeds"][0]["description"]
    finally:
        hook.stop()


def test_early_access_version_is_held_then_queued_by_the_first_check_after_its_end(civitai, daemon):
    hook = Receiver().start()
    try:
        creator_model(civitai, 1, "carol", b"x" * 100, published="2025-05-19T02:43:46.31")
        d = daemon(webhook_url=hook.url)
        c = d.client()
        follow = c.post("/api/follows", json={"username": "carol", "mode": "download"}).json()
        c.post("/api/updates/check")
        data = b"early" * 300
        creator_model(civitai, 3, "carol", data, early_access_until=time.time() + 3 * 86400)
        held = c.post("/api/updates/check").json()["follows"][0]
        [item] = held["held"]
        assert item["modelVersionId"] == 30 and item["until"] and held["new"] == []
        assert c.get("/api/jobs").json()["total"] == 0
        wait_for(lambda: len(summaries(hook)) == 2, 10, what="two summaries")
        day = item["until"][:10]
        assert summaries(hook)[1]["text"] == f"1 held in early access until {day}"

        civitai.move_early_access(30, time.time() + 5 * 86400)  # the creator moves it later
        still = c.post(f"/api/follows/{follow['id']}/check").json()
        assert still["held"][0]["until"][:10] != day and still["newly_held"] == []
        assert c.get("/api/jobs").json()["total"] == 0

        civitai.end_early_access(30)
        result = c.post("/api/updates/check").json()["follows"][0]
        [taken] = result["new"]
        assert (taken["modelVersionId"], taken["state"]) == (30, "queued")
        assert_file_is(wait_job(c, taken["job_id"])["path"], sha(data))
        after = c.post("/api/updates/check").json()["follows"][0]
        assert after["new"] == [] and after["held"] == []
        assert c.get("/api/jobs").json()["total"] == 1
    finally:
        hook.stop()


def test_dry_run_answers_what_a_rule_would_take_and_saves_nothing(civitai, daemon):
    creator_model(civitai, 1, "dora", b"s" * 2048)
    creator_model(civitai, 2, "dora", b"big" * 4000)
    d = daemon()
    c = d.client()
    rule = {"username": "dora", "mode": "download", "backlog": "take", "max_size": 5000}
    r = c.post("/api/follows?dry_run=true", json=rule)
    assert r.status_code == 200, r.text
    items = {i["modelId"]: i for i in r.json()["items"]}
    assert {k: items[1][k] for k in ("modelVersionId", "filename", "size", "folder", "state")} == {
        "modelVersionId": 10,
        "filename": "m1.safetensors",
        "size": 2048,
        "folder": "lora",
        "state": "new",
    }
    assert items[2]["state"] == "filtered" and "max_size" in items[2]["problem"]
    assert c.get("/api/follows").json()["follows"] == []
    follow = c.post("/api/follows", json=rule).json()
    again = c.post(f"/api/follows/{follow['id']}/check?dry_run=true").json()
    assert {i["modelId"]: i["state"] for i in again["items"]} == {1: "new", 2: "filtered"}
    assert c.get("/api/jobs").json()["total"] == 0
    assert c.get(f"/api/follows/{follow['id']}").json()["last_check"] is None


def test_tag_and_search_follows_find_their_new_models(civitai, daemon):
    f = civitai.file(b"t" * 100, name="old.safetensors")
    civitai.add_model(1, "Old Anime", "LORA", [civitai.version(10, [f])], extra={"tags": ["anime"]})
    d = daemon()
    c = d.client()
    tag = c.post("/api/follows", json={"tag": "anime"}).json()
    assert (tag["kind"], tag["tag"]) == ("tag", "anime")
    search = c.post(
        "/api/follows", json={"query": "castle", "types": ["Checkpoint"], "sort": "Most Downloaded"}
    ).json()
    assert search["title"] == 'search "castle"' and search["sort"] == "Most Downloaded"
    c.post("/api/updates/check")
    g = civitai.file(b"u" * 100, name="new.safetensors")
    v = civitai.version(20, [g], published_at=LATER)
    civitai.add_model(2, "New Anime", "LORA", [v], extra={"tags": ["Anime"]})
    h = civitai.file(b"c" * 100, name="castle.safetensors")
    civitai.add_model(3, "Castle XL", "Checkpoint", [civitai.version(30, [h], published_at=LATER)])
    civitai.add_model(4, "Castle lora", "LORA", [civitai.version(40, [h], published_at=LATER)])
    result = c.post("/api/updates/check").json()
    found = {f["title"]: [i["modelId"] for i in f["new"]] for f in result["follows"]}
    assert found == {"tag anime": [2], 'search "castle"': [3]}
    sent = [r.path for r in civitai.requests_to("api", "/api/v1/models?")]
    assert any("tag=anime" in p and "sort=Newest" in p for p in sent)


def test_full_pass_finds_a_model_published_below_those_seen_and_reports_the_listing_gap(
    civitai, daemon, home
):
    creator_model(civitai, 1, "fred", b"1" * 100)
    d = daemon()
    c = d.client()
    rule = {"username": "fred", "mode": "download", "track": True}
    follow = c.post("/api/follows", json=rule).json()
    c.post(f"/api/follows/{follow['id']}/check")
    # A draft of last year published now sorts below the model seen; one Civitai lists not.
    creator_model(civitai, 2, "fred", b"2" * 100, published="2025-01-01T00:00:00.000Z")
    hidden = civitai.file(b"3" * 100, name="m3.safetensors")
    civitai.add_model(
        3, "Hidden", "LORA", [civitai.version(30, [hidden])], creator="fred", listed=False
    )
    quick = c.post(f"/api/follows/{follow['id']}/check").json()
    assert quick["new"] == [] and not quick["full_pass"]
    full = c.post(f"/api/follows/{follow['id']}/check?full=true").json()
    assert full["full_pass"] and [i["modelId"] for i in full["new"]] == [2]
    wait_job(c, full["new"][0]["job_id"])  # tracked, as the follow asks, once verified
    entries = json.loads((home / "manifest.json").read_text())
    assert [(e["modelId"], e["modelVersionId"]) for e in entries] == [(2, 20)]
    assert full["gap"] == (
        "Civitai counts 3 models by fred, its listing showed 2: 1 hidden from lists "
        "(NSFW without show_nsfw, or missed by Civitai)"
    )


def test_bad_follows_are_refused_with_one_sentence_and_changes_persist(civitai, daemon):
    d = daemon()
    c = d.client()
    for body, words in [
        ({"mode": "notify"}, "one of username, query or tag"),
        ({"username": "a", "tag": "b"}, "one of username, query or tag"),
        ({"username": "a", "mode": "grab"}, "mode"),
        ({"query": "x", "sort": "Best"}, "Highest Rated"),
        ({"username": "a/b"}, "Civitai username"),
        ({"tag": "t", "types": ["Nope"]}, "not a Civitai type"),
        ({"username": "a", "max_size": -1}, "max_size"),
        ({"username": "a", "sort": "Newest"}, "belong to a followed search"),
        ({"tag": "t", "baseModels": ["SDXL\x00"]}, "base model name"),
        ({"query": "castle\x1b[2J"}, "words to search for"),
    ]:
        r = c.post("/api/follows", json=body)
        assert r.status_code == 422, (body, r.text)
        assert words in r.json()["detail"] and "\n" not in r.json()["detail"], r.json()
    assert c.get("/api/follows").json()["follows"] == []
    assert c.get(f"/api/follows/{10**30}").status_code == 422  # not a follow id: no SQLite error
    lone = c.post(  # a lone surrogate, valid JSON, cannot be sent on to Civitai
        "/api/follows?dry_run=true",
        content=b'{"query": "\\ud800"}',
        headers={"Content-Type": "application/json"},
    )
    assert lone.status_code == 422 and "unicode string" in lone.json()["detail"]
    made = c.post("/api/follows", json={"username": "gina"}).json()
    changed = c.patch(f"/api/follows/{made['id']}", json={"mode": "download", "track": True})
    assert changed.status_code == 200 and changed.json()["mode"] == "download"
    assert c.patch(f"/api/follows/{made['id']}", json={"mode": "x"}).status_code == 422
    # Checked with the rule it changes (found by the schemathesis fuzz: a 500 before).
    bad = c.patch(f"/api/follows/{made['id']}", json={"types": ["Nonsense"]})
    assert bad.status_code == 422 and "is not a Civitai type" in bad.json()["detail"], bad.text
    assert c.patch("/api/follows/99", json={"mode": "notify"}).json() == {"detail": "No follow 99"}
    d.stop()
    d = daemon()
    c = d.client()
    [kept] = c.get("/api/follows").json()["follows"]
    assert (kept["username"], kept["mode"], kept["track"]) == ("gina", "download", True)
    assert c.delete(f"/api/follows/{kept['id']}").json() == {"deleted": kept["id"]}
    assert c.get("/api/follows").json()["follows"] == []
    assert c.delete(f"/api/follows/{kept['id']}").status_code == 404


def test_cli_follow_shows_the_dry_run_then_saves_and_follows_unfollow_work(civitai, daemon, home):
    creator_model(civitai, 1, "hana", b"h" * 3000, published="2025-05-19T02:43:46.31")
    d = daemon()
    dry = cli(home, "follow", "--user", "hana", "--take-existing", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "m1.safetensors" in dry.stdout and "would be taken" in dry.stdout
    assert "creator hana: 1 listed, 1 would be taken now." in dry.stdout
    unasked = cli(home, "follow", "--user", "hana")  # no answer on stdin: not saved
    assert unasked.returncode == 0 and "Not followed" in unasked.stdout
    saved = cli(home, "follow", "--user", "hana", "--mode", "download", "--yes")
    assert saved.returncode == 0, saved.stderr
    assert "Following creator hana as follow 1 (download)." in saved.stdout
    listed = cli(home, "follows")
    assert "creator hana" in listed.stdout and "never" in listed.stdout
    assert cli(home, "follows", "--check").stdout.startswith("creator hana: 0 new, 0 held")
    creator_model(civitai, 2, "hana", b"n" * 3000)
    checked = cli(home, "follows", "--check")
    assert "creator hana: 1 new, 0 held" in checked.stdout
    assert "queued: Model 2 (job 1)" in checked.stdout
    assert wait_job(d.client(), 1)["status"] == "completed"
    checked_all = cli(home, "updates", "--check")  # the whole check names each follow's finds
    assert "  creator hana: 0 new, 0 held" in checked_all.stdout.splitlines()
    bad = cli(home, "follow", "--user", "hana", "--tag", "x")
    assert bad.returncode == 1
    assert bad.stderr == "error: Follow one of --user NAME, --query WORDS or --tag TAG\n"
    refused = cli(home, "follow", "--user", "a/b", "--yes")
    assert refused.returncode == 1 and "Civitai username" in refused.stderr
    assert cli(home, "unfollow", "1").stdout.startswith("Follow 1 removed")
    gone = cli(home, "unfollow", "1")
    assert (gone.returncode, gone.stderr) == (1, "error: No follow 1 (404)\n")
    assert "No follows." in cli(home, "follows").stdout


def test_one_summary_covers_the_follows_and_the_tracked_updates_of_a_check(civitai, daemon, home):
    hook = Receiver().start()
    try:
        civitai.add_simple(7, 70, b"tracked" * 100, filename="t.safetensors")
        creator_model(civitai, 1, "ivy", b"i" * 100, published="2025-05-19T02:43:46.31")
        (home / "manifest.json").write_text('[{"modelId": 7, "model_type": "lora"}]')
        d = daemon(
            webhook_url=hook.url + "/hook", notify=[{"type": "discord", "url": hook.url + "/d"}]
        )
        c = d.client()
        wait_for(lambda: c.get("/api/jobs").json()["total"] == 1, 20, what="the manifest's job")
        wait_job(c, 1)
        c.post("/api/follows", json={"username": "ivy", "mode": "download"})
        c.post("/api/updates/check")
        creator_model(civitai, 2, "ivy", b"j" * 100)
        creator_model(civitai, 3, "ivy", b"k" * 100)
        v2 = civitai.version(71, [civitai.file(b"t2" * 100, name="t2.safetensors")])
        civitai.publish_version(7, v2)
        c.post("/api/updates/check")
        text = "2 new models from creator ivy (queued), 1 update"

        def told(path: str) -> list[dict]:
            return [r.json for r in hook.received if r.path == path]

        def checks() -> list[dict]:
            return [m for m in told("/d") if m["embeds"][0]["title"] == "Update check"]

        wait_for(lambda: len(summaries(hook)) == 2 and checks(), 10, what="the messages")
        [message] = checks()  # one for the check that found something, none for the other
        assert message["embeds"][0]["description"] == (
            f"{text}\ncreator ivy: Model 3, Model 2\n"
            "New version of Model 7: v71 is queued for download."
        )
        first, second = summaries(hook)
        titles = [m["embeds"][0]["title"] for m in told("/d")]
        assert not [t for t in titles if t.startswith("New version")]  # in the summary instead
        assert first["text"] is None  # the first check: nothing new, no message
        assert second["text"] == text and (second["new_models"], second["updates"]) == (2, 1)
        found = [r.json for r in hook.received if r.json.get("event") == "model.update_found"]
        assert [u["update"]["new_version_id"] for u in found] == [71]  # webhooks keep it
    finally:
        hook.stop()


def test_early_access_and_generation_only_versions_as_both_checks_read_them():
    now = datetime(2026, 12, 7, tzinfo=UTC)
    later = {"id": 1, "earlyAccessEndsAt": "2026-12-10T00:00:00.000Z", "files": [{"id": 2}]}
    assert early_access_until(later, now) == "2026-12-10T00:00:00.000Z"
    assert early_access_until(later, now + timedelta(days=4)) is None
    assert early_access_until({"id": 1, "availability": "EarlyAccess"}, now) == FAR_FUTURE
    assert early_access_until({"id": 1, "availability": "Public"}, now) is None
    model_file = {"id": 2, "name": "a.safetensors", "type": "Model"}
    assert is_downloadable({"files": [model_file]})
    assert not is_downloadable({"files": [model_file], "usageControl": "Generation"})
    assert not is_downloadable({"files": [{"id": 3, "type": "Training Data"}]})


def test_the_summary_sentence_counts_models_updates_and_the_earliest_hold():
    follows = [
        {"title": "creator x", "mode": "download", "new": [{}, {}, {}], "newly_held": []},
        {"title": "tag y", "mode": "notify", "new": [{}], "newly_held": [{"until": "2026-12-20"}]},
    ]
    updates = [{"job_id": 4}, {"job_id": 5}, {"job_id": None, "early_access_until": "2026-12-09Z"}]
    assert summary_text(follows, updates) == (
        "3 new models from creator x (queued), 1 new model from tag y (to notify), 2 updates, "
        "2 held in early access until 2026-12-09"
    )
    assert summary_text([{"title": "t", "new": [], "newly_held": []}], []) is None
    payload = {"event": "check.summary", "summary": {"text": "1 update", "follows": []}}
    assert discord_message(payload)["embeds"][0]["description"] == "1 update"
    assert telegram_message(payload, 5) == {
        "chat_id": 5,
        "text": "Update check\n1 update",
        "disable_web_page_preview": True,
    }


def test_one_follow_that_fails_is_reported_and_the_others_are_still_checked(civitai, daemon):
    creator_model(civitai, 1, "jay", b"j" * 100, published="2025-05-19T02:43:46.31")
    creator_model(civitai, 2, "kim", b"k" * 100, published="2025-05-19T02:43:46.31")
    d = daemon()
    c = d.client()
    for name in ("jay", "kim"):
        c.post("/api/follows", json={"username": name, "mode": "download"})
    c.post("/api/updates/check")
    creator_model(civitai, 3, "kim", b"n" * 100)
    civitai.fault("api", status=400, body=b'{"error": "Bad username"}')  # jay's listing only
    result = c.post("/api/updates/check").json()
    jay, kim = result["follows"]
    assert jay["error"] == "Civitai answered 400: Bad username" and "new" not in jay
    assert [i["modelId"] for i in kim["new"]] == [3]
    assert {"follow": 1, "detail": "Civitai answered 400: Bad username"} in result["errors"]


def test_the_follows_benchmark_runs_and_a_quiet_check_costs_one_request_a_follow(tmp_path):
    out = tmp_path / "follows.md"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench/follows.py"), "--follows", "6", "--tracked", "120",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "- target ≤ 2 requests a follow with nothing new: met (1)" in run.stdout
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| ")]
    quiet = next(r for r in rows if r[0] == "| nothing new")
    assert quiet[2:7] == ["8 (8)", "2", "6", "1", "0"]  # 2 batches of ids, 1 a follow, no update
    new = next(r for r in rows if r[0] == "| new models")
    assert new[7] == "1"  # one creator in 10 published a model: creator 0


def test_nsfw_is_asked_only_when_both_the_rule_and_show_nsfw_say_so():
    rule = FollowRule(tag="x", nsfw=True, types=["LORA"], baseModels=["SDXL 1.0"])
    assert listing_params(rule, show_nsfw=False, full=False) == {
        "tag": "x",
        "sort": "Newest",
        "limit": 50,
        "nsfw": "false",
        "types": ["LORA"],
        "baseModels": ["SDXL 1.0"],
    }
    assert listing_params(rule, show_nsfw=True, full=True)["nsfw"] == "true"
    assert listing_params(rule, show_nsfw=True, full=True)["limit"] == 100
    plain = FollowRule(query="castle", period="Week")
    assert listing_params(plain, show_nsfw=True, full=False) == {
        "query": "castle",
        "sort": "Newest",
        "limit": 50,
        "nsfw": "false",
        "period": "Week",
    }


def test_a_newer_public_version_of_a_held_model_is_taken_and_the_hold_ends(civitai, daemon):
    creator_model(civitai, 1, "lou", b"l" * 100, published="2025-05-19T02:43:46.31")
    d = daemon()
    c = d.client()
    follow = c.post("/api/follows", json={"username": "lou", "mode": "download"}).json()
    check = f"/api/follows/{follow['id']}/check"
    c.post(check)
    creator_model(civitai, 3, "lou", b"e" * 100, early_access_until=time.time() + 86400)
    assert [i["modelVersionId"] for i in c.post(check).json()["held"]] == [30]
    data = b"public" * 100
    v31 = civitai.version(31, [civitai.file(data, name="v31.safetensors")], published_at=LATER)
    v31.published_at = "2026-06-02T10:00:00.000Z"
    civitai.publish_version(3, v31)
    result = c.post(check).json()
    assert [(i["modelVersionId"], i["state"]) for i in result["new"]] == [(31, "queued")]
    assert result["held"] == []
    assert_file_is(wait_job(c, result["new"][0]["job_id"])["path"], sha(data))
    after = c.post(check).json()
    assert (after["new"], after["held"], after["requests"]) == ([], [], 1)  # no longer asked
