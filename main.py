"""The FastAPI app: wires the routers and owns every long-lived resource in its lifespan."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from database import Store
from routes import system
from settings import Settings

log = logging.getLogger("civitai.main")

VERSION = "0.1.0"


def create_app(settings: Settings) -> FastAPI:
    """Build the app for one home; nothing starts until the lifespan runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings.data_dir / "completed.db")
        await store.open()
        app.state.store = store
        app.state.started = time.monotonic()
        log.info("daemon ready; home %s", settings.home)
        try:
            yield
        finally:
            await store.close()
            log.info("daemon stopped")

    app = FastAPI(
        title="Stable Civitai Download Daemon",
        version=VERSION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(system.router)
    return app
