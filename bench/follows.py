"""The follows benchmark (issue 28): 200 follows and 5,000 tracked models checked against the fake
Civitai, in this process (as bench/run.py's update-check scenario), over real HTTP on loopback.

    .venv/bin/python bench/follows.py [--follows 200] [--tracked 5000] [--per-creator 3]

Three whole checks (the tracked models, then every follow), each timed and its requests counted
by the check and by the fake: the first (every follow walks its creator's listing and records
what exists; one tracked model in 500 has a new version), one with nothing new anywhere (the
daily case: at most 2 requests a follow), and one after one creator in 10 published a model and
another tracked model in 500 a version. Prints a Markdown table and the targets (≤ 2 requests a
follow with nothing new; a whole check ≤ 30 s) and writes bench/results/follows.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from config.settings import Settings  # noqa: E402
from daemon import DownloadQueue  # noqa: E402
from database import Store, utcnow  # noqa: E402
from events import EventBus  # noqa: E402
from sources.civitai import CivitaiClient  # noqa: E402
from tests.fake_civitai import FakeCivitai  # noqa: E402
from updater.checker import check_updates  # noqa: E402
from updater.context import CheckContext, CheckResult  # noqa: E402
from updater.follow_rules import FollowRule, FollowStore  # noqa: E402
from updater.follows import check_follows  # noqa: E402

TRACKED, CREATORS = 100_000, 500_000  # first model ids of each kind
LATER = "2026-06-01T10:00:00.000Z"


def catalogue(fake: FakeCivitai, tracked: int, follows: int, per_creator: int) -> list[dict]:
    """The tracked models (one version each) and each creator's models; the manifest."""
    entries = []
    for i in range(tracked):
        fake.add_simple(TRACKED + i, 200_000 + i, b"x", filename=f"u{i}.safetensors")
        entries.append(
            {"modelId": TRACKED + i, "modelVersionId": 200_000 + i, "model_type": "lora"}
        )
    for c in range(follows):
        for k in range(per_creator):
            model_id = CREATORS + c * per_creator + k
            version = fake.version(model_id * 10, [b"c"], published_at="2025-05-19T02:43:46.31")
            fake.add_model(model_id, f"Model {model_id}", "LORA", [version], creator=f"maker{c:03}")
    return entries


def publish(fake: FakeCivitai, tracked: int, follows: int, round_: int) -> None:
    """One tracked model in 500 gets a version; (after the first) one creator in 10 a model."""
    for i in range(round_ * 7 % 500, tracked, 500):
        fake.publish_version(TRACKED + i, fake.version(300_000 + round_ * 10_000 + i, [b"new"]))
    if round_ == 0:
        return
    for c in range(0, follows, 10):
        model_id = 900_000 + round_ * 1_000 + c
        version = fake.version(model_id * 10, [b"n"], published_at=LATER)
        fake.add_model(model_id, f"New {model_id}", "LORA", [version], creator=f"maker{c:03}")


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with FakeCivitai() as fake:
        entries = catalogue(fake, args.tracked, args.follows, args.per_creator)
        home = Path(tempfile.mkdtemp(prefix="bench-follows-", dir=os.environ.get("BENCH_TMP")))
        (home / "manifest.json").write_text(json.dumps(entries))
        settings = Settings(home=home, civitai_base_url=fake.base_url)
        store = Store(home / "data" / "completed.db")
        await store.open()
        try:
            follows = FollowStore(store)
            for c in range(args.follows):
                rule = FollowRule(username=f"maker{c:03}", mode="download")
                await follows.add(rule)
            async with httpx.AsyncClient(timeout=60) as http:
                civitai = CivitaiClient(settings, http)
                queue = DownloadQueue(settings, store, EventBus(), civitai, http)  # not started
                for round_, what in enumerate(("first check", "nothing new", "new models")):
                    if round_ != 1:
                        publish(fake, args.tracked, args.follows, round_)
                    asked = len(fake.requests)
                    started = time.perf_counter()
                    result = CheckResult(started_at=utcnow())
                    ctx = CheckContext(
                        settings, store, civitai, queue, EventBus(), asyncio.Lock(), result
                    )
                    await check_updates(ctx)
                    tracked_requests = result.requests
                    found = await check_follows(ctx)
                    wall = time.perf_counter() - started
                    per_follow = [f["requests"] for f in found if "requests" in f]
                    rows.append(
                        {
                            "check": what,
                            "wall_s": wall,
                            "requests": result.requests,
                            "fake_saw": len(fake.requests) - asked,
                            "tracked_requests": tracked_requests,
                            "follow_requests": sum(per_follow),
                            "most_per_follow": max(per_follow, default=0),
                            "updates": len(result.updates),
                            "new_models": sum(len(f.get("new") or []) for f in found),
                            "errors": len(result.errors),
                        }
                    )
        finally:
            await store.close()
            shutil.rmtree(home, ignore_errors=True)
    return rows


def report(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    quiet = rows[1]
    lines = [
        f"Follows benchmark: {args.follows} follows ({args.per_creator} models each), "
        f"{args.tracked} tracked models; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, {utcnow()}",
        "",
        "| check | wall | requests (fake saw) | tracked | follows | most a follow | "
        "updates | new models | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['check']} | {r['wall_s']:.2f} s | {r['requests']} ({r['fake_saw']}) | "
        f"{r['tracked_requests']} | {r['follow_requests']} | {r['most_per_follow']} | "
        f"{r['updates']} | {r['new_models']} | {r['errors']} |"
        for r in rows
    ]
    slowest = max(r["wall_s"] for r in rows)
    lines += [
        "",
        f"- target ≤ 2 requests a follow with nothing new: "
        f"{'met' if quiet['most_per_follow'] <= 2 else 'MISSED'} ({quiet['most_per_follow']})",
        f"- target a whole check ≤ 30 s: {'met' if slowest <= 30 else 'MISSED'} "
        f"(slowest {slowest:.2f} s)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--follows", type=int, default=200)
    parser.add_argument("--tracked", type=int, default=5000)
    parser.add_argument("--per-creator", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "follows.md")
    args = parser.parse_args()
    text = report(args, asyncio.run(run(args)))
    print(text)  # noqa: T201
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
