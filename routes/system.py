"""Liveness: the one route that needs no key."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: str


@router.get("/api/health", response_model=Health)
async def health() -> Health:
    """Answers `{"status": "ok"}` once the daemon has started; no key needed."""
    return Health(status="ok")
