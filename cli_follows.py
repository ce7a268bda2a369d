"""The command line's follows (issue 28): `follow` (the dry-run table, then saved), `follows`
(the rules and what their last check found; --check runs them) and `unfollow`."""

from __future__ import annotations

import argparse
from typing import Any

from config.sizes import human_bytes
from web.client import CliError, Daemon, call

STATES = {
    "new": "would be taken",
    "existing": "seen, not taken",
    "held": "early access",
    "filtered": "left out",
    "unavailable": "nothing to download",
}


def item_rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            i.get("modelId"),
            i.get("name"),
            i.get("versionName") or "",
            i.get("filename") or "",
            human_bytes(i["size"]) if i.get("size") is not None else "",
            i.get("folder") or "",
            STATES.get(i["state"], i["state"])
            + (f" until {i['until']}" if i.get("until") else "")
            + (f": {i['problem']}" if i.get("problem") else ""),
        ]
        for i in items
    ]


ITEM_HEADERS = ["MODEL", "NAME", "VERSION", "FILE", "SIZE", "FOLDER", "STATE"]


def rule_of(args: argparse.Namespace) -> dict[str, Any]:
    given = [k for k in ("user", "query", "tag") if getattr(args, k) is not None]
    if len(given) != 1:
        raise CliError("Follow one of --user NAME, --query WORDS or --tag TAG")
    rule: dict[str, Any] = {
        {"user": "username"}.get(given[0], given[0]): getattr(args, given[0]),
        "mode": args.mode,
        "track": args.track,
        "nsfw": args.nsfw,
        "backlog": "take" if args.take_existing else "skip",
    }
    for key, value in (
        ("types", args.type),
        ("baseModels", args.base),
        ("sort", args.sort),
        ("period", args.period),
        ("max_size", args.max_size),
    ):
        if value:
            rule[key] = value
    return rule


def follow(c: Daemon, args: argparse.Namespace, table: Any, ask: Any) -> tuple[Any, str]:
    """The dry run's table, then (with --yes, or a "y" to the question) the follow saved."""
    rule = rule_of(args)
    preview = call(c, "POST", "/api/follows", params={"dry_run": "true"}, json=rule)
    items = preview["items"]
    text = table(item_rows(items), ITEM_HEADERS) if items else "Nothing listed now."
    new = sum(i["state"] == "new" for i in items)
    text += f"\n{preview['title']}: {preview['listed']} listed, {new} would be taken now."
    if args.dry_run:
        return preview, text
    if not args.yes:
        if args.json:
            return preview, ""  # scripts read the dry run, then save with --yes
        if not ask(text, f"Follow {preview['title']} ({args.mode})? [y/N] "):
            return preview, "Not followed (--yes follows without asking)."
        text = ""
    made = call(c, "POST", "/api/follows", json=rule)
    saved = f"Following {made['title']} as follow {made['id']} ({made['mode']})."
    return made, (text + "\n" if text else "") + saved


def found_line(result: dict[str, Any] | None) -> str:
    if not result:
        return "not checked yet"
    if result.get("error"):
        return f"error: {result['error']}"
    new, held = len(result.get("new") or []), len(result.get("held") or [])
    return f"{new} new, {held} held" + (f"; {result['gap']}" if result.get("gap") else "")


def follows(c: Daemon, args: argparse.Namespace, table: Any) -> tuple[Any, str]:
    """The follows, or (--check) each checked now with what it found."""
    if args.check:
        rows = call(c, "GET", "/api/follows")["follows"]
        results = [call(c, "POST", f"/api/follows/{r['id']}/check") for r in rows]
        lines = [f"{r['title']}: {found_line(r)}" for r in results]
        for r in results:
            lines += [
                f"  {i['state']}: {i.get('name')}"
                + (f" (job {i['job_id']})" if i.get("job_id") else "")
                for i in r["new"]
            ]
        return {"results": results}, "\n".join(lines) or "No follows."
    data = call(c, "GET", "/api/follows")
    rows = [
        [
            f["id"],
            f["title"],
            f["mode"] + (" +track" if f["track"] else ""),
            f.get("last_check") or "never",
            found_line(f.get("last_result")),
        ]
        for f in data["follows"]
    ]
    return data, table(rows, ["ID", "FOLLOWS", "MODE", "LAST CHECK", "FOUND"]) if rows else (
        "No follows. ./civitai follow --user NAME follows a creator."
    )


def unfollow(c: Daemon, follow_id: int) -> tuple[Any, str]:
    data = call(c, "DELETE", f"/api/follows/{follow_id}")
    return data, f"Follow {follow_id} removed; what it queued or downloaded stays."


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    f = sub.add_parser(
        "follow",
        parents=[common],
        help="follow a creator, a search or a tag: the dry run, then saved",
    )
    f.add_argument("--user", help="a Civitai creator, as in civitai.com/user/<name>")
    f.add_argument("--query", help="a search's words (with --type/--base/--sort/--period)")
    f.add_argument("--tag", help="a Civitai tag")
    f.add_argument("--type", action="append", help="only this type (LORA, Checkpoint…); repeatable")
    f.add_argument("--base", action="append", help='only this base model ("SDXL 1.0"); repeatable')
    f.add_argument("--sort", help="the search's sort (checks always walk Newest)")
    f.add_argument("--period", help="the search's period: AllTime, Year, Month, Week, Day")
    f.add_argument("--mode", choices=["notify", "download"], default="notify")
    f.add_argument("--track", action="store_true", help="track each download for updates")
    f.add_argument("--max-size", type=int, help="leave out models whose file is larger (bytes)")
    f.add_argument("--nsfw", action="store_true", help="NSFW models too (needs show_nsfw)")
    f.add_argument(
        "--take-existing", action="store_true", help="the first check takes what exists now too"
    )
    f.add_argument("--dry-run", action="store_true", help="show the table, save nothing")
    f.add_argument("--yes", action="store_true", help="save without asking")
    fs = sub.add_parser("follows", parents=[common], help="the follows; --check runs them now")
    fs.add_argument("--check", action="store_true")
    un = sub.add_parser("unfollow", parents=[common], help="stop following (files stay)")
    un.add_argument("id", type=int)
