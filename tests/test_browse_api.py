"""Browse Civitai (issue 18): GET /api/civitai/models searches Civitai's list through the daemon,
against the fake Civitai over real HTTP, with real recorded list answers."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.conftest import run_job, wait_for, wait_job
from tests.fake_civitai import TOKEN, FakeCivitai

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DREAMSHAPER = "models_list_cursor_based_2024-05_dreamshaper_trimmed.json"
VSK = "models_list_page_based_2025-10.json"
RECENT = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-4]


def recorded(civitai: FakeCivitai, name: str) -> None:
    civitai.add_recorded(json.loads((FIXTURES / name).read_text()))


def searches(civitai: FakeCivitai) -> list[dict[str, list[str]]]:
    """The query of each list request the fake was sent, in order."""
    return [parse_qs(urlsplit(r.path).query) for r in civitai.requests_to("api", "/api/v1/models?")]


def add_lora(civitai: FakeCivitai, model_id: int, name: str, downloads: int, **kw) -> None:
    civitai.add_simple(model_id, model_id * 10, f"{name} bytes".encode(), type="LORA", **kw)
    spec = civitai.models[model_id]
    spec.name = name
    spec.versions[0].published_at = RECENT  # within `period=Year`, as Civitai writes it
    spec.extra = {"stats": {"downloadCount": downloads, "thumbsUpCount": 1000 - downloads}}


def test_a_search_answers_civitais_recorded_list_in_the_daemons_shape(civitai, daemon):
    recorded(civitai, DREAMSHAPER)
    d = daemon(civitai_token=TOKEN, layout="comfyui")
    with d.client() as c:
        r = c.get("/api/civitai/models", params={"query": "dream", "types": "Checkpoint"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["nextCursor"] is None and body["cached"] is False
    [item] = body["items"]
    assert {k: item[k] for k in ("id", "name", "type", "model_type", "folder", "creator")} == {
        "id": 4384,
        "name": "DreamShaper",
        "type": "Checkpoint",
        "model_type": "checkpoint",
        "folder": "checkpoints",
        "creator": "Lykon",
    }
    assert item["nsfw"] is False and item["state"] is None
    assert item["stats"] == {
        "downloadCount": 894361,
        "rating": 0,
        "ratingCount": 0,
        "thumbsUpCount": 46460,
        "favoriteCount": 0,
    }
    assert item["image"] == {
        "url": "https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/dd9b038c-bd15-43ab-86ab-"
        "66e145ad7ff2/width=450/1777041.jpeg",
        "type": "image",
        "width": 1096,
        "height": 1648,
    }
    assert len(item["versions"]) == 31
    # What the dialog shows people (issue 27): the description as text, the model's page, each
    # version's trigger words and example images, each file's format, precision and pruning.
    assert item["description"] and "<" not in item["description"], item["description"]
    assert item["page"] == "https://civitai.com/models/4384"
    newest = dict(item["versions"][0])
    assert isinstance(newest.pop("trainedWords"), list)
    images = newest.pop("images")
    assert 1 <= len(images) <= 8 and all(i["url"].startswith("https://") for i in images)
    assert all(i["blur"] is False for i in images)  # PG images: nothing to blur
    details = [{k: f.pop(k) for k in ("format", "fp", "pruned")} for f in newest["files"]]
    assert details == [{"format": "SafeTensor", "fp": "fp16", "pruned": "pruned"}], details
    assert newest == {
        "id": 128713,
        "name": "8",
        "baseModel": "SD 1.5",
        "publishedAt": "2023-07-29T20:50:47.173",
        "earlyAccessEndsAt": None,
        "state": None,
        "files": [
            {
                "id": 93211,
                "name": "dreamshaper_8.safetensors",
                "type": "Model",
                "size": 2132625894,
                "primary": True,
                "sha256": "879db523c30d3b9017143d56705015e15a2cb5628762c11d086fed9538abd7fd",
            }
        ],
    }
    [sent] = civitai.requests_to("api", "/api/v1/models?")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"


def test_filters_and_sort_are_passed_to_civitai_and_refused_values_name_the_allowed(
    civitai, daemon
):
    add_lora(civitai, 11, "Alpha Style", downloads=10)
    add_lora(civitai, 12, "Beta Style", downloads=30)
    add_lora(civitai, 13, "Gamma Style", downloads=20)
    civitai.add_simple(14, 140, b"a checkpoint", type="Checkpoint")
    d = daemon()
    with d.client() as c:
        params = {
            "query": "style",
            "types": ["LORA", "lora"],
            "baseModels": "SDXL 1.0",
            "sort": "Most Downloaded",
            "period": "Year",
            "username": "fake-creator",
            "limit": 5,
        }
        r = c.get("/api/civitai/models", params=params)
        assert r.status_code == 200, r.text
        assert [m["id"] for m in r.json()["items"]] == [12, 13, 11]
        newest = c.get("/api/civitai/models", params={"types": "LORA", "sort": "Newest"})
        refused = {
            "sort": c.get("/api/civitai/models", params={"sort": "Best"}),
            "type": c.get("/api/civitai/models", params={"types": "Loraz"}),
            "period": c.get("/api/civitai/models", params={"period": "Decade"}),
            "limit": c.get("/api/civitai/models", params={"limit": 101}),
        }
    assert [m["id"] for m in newest.json()["items"]] == [13, 12, 11]  # same date: larger id
    first, second = searches(civitai)
    assert first == {
        "query": ["style"],
        "types": ["LORA"],
        "baseModels": ["SDXL 1.0"],
        "sort": ["Most Downloaded"],
        "period": ["Year"],
        "username": ["fake-creator"],
        "limit": ["5"],
        "nsfw": ["false"],
    }
    assert second["sort"] == ["Newest"] and second["types"] == ["LORA"]
    assert {k: r.status_code for k, r in refused.items()} == dict.fromkeys(refused, 422)
    assert refused["sort"].json()["detail"] == (
        "sort: 'Best' is not one of Highest Rated, Most Downloaded, Newest"
    )
    assert (
        "'Loraz' is not a Civitai model type; use one of Checkpoint,"
        in (refused["type"].json()["detail"])
    )
    assert "AllTime, Year, Month, Week, Day" in refused["period"].json()["detail"]
    assert "limit" in refused["limit"].json()["detail"]
    assert len(searches(civitai)) == 2  # nothing refused reached Civitai


def test_pages_follow_the_cursor_until_there_is_none(civitai, daemon):
    for i in range(5):
        add_lora(civitai, 20 + i, f"Paged {i}", downloads=100 - i)
    d = daemon()
    seen, cursor, pages = [], None, 0
    with d.client() as c:
        while True:
            params = {"sort": "Most Downloaded", "limit": 2}
            if cursor is not None:
                params["cursor"] = cursor
            body = c.get("/api/civitai/models", params=params).json()
            seen += [m["id"] for m in body["items"]]
            pages += 1
            cursor = body["nextCursor"]
            if cursor is None:
                break
    assert seen == [20, 21, 22, 23, 24] and pages == 3
    assert [q.get("cursor") for q in searches(civitai)] == [None, ["2|5|fake"], ["4|5|fake"]]


def test_the_cursor_is_taken_from_next_page_when_civitai_gives_only_that():
    from sources.civitai import next_cursor  # the pure function under test

    page = (
        "https://api.civitai.com/api/v1/models?limit=10&page=1&sort=Highest%20Rated"
        "&types=Checkpoint&cursor=22138%7C364671%7C25494"
    )
    assert next_cursor({"nextPage": page}) == "22138|364671|25494"
    assert next_cursor({"nextCursor": "1|2|3", "nextPage": page}) == "1|2|3"
    assert next_cursor({"currentPage": 1, "pageSize": 100}) is None


def test_the_same_search_is_answered_from_the_cache_without_asking_civitai(civitai, daemon):
    recorded(civitai, VSK)
    add_lora(civitai, 31, "Cached Lora", downloads=5)
    d = daemon()
    with d.client() as c:
        first = c.get("/api/civitai/models", params={"types": ["LORA", "Checkpoint"]}).json()
        asked = len(searches(civitai))
        again = c.get("/api/civitai/models", params={"types": ["checkpoint", "LORA"]}).json()
        other = c.get("/api/civitai/models", params={"types": "LORA", "limit": 1}).json()
    assert first["cached"] is False and again["cached"] is True and other["cached"] is False
    assert again["items"] == first["items"] and [m["id"] for m in first["items"]] == [31, 11821]
    assert asked == 1 and len(searches(civitai)) == 2  # only the other search reached Civitai


EXPIRING = (
    "import runpy, sys; sys.argv = sys.argv[2:]; from sources import browse; "
    "browse.CACHE_TTL = 1.5; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def test_a_cached_answer_expires_and_civitai_is_asked_again(civitai, daemon):
    add_lora(civitai, 41, "Expiring", downloads=1)
    d = daemon(wrap=[sys.executable, "-c", EXPIRING])  # the daemon with a 1.5 s cache
    with d.client() as c:
        assert c.get("/api/civitai/models").json()["cached"] is False
        fresh = wait_for(
            lambda: c.get("/api/civitai/models").json()["cached"] is False or None,
            timeout=20,
            interval=0.2,
            what="the cached answer to expire",
        )
    assert fresh and len(searches(civitai)) == 2


def test_nsfw_models_are_hidden_by_civitai_and_again_by_the_daemon_until_show_nsfw(civitai, daemon):
    recorded(civitai, VSK)
    add_lora(civitai, 51, "Safe one", downloads=1)
    add_lora(civitai, 52, "Spicy one", downloads=2, nsfw=True)
    civitai.leak_nsfw = True  # Civitai sends it although asked with nsfw=false
    d = daemon()
    with d.client() as c:
        assert c.get("/api/settings").json()["settings"]["show_nsfw"] is False
        hidden = c.get("/api/civitai/models").json()
        changed = c.patch("/api/settings", json={"show_nsfw": True})
        assert changed.status_code == 200, changed.text
        assert changed.json()["changed"] == ["show_nsfw"]
        shown = c.get("/api/civitai/models").json()
    assert [m["id"] for m in hidden["items"]] == [51, 11821]  # by thumbs up: 999, 385
    assert [m["id"] for m in shown["items"]] == [51, 52, 11821] and not shown["cached"]
    assert [q["nsfw"] for q in searches(civitai)] == [["false"], ["true"]]
    # The cover of a model not marked NSFW is its first safe image unless NSFW is shown.
    assert hidden["items"][1]["image"]["url"].endswith("/width=1024/1743620.jpeg")  # level 1
    assert shown["items"][2]["image"]["url"].endswith("/width=1024/1743604.jpeg")  # level 4


ERRORS = [  # Civitai's answer (a fault of the fake) → the daemon's status and sentence
    (
        {"status": 429, "retry_after": 7},
        429,
        "Civitai is rate limiting searches (429); search again in 7 s.",
    ),
    ({"status": 502, "times": 2}, 503, "Civitai answered with a server error (502)"),
    (
        {"html": True, "times": 2},
        503,
        "Civitai sent an HTML page instead of data (it is probably overloaded or behind a check)",
    ),
    (
        {"status": 400, "body": b'{"error": {"issues": [{"message": "Invalid baseModels"}]}}'},
        422,
        "Civitai refused the search: Civitai answered 400: Invalid baseModels",
    ),
]


def test_civitais_errors_become_the_daemons_one_error_shape(civitai, daemon):
    d = daemon()
    with d.client() as c:
        for n, (fault, status, said) in enumerate(ERRORS):
            civitai.fault("api", **fault)
            r = c.get("/api/civitai/models", params={"query": f"search {n}"})
            after = c.get("/api/civitai/models", params={"query": f"search {n}"})
            assert (r.status_code, r.json()) == (status, {"detail": said}), fault
            assert r.headers.get("retry-after") == ("7" if status == 429 else None)
            assert (after.status_code, after.json()["cached"]) == (200, False)  # not cached
        # A cursor Civitai cannot read (schemathesis sent control characters): Civitai's 400 is
        # the search's fault, a 422, not a server error.
        r = c.get("/api/civitai/models", params={"cursor": "\x0cBb\x1d"})
        assert (r.status_code, r.json()) == (
            422,
            {"detail": "Civitai refused the search: Civitai answered 400: Invalid cursor"},
        )


def test_downloaded_and_queued_versions_are_marked_and_a_viewer_may_browse(civitai, daemon):
    civitai.add_model(
        61,
        "Two versions",
        "LORA",
        [
            civitai.version(611, [b"done bytes" * 100]),
            civitai.version(612, [b"slow bytes" * 10_000]),
        ],
    )
    add_lora(civitai, 62, "Untouched", downloads=0)
    d = daemon(workers=1, viewer_token="viewer-key-0123456789abcdef")
    run_job(d, {"modelVersionId": 611})
    with d.client() as c:
        before = c.get("/api/civitai/models").json()
        civitai.default_rate = 2000  # the second version downloads for a minute
        job = c.post("/api/download", json={"modelVersionId": 612}).json()
        wait_job(c, job["id"], statuses=("downloading",))
        during = c.get("/api/civitai/models").json()
        c.post(f"/api/jobs/{job['id']}/cancel")
    civitai.default_rate = None
    viewer = httpx.get(
        d.url("/api/civitai/models"),
        headers={"Authorization": "Bearer viewer-key-0123456789abcdef"},
    )

    def states(body):
        return {m["id"]: (m["state"], [v["state"] for v in m["versions"]]) for m in body["items"]}

    assert states(before) == {61: ("downloaded", ["downloaded", None]), 62: (None, [None])}
    assert during["cached"] is True  # the marks are fresh on a cached answer
    assert states(during) == {61: ("queued", ["downloaded", "queued"]), 62: (None, [None])}
    assert viewer.status_code == 200 and states(viewer.json())[62] == (None, [None])


def test_a_search_naming_a_hundred_types_asks_civitai_each_type_once_and_is_cached_in_any_order(
    civitai, daemon
):
    from sources.browse import TYPES

    add_lora(civitai, 11, "Alpha Style", downloads=10)
    hundred = [TYPES[i % len(TYPES)] for i in range(100)]
    mixed = [t.lower() if i % 2 else f" {t.upper()} " for i, t in enumerate(hundred)]
    d = daemon()
    with d.client() as c:
        first = c.get("/api/civitai/models", params={"types": hundred, "baseModels": ["SDXL 1.0"]})
        again = c.get(
            "/api/civitai/models",
            params={"types": list(reversed(mixed)), "baseModels": [" SDXL 1.0", "SDXL 1.0 "] * 50},
        )
        bad = c.get("/api/civitai/models", params={"types": [*hundred, "Nope"] * 3})
    assert first.status_code == 200, first.text
    assert [m["id"] for m in first.json()["items"]] == [11] and not first.json()["cached"]
    assert (again.status_code, again.json()["cached"]) == (200, True)  # the same search
    assert again.json()["items"] == first.json()["items"]
    (asked,) = searches(civitai)
    assert sorted(asked["types"]) == sorted(TYPES) and asked["baseModels"] == ["SDXL 1.0"]
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("types: 'Nope' is not a Civitai model type")


def test_the_state_of_a_page_s_model_is_told_from_its_ids(civitai, daemon):
    """GET /api/civitai/state (the browser extension's badge, issue 25)."""
    old = civitai.file(b"o" * 10_000, name="s-old.safetensors")
    new = civitai.file(b"n" * 10_000, name="s-new.safetensors")
    civitai.add_model(
        3, "Model 3", "LORA", [civitai.version(32, [new]), civitai.version(31, [old])]
    )
    civitai.add_simple(5, 51, b"f" * 10_000, filename="five.safetensors")
    d = daemon()
    run_job(d, {"modelVersionId": 31})
    with d.client() as c:
        models_asked = len(civitai.requests_to("api", "/api/v1/models/"))
        state = c.get("/api/civitai/state?modelId=3&modelVersionId=31").json()
        assert state["state"] == "downloaded" and state["downloaded_versions"] == [31]
        # Held and named: Civitai is not asked.
        assert len(civitai.requests_to("api", "/api/v1/models/")) == models_asked
        assert c.get("/api/civitai/state?modelId=3").json() | {"downloaded_versions": None} == {
            "modelId": 3,
            "modelVersionId": 32,
            "state": "update available",
            "downloaded_versions": None,
            "newest_version_id": 32,
        }
        assert c.get("/api/civitai/state?modelVersionId=32").json()["state"] == "update available"
        assert c.get("/api/civitai/state?modelId=5").json()["state"] is None
        missing = c.get("/api/civitai/state")
        assert missing.status_code == 422
        assert missing.json() == {
            "detail": "Give a modelId or a modelVersionId (from the page's URL)"
        }
        assert c.get("/api/civitai/state?modelId=-1").status_code == 422
    d.stop()
