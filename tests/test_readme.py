"""Every command in the README's bash/sh blocks is run here as written, or excused with a reason.

A command is one line of a block (lines ending in a backslash joined, a trailing `  # comment`
left out of its name). RUN says what a person sees when it runs (exit code, text in its output)
and where: "checkout" is a fresh clone of this checkout that is also the daemon's home (the
default), with the fake Civitai; "upgrade" is a clone of 0.1 (config.json and manifest.json
tracked, both modified) with the new commit to pull. NOT_RUN gives the reason a command is not
run here and the test that covers it instead. A README command in neither table fails the test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from config.settings import default_config
from tests.conftest import REPO, git, snapshot_checkout, wait_job, write_config


@dataclass(frozen=True)
class Run:
    sees: str  # text its output (stdout and stderr) must contain; "" for a command that prints none
    code: int = 0
    where: str = "checkout"


CURL = (
    'curl -X POST "$URL/api/download" -H "Authorization: Bearer $KEY" '
    "-H 'Content-Type: application/json' "
    '-d \'{"modelVersionId": 128713, "model_type": "checkpoint"}\''
)
RUN: dict[str, Run] = {
    # The command line, in the order of its block (ids 1 and 2 are the two `add`s).
    "./civitai status": Run("1 workers; 0 queued, 0 active."),
    "./civitai list --status failed": Run("No jobs."),
    './civitai add "https://civitai.com/models/4384?modelVersionId=128713" --type checkpoint': Run(
        "Job 1 queued: dreamshaper_8.safetensors"
    ),
    "./civitai add --version 128714 --type lora --filename detail.safetensors --priority 1": Run(
        "Job 2 queued: detail.safetensors"
    ),
    "./civitai add --version 128713 --file-id 131226 --type checkpoint": Run(
        "Job 3 queued: dreamshaper_8_pruned.safetensors"
    ),
    # Model 5000's newest version is job 2's file: that job, which now tracks it when done.
    "./civitai add --model 5000 --track": Run("Job 2 queued: detail.safetensors"),
    "./civitai cancel 2": Run("Job 2 is cancelled."),
    "./civitai retry 2": Run("Job 2 is queued."),
    "./civitai pause 2": Run("Job 2 is paused."),
    "./civitai resume 2": Run("Job 2 is queued."),
    "./civitai priority 2 top": Run("Job 2 (queued) has priority 1."),
    "./civitai completed": Run("Nothing completed yet."),
    "./civitai updates --check": Run("Checked 0 model(s) in 0 request(s): 0 update(s)."),
    "./civitai updates": Run("No updates found yet."),
    "./civitai scan": Run("file(s): 0 adopted"),
    "./civitai url": Run("http://127.0.0.1:"),
    "./civitai key": Run(""),  # checked below: it is the generated api_token
    # Downloading
    "./civitai add --version 128713 --type checkpoint": Run("dreamshaper_8.safetensors"),
    "URL=$(./civitai url) && KEY=$(./civitai key)": Run(""),
    CURL: Run('"modelVersionId":128713'),
    # Settings that apply without a restart
    'curl -X PATCH "$URL/api/settings" -H "Authorization: Bearer $KEY" '
    "-H 'Content-Type: application/json' "
    '-d \'{"civitai_token": "my-civitai-key", "throttle": 5000000}\'': Run("5000000"),
    # Changing the layout: the plan, then applied (nothing completed yet: nothing moves)
    'curl -X POST "$URL/api/library/relayout" -H "Authorization: Bearer $KEY" '
    "-H 'Content-Type: application/json' "
    '-d \'{"layout": "comfyui"}\'': Run('"confirmed":false'),
    'curl -X POST "$URL/api/library/relayout" -H "Authorization: Bearer $KEY" '
    "-H 'Content-Type: application/json' "
    '-d \'{"layout": "comfyui", "confirm": true}\'': Run('"layout_saved":true'),
    # Metrics
    'curl -sS "$URL/metrics" -H "Authorization: Bearer $KEY" | grep civitai_daemon_jobs': Run(
        'civitai_daemon_jobs{status="completed"}'
    ),
    # Running it for real
    '.venv/bin/sqlite-utils data/completed.db "select filename, size, path from completed"': Run(
        "[]"
    ),
    # Upgrading from 0.1
    "cp config.json config.json.mine && cp manifest.json manifest.json.mine": Run("", 0, "upgrade"),
    "git checkout -- config.json manifest.json": Run("", 0, "upgrade"),
    "git pull": Run("config.json", 0, "upgrade"),
    "mv config.json.mine config.json && mv manifest.json.mine manifest.json": Run("", 0, "upgrade"),
}

NOT_RUN: dict[str, str] = {
    **dict.fromkeys(
        [
            'curl -X POST "$URL/api/workflow?dry_run=true" -H "Authorization: Bearer $KEY" '
            "-F file=@my_workflow.json",
            "./civitai workflow my_workflow.json --dry-run",
            "./civitai workflow my_workflow.json",
        ],
        "my_workflow.json stands for the reader's workflow: test_workflow.py::"
        "test_cli_workflow_prints_the_table_and_dry_run_queues_nothing runs the CLI (and "
        "--dry-run) on real templates, test_bad_json_and_non_workflows_are_refused_with_why "
        "uploads one as multipart",
    ),
    "./civitai --url http://127.0.0.1:8137 status": "8137 stands for the other daemon's port: "
    "test_cli.py::test_cli_url_flag_and_environment_variable_reach_a_daemon_the_home_does_not_name "
    "runs --url (and CIVITAI_DAEMON_URL) against a daemon its home does not name",
    "python3 install.py": "installs, then serves in the foreground until Ctrl-C: "
    "test_install.py runs it with --no-start in a fresh clone (fixture `installed`)",
    "python3 run_tests.py": "runs this very suite: test_install.py::"
    "test_install_gives_the_runtime_only_and_run_tests_adds_the_test_tools runs it in a clone "
    "(with --version for pytest)",
    "sudo ./setup.sh": "installs a system service: test_install.py runs setup.sh --no-start, and "
    "install.py --dry-run --service prints the unit it would install",
    **dict.fromkeys(
        [
            "sudo systemctl stop civitai-daemon",
            "sudo mkdir -p /var/lib/civitai-daemon/data /var/lib/civitai-daemon/logs",
            "cd /opt/civitai-daemon && sudo mv config.json manifest.json /var/lib/civitai-daemon/",
            "sudo mv data/* /var/lib/civitai-daemon/data/ && sudo mv logs/* "
            "/var/lib/civitai-daemon/logs/",
            "for t in completed jobs file_hashes; do sudo .venv/bin/sqlite-utils "
            '/var/lib/civitai-daemon/data/completed.db "update $t set path = '
            "'/var/lib/civitai-daemon/data/' || substr(path, 26) where path like "
            "'/opt/civitai-daemon/data/%'\"; done",
            "sudo python3 install.py --user civitai",
        ],
        "moves an installed service's home as root: test_install.py::"
        "test_the_service_refuses_a_home_that_holds_its_code checks that install.py stops and "
        "prints these commands for its checkout, and test_the_moved_home_keeps_its_library runs "
        "them (without sudo and systemctl) on a home in a clone",
    ),
    # The webhook sender in sh is run, with its daemon's port and secret, by
    # test_security_auth.py::test_the_readme_sender_examples_are_accepted_once[sh].
    **dict.fromkeys(
        [
            "SECRET='your webhook_secret'; "
            'body=\'{"modelVersionId": 128713, "model_type": "lora"}\'',
            "ts=$(date +%s); id=$(cat /proc/sys/kernel/random/uuid)",
            'sig=$(printf \'%s\' "$ts.$id.$body" | openssl dgst -sha256 -hmac "$SECRET" | '
            "sed 's/^.* //')",
            "curl -sS http://127.0.0.1:8137/webhook -H 'Content-Type: application/json' -H "
            '"X-Timestamp: $ts" -H "X-Delivery-Id: $id" -H "X-Signature-256: sha256=$sig" '
            '--data-binary "$body"',
        ],
        "the webhook sender, run against a daemon on its own port by test_security_auth.py::"
        "test_the_readme_sender_examples_are_accepted_once[sh]",
    ),
    # By AIR and a creator's models: real Civitai ids and a creator name, which this test's fake
    # does not hold (its jobs are counted above).
    "./civitai add urn:air:sdxl:lora:civitai:328553@368189": "a real model's AIR: "
    "test_bulk_air.py::test_a_model_downloaded_by_its_air_lands_in_the_folder_its_type_names "
    "runs this very command (and the request in `url` and `air`) against the fake's model 328553",
    'curl -X POST "$URL/api/download" -H "Authorization: Bearer $KEY" '
    "-H 'Content-Type: application/json' "
    '-d \'{"air": "urn:air:sdxl:lora:civitai:328553@368189"}\'': "a real model's AIR: "
    "test_bulk_air.py::test_a_model_downloaded_by_its_air_lands_in_the_folder_its_type_names "
    "posts this body to /api/download against the fake's model 328553",
    "./civitai bulk SomeCreator --type LORA --track": "a creator's name stands for yours: "
    "test_bulk_air.py::test_the_cli_previews_a_creators_models_and_queues_them_only_when_told "
    "runs bulk --type LORA --track (asked, answered n then y) and --yes against the fake's creator",
    'curl -X POST "$URL/api/bulk/preview" -H "Authorization: Bearer $KEY" '
    "-H 'Content-Type: application/json' "
    '-d \'{"username": "SomeCreator", "types": ["LORA"]}\'': "a creator's name stands for "
    "yours: test_bulk_air.py::test_a_creators_models_are_previewed_over_civitais_pages_with_their"
    "_newest_files posts such bodies (types, base models, NSFW) against the fake's creator",
}


def readme_commands() -> list[list[str]]:
    """The commands of each bash/sh block of the README, in order."""
    text = (REPO / "README.md").read_text()
    blocks = []
    for body in re.findall(r"^```(?:bash|sh)\n(.*?)^```", text, re.S | re.M):
        joined = re.sub(r"\\\n\s*", "", body)
        lines = [line.strip() for line in joined.splitlines()]
        blocks.append([line for line in lines if line and not line.startswith("#")])
    return blocks


def name(command: str) -> str:
    """A command as the tables name it: the trailing comment left out, spaces collapsed."""
    return " ".join(re.sub(r"\s{2,}#.*$", "", command).split())


def test_every_readme_command_is_run_or_excused_with_a_reason():
    seen = [name(c) for block in readme_commands() for c in block]
    assert len(seen) > 20
    unknown = [c for c in seen if c not in RUN and c not in NOT_RUN]
    assert unknown == [], (
        "README commands neither run nor excused: add each to RUN in tests/test_readme.py "
        f"(what it prints) or to NOT_RUN (why not, and which test covers it): {unknown}"
    )
    stale = [c for c in [*RUN, *NOT_RUN] if c not in seen]
    assert stale == [], f"commands no longer in the README: remove them from the tables: {stale}"
    assert all(len(reason) > 20 for reason in NOT_RUN.values())


def run_commands(commands: list[str], cwd: Path) -> list[tuple[int, str]]:
    """Run the commands in one bash (variables carry over, as in a terminal): code and output
    of each."""
    script = ["exec 2>&1"]
    for i, command in enumerate(commands):
        script += [f"echo '@@start {i}'", command, f'echo "@@end {i} $?"']
    env = {k: v for k, v in os.environ.items() if k != "CIVITAI_DAEMON_HOME"}
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    results = []
    for i in range(len(commands)):
        found = re.search(rf"@@start {i}\n(.*?)@@end {i} (\d+)\n", done.stdout, re.S)
        assert found, f"command {commands[i]!r} did not finish: {done.stdout}"
        results.append((int(found.group(2)), found.group(1)))
    return results


def check(commands: list[str], results: list[tuple[int, str]]) -> None:
    for command, (code, out) in zip(commands, results, strict=True):
        expected = RUN[name(command)]
        assert code == expected.code and expected.sees in out, (
            f"README command {command!r}: exit {code}, printed:\n{out}\n"
            f"(want exit {expected.code} and {expected.sees!r})"
        )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A clone of this checkout that uses this checkout's venv, as after install.py."""
    clone = snapshot_checkout(tmp_path / "civitai-daemon")
    (clone / ".venv").symlink_to(REPO / ".venv")
    return clone


def test_the_readme_commands_work_as_written_in_a_checkout(civitai, daemon_factory, checkout):
    primary = civitai.file(b"d" * 4_000_000, name="dreamshaper_8.safetensors")
    pruned = civitai.file(b"p" * 2_000_000, name="dreamshaper_8_pruned.safetensors", id=131226)
    pruned.primary = False
    version = civitai.version(128713, [primary, pruned])
    civitai.add_model(4384, "DreamShaper", "Checkpoint", [version])
    civitai.add_simple(5000, 128714, b"e" * 4_000_000, "more_details.safetensors")
    civitai.default_rate = 25_000  # job 1 still downloads (160 s) through every command above
    write_config(checkout, civitai_base_url=civitai.base_url, workers=1, timeout=10)
    d = daemon_factory(checkout).start()
    ran: set[str] = set()
    for block in readme_commands():
        commands = [c for c in block if name(c) in RUN and RUN[name(c)].where == "checkout"]
        if commands:
            results = run_commands(commands, checkout)
            check(commands, results)
            ran |= {name(c) for c in commands}
            for command, (_, out) in zip(commands, results, strict=True):
                if name(command) == "./civitai key":
                    assert out.strip() == d.token
    assert ran == {c for c, r in RUN.items() if r.where == "checkout"}
    with d.client() as c:
        wait_job(c, 1, statuses=("downloading", "completed"))
        jobs = c.get("/api/jobs").json()["jobs"]
    assert {j["modelVersionId"] for j in jobs} == {128713, 128714}
    d.stop()


def test_the_readme_upgrade_from_0_1_keeps_a_modified_config_and_manifest(tmp_path):
    # Upstream: 0.1 tracked config.json and manifest.json; the next commit stops tracking them.
    upstream = snapshot_checkout(tmp_path / "upstream")
    ignore = (upstream / ".gitignore").read_text()
    untracked = ("/config.json", "/manifest.json")
    old_ignore = [line for line in ignore.splitlines() if line not in untracked]
    (upstream / ".gitignore").write_text("\n".join(old_ignore) + "\n")
    (upstream / "config.json").write_text(json.dumps(default_config(), indent=2))
    (upstream / "manifest.json").write_text("[]")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "0.1")
    mine = tmp_path / "mine"
    git(tmp_path, "clone", "-q", str(upstream), str(mine))
    (upstream / ".gitignore").write_text(ignore)
    git(upstream, "rm", "-q", "--cached", "config.json", "manifest.json")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "config.json and manifest.json untracked")
    # A person's 0.1: the first start wrote a key, and models were tracked.
    config = {**default_config(), "api_token": "generated-secret", "active_port": 8137}
    (mine / "config.json").write_text(json.dumps(config))
    (mine / "manifest.json").write_text('[{"modelId": 4384, "model_type": "checkpoint"}]')
    refused = subprocess.run(["git", "pull"], cwd=mine, capture_output=True, text=True)
    assert refused.returncode != 0 and "config.json" in refused.stderr  # why the README says so

    commands = [c for block in readme_commands() for c in block if name(c) in RUN]
    commands = [c for c in commands if RUN[name(c)].where == "upgrade"]
    assert len(commands) == 4
    check(commands, run_commands(commands, mine))
    assert json.loads((mine / "config.json").read_text()) == config
    assert "4384" in (mine / "manifest.json").read_text()
    assert git(mine, "rev-parse", "HEAD") == git(upstream, "rev-parse", "HEAD")
    assert git(mine, "status", "--porcelain", "--untracked-files=all") == ""
