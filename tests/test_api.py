"""The REST API as scripts use it: batches, bad input, one error shape, metrics, webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from tests.conftest import wait_for, wait_job
from tests.receiver import Receiver


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_bad_input_gets_a_clear_4xx_in_one_shape(civitai, daemon):
    civitai.add_simple(1, 10, b"x")
    d = daemon()
    with d.client() as c:
        cases = [
            (
                c.post(
                    "/api/download",
                    content=b"{not json",
                    headers={"Content-Type": "application/json"},
                ),
                422,
                "not valid JSON",
            ),
            (
                c.post("/api/download", json={"url": "https://example.com/a.safetensors"}),
                422,
                "model_type is required for https://example.com/a.safetensors",
            ),
            (
                c.post("/api/download", json={"model_type": "lora"}),
                422,
                "one of modelVersionId, modelId or url",
            ),
            (
                c.post("/api/download", json={"model_type": "lora", "modelVersionId": "ten"}),
                422,
                "modelVersionId",
            ),
            (
                c.post("/api/download", json={"model_type": "lora", "modelVersionId": 999}),
                404,
                "No model version 999 on Civitai",
            ),
            (
                c.post("/api/download", json={"model_type": "lora", "modelId": 777}),
                404,
                "No model 777 on Civitai",
            ),
            (
                c.post(
                    "/api/download", json={"model_type": "lora", "modelVersionId": 10, "fileId": 5}
                ),
                404,
                "has no file 5",
            ),
            (
                c.post(
                    "/api/download",
                    json={"model_type": "lora", "url": "https://civitai.com/images/5"},
                ),
                422,
                "not a Civitai model page",
            ),
            (
                c.post("/api/download", json={"model_type": "lora", "url": "ftp://x"}),
                422,
                "http:// or https://",
            ),
            (
                c.post(
                    "/api/download",
                    json={"model_type": "lora", "modelVersionId": 10, "sha256": "xyz"},
                ),
                422,
                "64 hexadecimal",
            ),
            (c.post("/api/download", json=[1, 2]), 422, "valid dictionary"),
            (c.get("/api/jobs/12345"), 404, "No job 12345"),
            (c.get("/api/jobs/abc"), 422, "job_id"),
            (c.get("/api/jobs?status=weird"), 422, "status must be one of"),
            (c.get("/api/jobs?limit=0"), 422, "limit"),
            (c.post("/api/jobs/12345/cancel"), 404, "No job 12345"),
            (c.post("/api/jobs/12345/retry"), 404, "No job 12345"),
            (
                c.post("/api/batch", content=b"{}", headers={"Content-Type": "application/json"}),
                422,
                "JSON array",
            ),
            (
                c.post("/api/batch", content=b"nope", headers={"Content-Type": "application/json"}),
                422,
                "not valid JSON",
            ),
        ]
        for response, status, text in cases:
            assert response.status_code == status, (response.request.url, response.text)
            body = response.json()
            assert set(body) >= {"detail"} and isinstance(body["detail"], str)
            assert text in body["detail"], (text, body)
        assert c.get("/api/jobs").json()["total"] == 0  # nothing was queued by any of it
    d.stop()


def test_batch_json_array_queues_good_entries_and_reports_bad_ones_by_index(civitai, daemon):
    civitai.add_simple(1, 10, b"a" * 1000, filename="a.safetensors")
    civitai.add_simple(2, 20, b"b" * 1000, filename="b.safetensors")
    d = daemon()
    with d.client() as c:
        r = c.post(
            "/api/batch",
            json=[
                {"modelVersionId": 10, "model_type": "lora"},
                {"url": "https://example.com/b.safetensors"},  # off Civitai, without model_type
                "not an object",
                {"modelVersionId": 404404, "model_type": "lora"},
                {"modelId": 2, "model_type": "vae", "priority": 1},
            ],
        )
        assert r.status_code == 202
        body = r.json()
        # Accepted before Civitai is asked: the jobs are as requested, in the order given.
        assert [(j["modelVersionId"], j["modelId"]) for j in body["jobs"]] == [
            (10, None),
            (404404, None),
            (None, 2),
        ]
        assert [e["index"] for e in body["errors"]] == [1, 2]
        assert "model_type" in body["errors"][0]["detail"]
        assert "object" in body["errors"][1]["detail"]
        # Civitai's "no" for an entry fails that job, with the sentence.
        failed = wait_job(c, body["jobs"][1]["id"], ("failed",))
        assert failed["error"] == "No model version 404404 on Civitai"
        done = [wait_job(c, body["jobs"][i]["id"]) for i in (0, 2)]
        assert [j["modelVersionId"] for j in done] == [10, 20]
        none = c.post("/api/batch", json=[{"model_type": "lora"}])
        assert none.status_code == 422 and none.json()["errors"][0]["index"] == 0
        assert c.post("/api/batch", json=[]).status_code == 422
    d.stop()


def test_multipart_manifest_upload(civitai, daemon, home):
    civitai.add_simple(1, 10, b"a" * 1000, filename="a.safetensors")
    manifest = [
        {"modelId": 1, "model_type": "lora", "sha256": hashlib.sha256(b"a" * 1000).hexdigest()},
        {"url": "https://huggingface.co/x/y/resolve/main/a.safetensors"},  # no model_type
    ]
    d = daemon()
    with d.client() as c:
        r = c.post(
            "/api/batch",
            files={"file": ("manifest.json", json.dumps(manifest).encode(), "application/json")},
        )
        assert r.status_code == 202, r.text
        body = r.json()
        assert len(body["jobs"]) == 1 and body["errors"] == [
            {
                "index": 1,
                "detail": "model_type is required for "
                "https://huggingface.co/x/y/resolve/main/a.safetensors: it is not on Civitai, so "
                "the folder cannot be taken from Civitai. Give model_type, e.g. 'lora', "
                "'checkpoint' or 'vae'.",
            }
        ]
        wait_job(c, body["jobs"][0]["id"])
        bad = c.post("/api/batch", files={"file": ("m.json", b"[{", "application/json")})
        assert bad.status_code == 422 and "m.json" in bad.json()["detail"]
        wrong_field = c.post("/api/batch", files={"other": ("m.json", b"[]", "application/json")})
        assert wrong_field.status_code == 422 and "'file'" in wrong_field.json()["detail"]
    assert (home / "data/models/lora/a.safetensors").exists()
    d.stop()


def test_list_filter_and_metrics(civitai, daemon):
    civitai.add_simple(1, 10, b"a" * 10_000, filename="a.safetensors")
    civitai.add_simple(2, 20, b"b", login_required=True)
    d = daemon()
    with d.client() as c:
        ok = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        bad = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"}).json()
        wait_job(c, ok["id"])
        wait_job(c, bad["id"], ("failed",))
        assert [j["id"] for j in c.get("/api/jobs?status=failed").json()["jobs"]] == [bad["id"]]
        page = c.get("/api/jobs?limit=1&offset=1").json()
        assert page["total"] == 2 and [j["id"] for j in page["jobs"]] == [ok["id"]]
        m = c.get("/api/metrics").json()
    assert m["jobs_by_status"] == {"completed": 1, "failed": 1}
    assert m["bytes_downloaded"] == 10_000 and m["failures"] == 1 and m["queue_length"] == 0
    assert m["bytes_fetched_since_start"] == 10_000
    assert m["average_speed_bps"] > 0
    d.stop()


def verify(secret: str, received) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(received.headers["x-signature-256"], expected)


def test_webhooks_are_signed_and_retried_until_delivered(civitai, daemon):
    civitai.add_simple(1, 10, b"a" * 1000, filename="a.safetensors")
    civitai.add_simple(2, 20, b"b", login_required=True)
    hook = Receiver(fail_first=2).start()
    try:
        d = daemon(webhook_url=hook.url + "/hook", webhook_secret="hook-secret")
        with d.client() as c:
            ok = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
            bad = c.post("/api/download", json={"modelVersionId": 20, "model_type": "lora"}).json()
            wait_job(c, ok["id"])
            wait_job(c, bad["id"], ("failed",))
            wait_for(lambda: len(hook.received) == 2, 20, what="both webhooks")
            metrics = c.get("/api/metrics").json()
        events = {r.json["event"]: r for r in hook.received}
        assert set(events) == {"download.completed", "download.failed"}
        for r in hook.received:
            assert verify("hook-secret", r)  # over the body alone, as SPEC §9 says
            assert r.json["timestamp"].endswith("Z")
            assert abs(int(r.headers["x-timestamp"]) - time.time()) < 300
        assert len({r.headers["x-delivery-id"] for r in hook.received}) == 2
        assert events["download.completed"].json["job"]["id"] == ok["id"]
        assert (
            events["download.completed"].json["job"]["sha256"]
            == hashlib.sha256(b"a" * 1000).hexdigest()
        )
        assert "Civitai login" in events["download.failed"].json["job"]["error"]
        assert hook.attempts >= 4 and metrics["webhooks_delivered"] == 2
        assert "hook-secret" not in json.dumps([r.json for r in hook.received])
        d.stop()
    finally:
        hook.stop()


def test_a_dead_webhook_target_never_fails_a_download(civitai, daemon):
    civitai.add_simple(1, 10, b"a" * 1000)
    d = daemon(webhook_url="http://127.0.0.1:9/nothing-listens-here")
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        assert wait_job(c, job["id"])["status"] == "completed"
    d.stop()


def test_notify_targets_get_discord_and_telegram_messages(civitai, daemon, receiver):
    civitai.add_simple(1, 10, b"a" * 1000, filename="a.safetensors")
    d = daemon(
        notify=[
            {"type": "discord", "url": receiver.url + "/discord"},
            {
                "type": "telegram",
                "bot_token": "123:bot-secret",
                "chat_id": 42,
                "api_base": receiver.url,
            },
        ]
    )
    with d.client() as c:
        job = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_job(c, job["id"])
    wait_for(lambda: len(receiver.received) == 2, 10, what="two notifications")
    by_path = {r.path: r.json for r in receiver.received}
    discord = by_path["/discord"]
    assert discord["embeds"][0]["title"] == "Downloaded a.safetensors"
    telegram = by_path["/bot123:bot-secret/sendMessage"]
    assert telegram["chat_id"] == 42 and "Downloaded a.safetensors" in telegram["text"]
    d.stop()
    assert "bot-secret" not in (d.home / "logs" / "download.log").read_text()


def test_batch_and_webhook_answer_a_completed_file_as_a_duplicate(civitai, daemon):
    civitai.add_simple(1, 10, b"a" * 1000, filename="a.safetensors")
    civitai.add_simple(2, 20, b"b" * 1000, filename="b.safetensors")
    civitai.add_simple(3, 30, b"c" * 1000, filename="c.safetensors")
    d = daemon()
    with d.client() as c:
        first = c.post("/api/download", json={"modelVersionId": 10, "model_type": "lora"}).json()
        wait_job(c, first["id"])
        hits = len(civitai.requests_to("api", "/api/download/models"))
        batch = c.post(
            "/api/batch",
            json=[
                {"modelVersionId": 10, "model_type": "lora"},
                {"modelVersionId": 20, "model_type": "lora"},
            ],
        ).json()
        assert [(j["id"] == first["id"], j["duplicate"]) for j in batch["jobs"]] == [
            (True, True),
            (False, False),
        ]
        assert batch["jobs"][0]["status"] == "completed"
        hook = c.post(
            "/webhook",
            json=[
                {"modelVersionId": 10, "model_type": "lora"},
                {"modelVersionId": 30, "model_type": "lora"},
            ],
        ).json()
        assert [(j["id"] == first["id"], j["duplicate"]) for j in hook["jobs"]] == [
            (True, True),
            (False, False),
        ]
        for job in (batch["jobs"][1], hook["jobs"][1]):
            wait_job(c, job["id"])
        assert c.get("/api/jobs").json()["total"] == 3
    # Only the two new files were fetched from the download endpoint.
    assert len(civitai.requests_to("api", "/api/download/models")) == hits + 2
    d.stop()


STRICT_CASES = [
    ({"model_type": "lora", "modelVersionId": True}, "modelVersionId", "true"),
    ({"model_type": "lora", "modelVersionId": "2011"}, "modelVersionId", '"2011"'),
    ({"model_type": "lora", "modelId": True}, "modelId", "true"),
    ({"model_type": "lora", "modelId": "1"}, "modelId", '"1"'),
    ({"model_type": "lora", "modelVersionId": 2011, "fileId": False}, "fileId", "false"),
    ({"model_type": "lora", "modelVersionId": 2011, "fileId": "7"}, "fileId", '"7"'),
    ({"model_type": "lora", "modelVersionId": 2011, "priority": True}, "priority", "true"),
    ({"model_type": "lora", "modelVersionId": 2011, "priority": "1"}, "priority", '"1"'),
]


def test_ids_and_priority_must_be_json_integers_not_booleans_or_strings(civitai, daemon):
    civitai.add_simple(1, 2011, b"x" * 100)
    d = daemon()
    with d.client() as c:
        for body, field, given in STRICT_CASES:
            r = c.post("/api/download", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json() == {"detail": f"{field}: must be an integer such as 123, not {given}"}
        batch = c.post("/api/batch", json=[body for body, _, _ in STRICT_CASES])
        assert batch.status_code == 422
        assert batch.json()["errors"] == [
            {"index": i, "detail": f"{field}: must be an integer such as 123, not {given}"}
            for i, (_, field, given) in enumerate(STRICT_CASES)
        ]
        assert c.get("/api/jobs").json()["total"] == 0  # `true` was not queued as version 1
    d.stop()


def test_the_manifest_loader_refuses_the_same_entries_by_index():
    from library.manifest import parse_entries

    good, bad = parse_entries(
        [body for body, _, _ in STRICT_CASES] + [{"modelId": 1, "model_type": "lora"}]
    )
    assert [(i, r.modelId) for i, r in good] == [(len(STRICT_CASES), 1)]
    assert [(p.index, p.detail) for p in bad] == [
        (i, f"{field}: must be an integer such as 123, not {given}")
        for i, (_, field, given) in enumerate(STRICT_CASES)
    ]
