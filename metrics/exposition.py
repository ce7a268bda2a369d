"""GET /metrics in Prometheus's text format: one collector reads the daemon's state at each
scrape into the app's own registry (never prometheus_client's global one).

Survive a restart (read from the database): bytes downloaded by source, jobs by status, failed
jobs by error class, the average speed, the update check's duration and last success. Reset at
a restart (counted while running): failures as they happen, bytes received, the shared store's
hits and uploads (its own counters), and what is only ever "now" (queue, transfers, speed, disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from database import Store
from engine.jobs import JobStatus
from engine.origins import ORIGINS
from events import EventBus, JobEvent, Overflowed
from metrics.stored import Stored, stored

log = logging.getLogger("civitai.metrics")

PREFIX = "civitai_daemon_"


class Queue(Protocol):
    """What the metrics read of the download queue (daemon.DownloadQueue)."""

    store: Store

    @property
    def network_bytes(self) -> int: ...

    def current_speed(self) -> float: ...

    def active_jobs(self) -> list[dict[str, Any]]: ...


class StoreCounts(Protocol):
    """The shared object store's counters since start (the fleet's store object)."""

    hits: int
    uploads: int
    upload_failures: int


@dataclass(frozen=True)
class Scrape:
    """Everything one scrape shows, gathered before the text is made."""

    stored: Stored
    failures: dict[str, int]
    received_bytes: int
    current_speed: float
    transfers: int
    store: tuple[int, int, int]  # hits, uploads, upload failures
    disk_free: int | None


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _labelled(
    kind: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    doc: str,
    label: str,
    values: dict[str, int],
) -> Metric:
    family = kind(PREFIX + name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class DaemonCollector(Collector):
    """The daemon's metrics, from the Scrape its owner gathered for this scrape."""

    def __init__(self, owner: DaemonMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        s = self.owner.scrape
        if s is None:
            return
        db = s.stored
        by_origin = {o: 0 for o in ORIGINS} | db.bytes_by_origin
        statuses = {st.value: 0 for st in JobStatus} | db.jobs_by_status
        yield _labelled(
            CounterMetricFamily,
            "downloaded_bytes",
            "Bytes of verified downloads by source (civitai, huggingface, direct)",
            "source",
            by_origin,
        )
        yield _counter(
            "received_bytes",
            "Bytes received from the network since start, counted as each attempt ends",
            s.received_bytes,
        )
        yield _labelled(GaugeMetricFamily, "jobs", "Jobs by status", "status", statuses)
        yield _labelled(
            CounterMetricFamily,
            "failures",
            "Jobs that failed since start, by the error class that failed them",
            "error_class",
            s.failures,
        )
        yield _labelled(
            GaugeMetricFamily,
            "failed_jobs",
            "Failed jobs in the history, by error class",
            "error_class",
            db.failed_by_class,
        )
        yield _gauge("queue_length", "Jobs queued for a worker", statuses["queued"])
        yield _gauge("active_transfers", "Jobs transferring bytes now", s.transfers)
        yield _gauge(
            "speed_bytes_per_second", "Bytes/s received over the last seconds", s.current_speed
        )
        average = db.transferred_bytes / db.transfer_seconds if db.transfer_seconds > 0 else 0.0
        yield _gauge(
            "average_speed_bytes_per_second",
            "Bytes of completed downloads over the seconds spent transferring them",
            average,
        )
        yield from self._checks(db)
        hits, uploads, failed_uploads = s.store
        yield _counter("store_hits", "Files fetched from the shared store", hits)
        yield _counter("store_uploads", "Files uploaded to the shared store", uploads)
        yield _counter(
            "store_upload_failures", "Uploads to the shared store that failed", failed_uploads
        )
        if s.disk_free is not None:
            yield _gauge("download_dir_free_bytes", "Free bytes where download_dir is", s.disk_free)

    def _checks(self, db: Stored) -> Iterator[Metric]:
        if db.check_duration_s is not None:
            yield _gauge(
                "update_check_duration_seconds",
                "Seconds the last update check took",
                db.check_duration_s,
            )
        if db.check_finished is not None:
            yield _gauge(
                "update_check_last_run_timestamp_seconds",
                "When the last update check finished",
                db.check_finished,
            )
            yield _gauge(
                "update_check_errors", "Errors of the last update check", db.check_errors or 0
            )
        if db.check_success is not None:
            yield _gauge(
                "update_check_last_success_timestamp_seconds",
                "When the last update check without an error finished",
                db.check_success,
            )


class DaemonMetrics:
    """The app's registry, the failures counted from the event bus, and the store's counters."""

    def __init__(self, queue: Queue, bus: EventBus, download_dir: Path) -> None:
        self.queue, self.bus, self.download_dir = queue, bus, download_dir
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(self))
        self.failures: Counter[str] = Counter()
        self.object_store: StoreCounts | None = None
        self.scrape: Scrape | None = None
        self._lock = asyncio.Lock()  # one scrape's state at a time
        self._task: asyncio.Task | None = None

    def watch_store(self, store: StoreCounts) -> None:
        """Report `store`'s hits, uploads and upload failures from now on."""
        self.object_store = store

    def start(self) -> None:
        # Subscribed now, so no failure published from here on is missed.
        subscription = self.bus.subscribe(maxsize=1000, progress=False, limit=100_000)
        self._task = asyncio.create_task(self._count_failures(subscription))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _count_failures(self, subscription: Any) -> None:
        with subscription:
            while True:
                try:
                    events = [await subscription.get()]
                    events += subscription.get_nowait(1000)
                except Overflowed:
                    log.warning("metrics: status changes were lost; some failures not counted")
                    continue
                for event in events:
                    if isinstance(event, JobEvent) and event.status == JobStatus.FAILED:
                        if event.previous != JobStatus.FAILED:
                            await self._count_failure(event.job["id"])

    async def _count_failure(self, job_id: int) -> None:
        row = await self.queue.store.get_job(job_id)
        self.failures[(row or {}).get("error_class") or "unknown"] += 1

    def _disk_free(self) -> int | None:
        for folder in (self.download_dir, *self.download_dir.parents):
            with contextlib.suppress(OSError):
                return shutil.disk_usage(folder).free  # download_dir may not exist yet
        return None

    async def exposition(self) -> bytes:
        """The text Prometheus scrapes, from the state now."""
        async with self._lock:
            store = self.object_store
            self.scrape = Scrape(
                stored=await stored(self.queue.store),
                failures=dict(self.failures),
                received_bytes=self.queue.network_bytes,
                current_speed=self.queue.current_speed(),
                transfers=sum(
                    j["status"] == JobStatus.DOWNLOADING for j in self.queue.active_jobs()
                ),
                store=(store.hits, store.uploads, store.upload_failures) if store else (0, 0, 0),
                disk_free=await asyncio.to_thread(self._disk_free),
            )
            return generate_latest(self.registry)
