"""The FastAPI app: wires the routers and owns every long-lived resource in its lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI

import logger
import webhook_server
from config.live import LiveSettings
from config.settings import Settings
from daemon import DownloadQueue
from database import Store
from engine.connection import ssl_context
from engine.rates import SpeedHistory
from events import EventBus
from fleet.shared import SharedStore
from library import holdings
from library.scanner import Scanner
from metrics.exposition import DaemonMetrics
from notify.webhooks import WebhookSender
from sources.civitai import USER_AGENT, CivitaiClient
from sources.huggingface import HubClient
from sources.thumbnails import Thumbnails
from updater.checker import Updater
from web.auth import GuardMiddleware, exposure_warning
from web.auth_limits import FailedAuths
from web.routes import api, gui, integrations, library, relayout, settings_api, system, updates, ws
from web.routes import errors as error_handlers
from web.routes import images as image_routes
from web.routes import library_files as library_files_routes
from web.routes import metrics as metrics_routes
from web.routes import workflow as workflow_routes
from web.routes.browse import router as browse_router
from web.routes.bulk import router as bulk_router
from web.routes.find_file import router as find_file_router
from web.routes.follows import router as follows_router
from web.routes.library_page import router as library_page_router
from web.sessions import Sessions, load_session_secret

log = logging.getLogger("civitai.main")

VERSION = "0.1.0"


def client_timeout(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(settings.timeout, connect=min(30.0, settings.timeout))


def http_client(settings: Settings) -> httpx.AsyncClient:
    """One pooled client for Civitai, the CDN, webhooks. `timeout` is the no-byte limit."""
    return httpx.AsyncClient(
        timeout=client_timeout(settings),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
        trust_env=False,  # no proxies from the environment; certificates as for transfers:
        verify=ssl_context(),  # certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR when set
    )


def create_app(settings: Settings) -> FastAPI:
    """Build the app for one home; nothing starts until the lifespan runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            store = Store(settings.data_dir / "completed.db")
            await store.open()
            stack.push_async_callback(store.close)
            await app.state.sessions.open(store)
            http = await stack.enter_async_context(http_client(settings))
            stack.callback(
                live.subscribe(lambda new: setattr(http, "timeout", client_timeout(new)))
            )
            bus = EventBus()
            civitai = CivitaiClient(settings, http)
            hub = HubClient(settings, http, civitai)  # one of civitai.sources
            webhooks = WebhookSender(settings, bus, http)
            webhooks.start()
            stack.push_async_callback(webhooks.stop)
            manifest_lock = asyncio.Lock()  # every write of manifest.json holds it
            app.state.shared_store = shared = SharedStore(settings, store)  # `store`: fleet/
            shared.start()
            stack.push_async_callback(shared.stop)
            queue = DownloadQueue(settings, store, bus, civitai, http, manifest_lock, shared)
            app.state.metrics = metrics = DaemonMetrics(queue, bus, settings.models_dir)
            metrics.watch_store(shared)  # its hits, uploads and upload failures
            metrics.start()  # before the queue starts: each failure is counted
            stack.push_async_callback(metrics.stop)
            await queue.start()
            stack.push_async_callback(queue.stop)
            updater = Updater(settings, store, civitai, queue, bus, manifest_lock)
            await updater.restore()
            updater.start()
            stack.push_async_callback(updater.stop)
            scanner = Scanner(settings, store, civitai, http, manifest_lock, bus)
            stack.push_async_callback(scanner.stop)
            updater.after_daily.append(scanner.daily)
            await scanner.begin()
            app.state.thumbnails = thumbs = Thumbnails(
                settings.data_dir / "thumbnails",
                http,
                civitai,
                settings.thumbnail_cache_bytes,
            )
            stack.push_async_callback(thumbs.close)
            app.state.store, app.state.bus, app.state.civitai = store, bus, civitai
            app.state.hub = hub
            app.state.queue, app.state.webhooks = queue, webhooks
            app.state.updater, app.state.scanner = updater, scanner
            app.state.manifest_lock = manifest_lock
            app.state.relayout_lock = asyncio.Lock()  # one move of the library at a time
            app.state.library_totals = holdings.Totals(store)
            app.state.started = time.monotonic()
            app.state.speed_history = history = SpeedHistory(queue.current_speed)
            sampler = asyncio.create_task(history.run())
            stack.callback(sampler.cancel)
            for component in (civitai, hub, webhooks, queue, updater, scanner, shared):
                stack.callback(live.subscribe(component.apply))
            stack.callback(live.listen_for_sighup())
            if warning := exposure_warning(settings):
                log.warning(warning)
            log.info("daemon ready; home %s, %d workers", settings.home, settings.workers)
            yield
            log.info("daemon stopping")
        log.info("daemon stopped")

    app = FastAPI(
        title="Stable Civitai Download Daemon",
        version=VERSION,
        description="Downloads Civitai models: resumable, verified, tracked.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.live = live = LiveSettings(settings)
    # First: whoever reads app.state.settings (keys, sessions, inbound webhooks) sees the change.
    live.subscribe(lambda new: setattr(app.state, "settings", new))
    live.subscribe(lambda new: logger.reconfigure(new.log_level, new.secret_values()))
    app.state.sessions = Sessions(load_session_secret(settings.home))
    app.state.failed_auths = FailedAuths()  # wrong keys per client address (auth_limits.py)
    error_handlers.install(app)
    app.add_middleware(GuardMiddleware, current=lambda: live.current)
    app.include_router(system.router)
    app.include_router(api.router)
    app.include_router(bulk_router)
    app.include_router(follows_router)
    app.include_router(browse_router)
    app.include_router(find_file_router)
    app.include_router(updates.router)
    app.include_router(library_files_routes.router)
    app.include_router(library.router)
    app.include_router(library_page_router)
    app.include_router(relayout.router)
    app.include_router(settings_api.router)
    app.include_router(integrations.router)
    app.include_router(workflow_routes.router)
    app.include_router(image_routes.router)
    app.include_router(ws.router)
    app.include_router(webhook_server.router)
    app.include_router(metrics_routes.router)
    app.include_router(gui.router)
    gui.mount_static(app)
    return app
