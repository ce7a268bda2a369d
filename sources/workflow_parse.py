"""A workflow's bytes to its models without holding the daemon: small ones in a thread, large
ones in a child process.

`json.loads` is one C call that keeps the GIL: a 9.7 MB workflow takes it for most of a second,
and a thread would still stall every other request that long. So a body over IN_THREAD_MAX is
read by `python -m sources.workflow_parse` (its own interpreter and GIL), which answers the
models, or the error, as JSON on stdout. Both paths run the same `parse`, bounds included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import json_body
from errors import DaemonError, InvalidRequest, RequestError
from sources.workflow import Model, NotAWorkflow, TooLarge, models_of

log = logging.getLogger("civitai.workflow")

IN_THREAD_MAX = 256 * 1024  # json.loads of this much takes well under 100 ms
ROOT = Path(__file__).resolve().parents[1]


class ParseFailed(DaemonError):
    """The child process that reads a large workflow did not answer."""


def parse(raw: bytes, source: str) -> list[Model]:
    """The models of a workflow's bytes; raises RequestError (422) saying why not."""
    data = json_body.loads(raw, source)
    try:
        return models_of(data)
    except TooLarge as exc:
        raise InvalidRequest(f"{source} is refused: {exc}") from None
    except NotAWorkflow as exc:
        raise InvalidRequest(f"{source} is not a ComfyUI workflow: {exc}") from None


async def read_models(raw: bytes, source: str) -> list[Model]:
    """`parse`, off the event loop; in a child process when the body is large."""
    if len(raw) <= IN_THREAD_MAX:
        return await asyncio.to_thread(parse, raw, source)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sources.workflow_parse",
        source,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate(raw)
    try:
        answer = await asyncio.to_thread(json.loads, out)
    except ValueError:
        log.error("the workflow parser exited %s: %s", child.returncode, err[-2000:])
        raise ParseFailed(
            f"Reading the workflow failed (the parser exited {child.returncode}); see the log"
        ) from None
    if "detail" in answer:
        error = RequestError(answer["detail"])
        error.status_code = answer["status"]
        raise error
    return [Model(**fields) for fields in answer["models"]]


def _main() -> None:
    """The child: the workflow on stdin, {"models"} or {"status", "detail"} on stdout."""
    # Background work: the daemon's own process comes first for the CPU, whatever else runs.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)
    answer: dict[str, Any]
    try:
        models = parse(sys.stdin.buffer.read(), sys.argv[1])
        answer = {"models": [dataclasses.asdict(m) for m in models]}
    except RequestError as exc:
        answer = {"status": exc.status_code, "detail": str(exc)}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    _main()
