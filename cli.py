"""Command line for a running daemon: finds it through its home (data/daemon.json, else
active_port in config.json) and takes the key from config.json.

    ./civitai status
    ./civitai list [--status failed]
    ./civitai add "https://civitai.com/models/4384?modelVersionId=128713" --type checkpoint
    ./civitai add --version 128713 --file-id 131226 --type checkpoint
    ./civitai add --model 4384 --track       (type from Civitai; tracked for updates once verified)
    ./civitai cancel 12 · retry 12 [--force] · pause 12 · resume 12 · priority 12 1|top
    ./civitai add urn:air:sdxl:lora:civitai:328553@368189     (a Civitai AIR)
    ./civitai bulk USERNAME [--type LORA] [--yes] [--track]   (a creator's models: preview, ask)
    ./civitai follow --user NAME [--mode download] [--yes]   (follow a creator: dry run, save)
    ./civitai follows [--check] · unfollow 3                  (the follows; check them now)
    ./civitai completed · updates [--check] · scan · url · key
    ./civitai export [FILE] · import FILE [--dry-run]   (the library, to another machine)
Every command takes --json (for scripts), --home DIR and --url URL (or $CIVITAI_DAEMON_URL;
$CIVITAI_DAEMON_TOKEN overrides the key). The key goes only to a daemon that first proves it
holds it (daemon_client.py). No daemon found, or none that proves it: exit code 3.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import cli_follows
from config.daemon_record import is_loopback as is_loopback  # tests and scripts import it from here
from config.sizes import human_bytes
from web.client import CliError, Daemon, NoDaemon, call, connect, one_line

EXIT_NO_DAEMON = 3


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # keeps newlines and tabs


def printable(value: Any, lines: bool = False) -> str:
    """Text from the daemon or Civitai (names, errors), with control characters, which could
    drive the terminal (escape sequences), shown as ?."""
    return (_ESCAPES if lines else _CONTROL).sub("?", str(value))


def table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [[printable(c if c is not None else "-") for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def job_rows(jobs: list[dict[str, Any]]) -> str:
    rows = []
    for j in jobs:
        pct = f"{100 * j['bytes_done'] // j['bytes_total']}%" if j.get("bytes_total") else "-"
        rows.append(
            [
                j["id"],
                j["status"],
                j["model_type"],
                j.get("filename"),
                pct,
                human_bytes(j.get("bytes_total")),
                j.get("error") or "",
            ]
        )
    return (
        table(rows, ["ID", "STATUS", "TYPE", "FILE", "DONE", "SIZE", "ERROR"])
        if rows
        else "No jobs."
    )


UNTRACKED = "not tracked: download it from the GUI's Library (Update)"


def early_access_note(update: dict[str, Any]) -> str:
    """Why an update is not queued: its model's policy only lists updates, or its version is in
    early access (and until when)."""
    until = update.get("early_access_until")
    if update.get("policy") == "notify":
        return "listed only (policy notify)" + (f", early access until {until}" if until else "")
    return f"early access until {until}" if until else "early access"


def fetched(update: dict[str, Any]) -> str:
    if update.get("job_id") is not None:
        return f"job {update['job_id']}"
    if update.get("untracked"):
        return UNTRACKED
    if update.get("policy") == "notify":
        return early_access_note(update)
    return f"{early_access_note(update)}: queued by the first check after that"


def run(args: argparse.Namespace) -> tuple[Any, str]:
    """(data for --json, text for people)."""
    c = connect(args.home, args.daemon_url)
    cmd = args.command
    if cmd == "status":
        s = call(c, "GET", "/api/status")
        text = (
            f"Daemon {s['version']} at {c.client.base_url}, up {int(s['uptime_s'])} s, "
            f"{s['workers']} workers{', paused' if s['paused'] else ''}; {s['queued']} queued, "
            f"{len(s['active'])} active."
        )
        return s, text + ("\n" + job_rows(s["active"]) if s["active"] else "")
    if cmd == "url":
        call(c, "GET", "/api/health")  # scripts send the key there: only to a proven daemon
        url = str(c.client.base_url).rstrip("/")
        return {"url": url}, url
    if cmd == "key":
        return {"api_token": c.token}, c.token
    if cmd == "list":
        params = {"limit": args.limit} | ({"status": args.status} if args.status else {})
        data = call(c, "GET", "/api/jobs", params=params)
        return data, job_rows(data["jobs"])
    if cmd == "add":
        body: dict[str, Any] = {"priority": args.priority}
        if args.type:
            body["model_type"] = args.type
        if args.track:
            body["track"] = True
        if args.version:
            body["modelVersionId"] = args.version
        elif args.model:
            body["modelId"] = args.model
        elif args.url:
            body["url"] = args.url
        else:
            raise CliError("Give a URL, --version ID or --model ID")
        if args.file_id:
            body["fileId"] = args.file_id
        if args.filename:
            body["filename"] = args.filename
        job = call(c, "POST", "/api/download", json=body)
        where = job.get("path") or job["model_type"]
        return job, f"Job {job['id']} {job['status']}: {job.get('filename') or ''} → {where}"
    if cmd in ("cancel", "retry", "pause", "resume"):
        force = {"json": {"force": True}} if getattr(args, "force", False) else {}
        job = call(c, "POST", f"/api/jobs/{args.id}/{cmd}", **force)
        return job, f"Job {job['id']} is {job['status']}."
    if cmd == "priority":
        if args.priority == "top":
            change: dict[str, Any] = {"position": "top"}
        elif re.fullmatch(r"-?[0-9]+", args.priority):
            change = {"priority": int(args.priority)}
        else:
            raise CliError(f"The priority is a number from 0 to 100, or top; not {args.priority!r}")
        job = call(c, "PATCH", f"/api/jobs/{args.id}", json=change)
        return job, f"Job {job['id']} ({job['status']}) has priority {job['priority']}."
    if cmd == "completed":
        data = call(c, "GET", "/api/completed", params={"limit": args.limit})
        # The job id, which cancel and retry take (a file adopted by a scan has no job).
        rows = [
            [
                r.get("job_id"),
                r["model_type"],
                r["filename"],
                human_bytes(r["size"]),
                r["completed_at"],
                r["path"],
            ]
            for r in data["completed"]
        ]
        return data, table(
            rows, ["JOB", "TYPE", "FILE", "SIZE", "COMPLETED", "PATH"]
        ) if rows else "Nothing completed yet."
    if cmd == "updates":
        if args.check:
            r = call(c, "POST", "/api/updates/check")
            found = len(r["updates"])
            lines = [
                f"Checked {r['checked']} model(s) in {r['requests']} request(s): {found} update(s)."
            ]
            for u in r["updates"]:
                change = f"{u['old_version_id']} → {u['new_version_id']}"
                lines.append(
                    f"  model {u['modelId']} ({u.get('model_name')}): {change}, {fetched(u)}"
                )
            lines += [f"  problem: {e['detail']}" for e in r["errors"]]
            lines += [
                f"  {f['title']}: {cli_follows.found_line(f)}" for f in r.get("follows") or []
            ]
            return r, "\n".join(lines)
        data = call(c, "GET", "/api/updates")
        rows = [
            [
                u["modelId"],
                u.get("model_name"),
                u["old_version_id"],
                u["new_version_id"],
                u["found_at"],
                u.get("job_id") or (UNTRACKED if u.get("untracked") else early_access_note(u)),
            ]
            for u in data["updates"]
        ]
        text = (
            table(rows, ["MODEL", "NAME", "OLD", "NEW", "FOUND", "JOB"])
            if rows
            else "No updates found yet."
        )
        return data, text + f"\nNext check: {data['next_check'] or 'off'}"
    if cmd == "bulk":
        return bulk(c, args)
    if cmd == "scan":
        report = call(c, "POST", "/api/scan")
        while report["running"]:
            time.sleep(0.5)
            report = call(c, "GET", "/api/scan")
        adopted, unknown = len(report["matched"]), len(report["unknown"])
        lines = [f"{report['files']} file(s): {adopted} adopted, {unknown} not on Civitai."]
        lines += [
            f"  adopted {m['path']} (model {m['modelId']}, version {m['modelVersionId']})"
            for m in report["matched"]
        ]
        lines += [f"  unknown {p}" for p in report["unknown"]]
        return report, "\n".join(lines)
    if cmd == "workflow":
        return workflow(c, args.file, args.dry_run)
    if cmd == "follow":
        return cli_follows.follow(c, args, table, ask)
    if cmd == "follows":
        return cli_follows.follows(c, args, table)
    if cmd == "unfollow":
        return cli_follows.unfollow(c, args.id)
    if cmd == "export":
        data = call(c, "GET", "/api/library/export")
        text = json.dumps(data, indent=2)
        if args.file is None:
            return data, text
        try:
            Path(args.file).write_text(text + "\n")
        except OSError as exc:
            raise CliError(f"cannot write {args.file}: {exc.strerror or exc}") from None
        return data, f"{len(data['files'])} file(s) written to {args.file}."
    if cmd == "import":
        return import_library(c, args.file, args.dry_run)
    raise CliError(f"unknown command {cmd}")


def workflow(c: Daemon, file: str, dry_run: bool) -> tuple[Any, str]:
    """A ComfyUI workflow's models: present, queued (unless dry_run), or with no source."""
    try:
        content = Path(file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
    data = call(
        c,
        "POST",
        "/api/workflow",
        params={"dry_run": "true"} if dry_run else None,
        files={"file": (Path(file).name, content, "application/json")},
    )
    rows = [
        [m["status"], m["folder"], m["name"], m["job"] or m["path"] or m["detail"] or ""]
        for m in data["models"]
    ]
    n = data["summary"]
    text = table(rows, ["STATUS", "FOLDER", "NAME", "JOB / PATH / WHY"]) if rows else "No models."
    counts = ", ".join(
        f"{n[k]} {k}" for k in ("present", "queued", "to_queue", "no_source", "refused") if n[k]
    )
    return data, f"{text}\n{n['models']} model(s): {counts or 'none'}; {n['new_jobs']} new job(s)."


def import_library(c: Daemon, file: str, dry_run: bool) -> tuple[Any, str]:
    """An exported library: what is here, what is (or would be) downloaded, what cannot be."""
    try:
        body = json.loads(Path(file).read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {file} as JSON: {exc}") from None
    params = {"dry_run": "true"} if dry_run else None
    data = call(c, "POST", "/api/library/import", params=params, json=body)
    rows = [
        [f["status"], human_bytes(f["size"] or 0), f["path"], f.get("job") or f.get("detail") or ""]
        for f in data["files"]
    ]
    text = table(rows, ["STATUS", "SIZE", "PATH", "JOB / WHY"]) if rows else "No files."
    verb = "to download" if dry_run else "queued"
    return data, (
        f"{text}\n{data['present']} present, {data['to_download']} {verb} "
        f"({human_bytes(data['bytes_to_download'])}), {data['unavailable']} unavailable."
    )


def bulk(c: Daemon, args: argparse.Namespace) -> tuple[Any, str]:
    """A creator's models: the preview, then (with --yes, or a "y" to the question) queued."""
    body = {"username": args.username, "types": args.type or [], "nsfw": args.nsfw}
    preview = call(c, "POST", "/api/bulk/preview", json=body)
    new = [i for i in preview["items"] if i["state"] == "new"]
    rows = [
        [i["modelId"], i.get("name"), i.get("versionName") or "", i.get("baseModel") or "",
         human_bytes(i["size"]) if i.get("size") is not None else "", i["state"]]
        for i in preview["items"]
    ]  # fmt: skip
    t = preview["totals"]
    text = (
        (table(rows, ["MODEL", "NAME", "VERSION", "BASE", "SIZE", "STATE"]) + "\n" if rows else "")
        + f"{preview['username']}: {t['new']} new model(s), {human_bytes(t['new_bytes'])}; "
        f"{t['downloaded']} downloaded, {t['queued']} queued, {t['unavailable']} unavailable."
        + (f"\n{preview['limit']['detail']}" if preview["limit"]["detail"] else "")
    )
    if not new:
        return preview, text + "\nNothing new to queue."
    if not args.yes:
        if args.json:
            return preview, ""  # scripts read the preview, then queue with --yes
        if not ask(text, f"Queue {len(new)} model(s), {human_bytes(t['new_bytes'])}? [y/N] "):
            return preview, "Nothing queued (--yes queues without asking)."
        text = ""
    items = [{"modelVersionId": i["modelVersionId"], "fileId": i["fileId"]} for i in new]
    result = call(c, "POST", "/api/bulk", json={"items": items, "track": args.track})
    lines = [f"Queued {len(result['jobs'])} model(s)" + (" (tracked)." if args.track else ".")]
    lines += [
        f"  refused {items[e['index']]['modelVersionId']}: {e['detail']}" for e in result["errors"]
    ]
    return result, (text + "\n" if text else "") + "\n".join(lines)


def ask(text: str, question: str) -> bool:
    """Show `text`, ask `question`; True for a "y" (no answer, as from a pipe: False)."""
    print(printable(text, lines=True))  # noqa: T201
    try:
        answer = input(question)
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def parser() -> argparse.ArgumentParser:
    # SUPPRESS: an option given before the command is not reset by the command's parser.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--home", help="the daemon's home (default: $CIVITAI_DAEMON_HOME or this folder)"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    common.add_argument(
        "--url",
        dest="daemon_url",
        metavar="URL",
        help="the daemon's address, e.g. http://127.0.0.1:8137 (default: $CIVITAI_DAEMON_URL, "
        "else the running daemon of the home)",
    )
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common]
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", parents=[common], help="the daemon and its active jobs")
    ls = sub.add_parser("list", parents=[common], help="jobs, newest first")
    ls.add_argument(
        "--status",
        choices=[
            "queued",
            "downloading",
            "waiting",
            "verifying",
            "paused",
            "completed",
            "failed",
            "cancelled",
        ],
    )
    ls.add_argument("--limit", type=int, default=50)
    add = sub.add_parser("add", parents=[common], help="queue a download")
    add.add_argument(
        "url", nargs="?", help="a civitai.com model page or download URL, or a Civitai AIR"
    )
    add.add_argument("--version", type=int, help="a model version id")
    add.add_argument("--model", type=int, help="a model id (its newest version)")
    add.add_argument(
        "--type",
        help="model_type: lora, checkpoint, vae, … or your app's folder name (Stable-diffusion, "
        "loras, …); the layout picks the folder (default: the model's type on Civitai; "
        "required for a direct URL)",
    )
    add.add_argument(
        "--track",
        action="store_true",
        help="once verified, add the model to manifest.json so the update checker follows it",
    )
    add.add_argument(
        "--file-id", type=int, help="which file of the version (default: its primary file)"
    )
    add.add_argument("--filename")
    add.add_argument("--priority", type=int, default=5)
    for name in ("cancel", "retry", "pause", "resume"):
        one = sub.add_parser(name, parents=[common], help=f"{name} a job")
        one.add_argument("id", type=int)
        if name == "retry":
            one.add_argument(
                "--force", action="store_true", help="even a failure a retry cannot fix (404, …)"
            )
    prio = sub.add_parser(
        "priority", parents=[common], help="a queued or paused job's priority (lower runs first)"
    )
    prio.add_argument("id", type=int)
    prio.add_argument("priority", help="0–100, or 'top' to be the next one started")
    done = sub.add_parser("completed", parents=[common], help="completed downloads")
    done.add_argument("--limit", type=int, default=50)
    up = sub.add_parser("updates", parents=[common], help="updates found; --check runs a check now")
    up.add_argument("--check", action="store_true")
    bulk_cmd = sub.add_parser(
        "bulk", parents=[common], help="a Civitai creator's models: preview, then queue"
    )
    bulk_cmd.add_argument("username", help="the creator's name, as in civitai.com/user/<name>")
    bulk_cmd.add_argument(
        "--type", action="append", help="only this Civitai type (LORA, Checkpoint, …); repeatable"
    )
    bulk_cmd.add_argument("--nsfw", action="store_true", help="list NSFW models too")
    bulk_cmd.add_argument("--yes", action="store_true", help="queue without asking")
    bulk_cmd.add_argument("--track", action="store_true", help="track each for updates")
    sub.add_parser("scan", parents=[common], help="adopt existing files under download_dir")
    sub.add_parser("url", parents=[common], help="the daemon's address, for scripts and curl")
    sub.add_parser("key", parents=[common], help="the API key (api_token), for scripts and curl")
    flow = sub.add_parser(
        "workflow",
        parents=[common],
        help="a ComfyUI workflow's models: what is here, queue the rest",
    )
    flow.add_argument("file", help="the workflow's .json (as ComfyUI saves it, or the API format)")
    flow.add_argument("--dry-run", action="store_true", help="show the table, queue nothing")
    cli_follows.add_parsers(sub, common)
    out = sub.add_parser("export", parents=[common], help="the library as portable JSON")
    out.add_argument("file", nargs="?", help="where to write it (else printed)")
    imp = sub.add_parser(
        "import", parents=[common], help="an exported library: download what is missing"
    )
    imp.add_argument("file", help="a file `./civitai export` wrote")
    imp.add_argument("--dry-run", action="store_true", help="show the plan, queue nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.home = getattr(args, "home", None)
    args.json = getattr(args, "json", False)
    args.daemon_url = getattr(args, "daemon_url", None)
    try:
        data, text = run(args)
    except CliError as exc:
        print(f"error: {printable(one_line(exc))}", file=sys.stderr)  # noqa: T201
        return EXIT_NO_DAEMON if isinstance(exc, NoDaemon) else 1
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        # An answer of another shape than this CLI reads (a daemon of another version, or not
        # a daemon at all): one sentence, never a traceback.
        what = "a field of the wrong type"
        if isinstance(exc, KeyError):
            what = f"no field {printable(exc.args[0] if exc.args else '')!r}"
        print(  # noqa: T201
            f"error: the daemon's answer to {args.command} is not what this CLI reads ({what}), so "
            f"the daemon may be of another version than the CLI.",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(data, indent=2) if args.json else printable(text, lines=True))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
