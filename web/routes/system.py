"""Liveness and the daemon's proof that it holds the key: the routes that need no key."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from web import proof
from web.roles import Role, key_for_role

router = APIRouter(tags=["system"])
# One per process: its salt is drawn at each start (daemon_proof.py says why).
PROVER = proof.Prover()
# One scrypt (16 MiB) at a time: a burst of first challenges does not take 16 MiB each.
STRETCHING = asyncio.Lock()


class Health(BaseModel):
    status: str


class Challenge(BaseModel):
    salt: str
    port: int
    proofs: list[str]


@router.get("/api/health", response_model=Health)
async def health() -> Health:
    """Answers `{"status": "ok"}` once the daemon has started; no key needed."""
    return Health(status="ok")


@router.get("/api/challenge", response_model=Challenge)
async def challenge(request: Request, nonce: str = "") -> Challenge:
    """Proves to the CLI, before it sends the key, that this daemon holds it; no key needed."""
    if not proof.NONCE.fullmatch(nonce):
        raise HTTPException(422, "nonce is 32 to 128 lowercase hexadecimal digits")
    settings = request.app.state.settings
    keys = [k for k in (key_for_role(settings, r) for r in Role) if k]
    port = settings.active_port or 0  # the bound port: launch.py sets it, a reload keeps it
    if not all(PROVER.knows(k) for k in keys):
        async with STRETCHING:
            # scrypt once per key, in a thread: the event loop keeps serving meanwhile.
            await asyncio.to_thread(lambda: [PROVER.stretched(k) for k in keys])
    return Challenge(**PROVER.answer(keys, nonce, port))
