"""Adopting existing files (SPEC §12): hash what is under download_dir, ask Civitai by hash,
track what it knows. Hashes are cached by path, size and mtime, so a second scan reads nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
from sqlite_utils import Database

import errors
from config.settings import Settings
from database import Store, utcnow
from engine.jobs import MODEL_TYPE_RE
from events import EventBus, ScanEvent
from library import catalog, manifest, scan_rows
from library.files import sha256_file
from library.layout import ALIASES, Layout, every_folder, known_types, model_type_of
from library.sidecars import write_sidecars
from sources.civitai import BY_HASH_BATCH, CivitaiClient, with_retries

log = logging.getLogger("civitai.scanner")

MODEL_SUFFIXES = {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx"}


PROGRESS_EVERY = 0.25  # seconds between progress events on the feed


@dataclass
class ScanState:
    running: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    phase: str | None = None  # finding, hashing, asking (Civitai), done
    files: int = 0  # candidate files found
    hashed: int = 0  # files hashed in this scan (not from the cache)
    cached: int = 0  # hashes taken from the cache
    bytes_total: int = 0
    bytes_done: int = 0
    asked: int = 0  # hashes looked up on Civitai
    lookups: int = 0  # by-hash requests made (each up to BY_HASH_BATCH hashes)
    current: str | None = None
    matched: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def brief(self) -> dict[str, Any]:
        """What the feed says of it: the counters, the lists only counted."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}  # no copy of the lists
        return out | {k: len(out[k]) for k in ("matched", "unknown", "errors")}


class FolderTypes:
    """The model type of a file under download_dir, in any layout (issue 16): the type of the
    deepest folder some layout (or a `folders` override) puts a type in, else of a top-level
    folder that names a type. A folder that only holds app folders (A1111's `models/`,
    `extensions/`) is no type itself: files in it that no app folder names are not taken."""

    def __init__(self, layout: Layout) -> None:
        kinds = list(dict.fromkeys([*known_types(), *layout.overrides]))
        # The overrides first; a folder the apps share (models/Lora) means its first type.
        self.known = {folder: kind for kind, folder in layout.overrides.items()}
        for folder, kind in every_folder(kinds).items():
            self.known.setdefault(folder, kind)
        tops = {folder.split("/")[0] for folder in self.known if "/" in folder}
        self.containers = {t for t in tops - set(self.known) if t.lower() not in ALIASES}
        # An A1111/Forge download_dir is the webui itself (venv/, outputs/, repositories/…):
        # there a top-level folder counts only when it names a type some table knows.
        self.strict = layout.name in ("a1111", "forge")
        self.types = set(kinds)

    def of(self, relative: PurePosixPath) -> str | None:
        """The type of the file at `relative` (to download_dir); None when it has none."""
        folders = relative.parts[:-1]
        for depth in range(len(folders), 1, -1):
            prefix = "/".join(folders[:depth])
            kind = self.known.get(prefix) or ALIASES.get(prefix.lower())
            if kind is not None:
                return kind
        if not folders or folders[0] in self.containers:
            return None
        kind = self.known.get(folders[0]) or model_type_of(folders[0])
        if kind is None or not MODEL_TYPE_RE.fullmatch(kind):
            return None
        return kind if not self.strict or kind in self.types else None


def _stat_all(files: list[tuple[Path, str]]) -> list[scan_rows.Found]:
    """(path, size, mtime_ns, model_type) of each file still there."""
    out = []
    for path, kind in files:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_size, st.st_mtime_ns, kind))
    return out


def candidates(
    models_dir: Path, known: set[str], layout: Layout | None = None
) -> list[tuple[Path, str]]:
    """(file, model_type) of model files under `models_dir` the daemon does not know, each
    with the type its folder gives in any layout (FolderTypes). Paths are real, as the
    downloads record theirs: download_dir may be a link."""
    found: list[tuple[Path, str]] = []
    models_dir = Path(os.path.realpath(models_dir))
    if not models_dir.is_dir():
        return found
    types = FolderTypes(layout or Layout())
    for folder in sorted(models_dir.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        for path in sorted(folder.rglob("*")):
            if (
                path.is_file()
                and path.suffix.lower() in MODEL_SUFFIXES
                and not path.name.startswith(".")
                and str(path) not in known
                and (kind := types.of(PurePosixPath(path.relative_to(models_dir).as_posix())))
            ):
                found.append((path, kind))
    return found


async def file_sha256(
    store: Store, path: Path, st: os.stat_result, on_chunk: Callable[[int], None] | None = None
) -> tuple[str, bool]:
    """(SHA256, from the cache) of the file at `path` whose stat is `st`: cached by path, size
    and mtime, so a file hashed once is not read again until it changes. Hashed off the loop."""
    key = str(path)

    def lookup(db: Database) -> str | None:
        rows = list(db["file_hashes"].rows_where("path = ?", [key]))
        if rows and rows[0]["size"] == st.st_size and rows[0]["mtime_ns"] == st.st_mtime_ns:
            return rows[0]["sha256"]
        return None

    cached = await store.read(lookup)
    if cached:
        return cached, True
    sha = await asyncio.to_thread(sha256_file, path, on_chunk)
    row = {"path": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    await store.run(lambda db: db["file_hashes"].upsert(row, pk="path"))
    return sha, False


class Scanner:
    """The library scan (issue 26): finds the model files the daemon did not download, hashes
    them (cached by size and mtime, so a scan cut short resumes without hashing again what it
    finished), asks Civitai about them in batches, adopts the ones it knows and keeps the others
    listed as unknown (scan_rows.py); its progress goes to the feed as `scan` events."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        civitai: CivitaiClient,
        http: httpx.AsyncClient,
        manifest_lock: asyncio.Lock,
        bus: EventBus | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.civitai = civitai
        self.http = http
        self.manifest_lock = manifest_lock
        self.bus = bus
        self.state = ScanState()
        self._task: asyncio.Task | None = None
        self._told = 0.0  # when progress last went to the feed

    def apply(self, settings: Settings) -> None:
        """Settings changed while running: the next scan uses them (save_metadata)."""
        self.settings = settings

    def report(self) -> dict[str, Any]:
        return asdict(self.state)

    def start(self) -> dict[str, Any]:
        """Start a scan in the background; a scan already running is reported, not doubled."""
        if not self.state.running:
            self.state = ScanState(running=True, started_at=utcnow())
            self._task = asyncio.create_task(self._run(), name="scan")
        return self.report()

    async def begin(self) -> None:
        """At start: scan when `auto_scan` says so, or when the last scan was cut short."""
        if self.settings.auto_scan or await self.store.read(scan_rows.has_pending):
            self.start()

    def daily(self) -> None:
        """After the daily update check."""
        if self.settings.auto_scan:
            self.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait(self) -> dict[str, Any]:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        return self.report()

    def _tell(self, progress: bool = True) -> None:
        if self.bus is None:
            return
        now = time.monotonic()
        if progress and now - self._told < PROGRESS_EVERY:
            return
        self._told = now
        self.bus.publish(ScanEvent(self.state.brief(), progress=progress))

    async def _run(self) -> None:
        state = self.state
        self._tell(progress=False)
        ticker = asyncio.create_task(self._tick())
        try:
            state.phase = "finding"
            known = set(await self.store.read(lambda db: [r["path"] for r in db["completed"].rows]))
            files = await asyncio.to_thread(
                candidates, self.settings.models_dir, known, self.settings.folder_layout
            )
            found = await asyncio.to_thread(_stat_all, files)
            await self.store.run(scan_rows.record_found, found, known)
            state.files = len(found)
            state.bytes_total = sum(f[1] for f in found)
            state.phase = "hashing"
            for path, _, _, _ in found:
                state.current = Path(path).name
                try:
                    await self._hash(Path(path))
                except OSError as exc:
                    state.errors.append({"path": path, "detail": str(exc)})
            state.phase, state.current = "asking", None
            await self._ask()
        except Exception as exc:
            log.exception("scan failed")
            state.errors.append({"path": "", "detail": f"scan failed: {exc}"})
        finally:
            ticker.cancel()
            state.current = None
            state.running = False
            state.phase = "done"
            state.finished_at = utcnow()
            self._tell(progress=False)
            log.info(
                "scan: %d files, %d hashed, %d cached, %d matched, %d unknown, %d lookups",
                state.files,
                state.hashed,
                state.cached,
                len(state.matched),
                len(state.unknown),
                state.lookups,
            )

    async def _ask(self) -> None:
        """Civitai is asked about every hashed file it has not matched yet, BY_HASH_BATCH
        hashes a request, one request at a time (its 429s and Retry-After honoured by
        with_retries); each batch's answers are recorded before the next is asked."""
        state = self.state
        rows = await self.store.read(scan_rows.to_ask)
        adopted: list[dict[str, Any]] = []
        try:
            for i in range(0, len(rows), BY_HASH_BATCH):
                batch = rows[i : i + BY_HASH_BATCH]
                hashes = [r["sha256"].lower() for r in batch]
                state.lookups += 1
                try:
                    found = await with_retries(
                        lambda h=hashes: self.civitai.by_hashes(h), attempts=3
                    )
                except errors.DaemonError as exc:
                    state.errors += [{"path": r["path"], "detail": str(exc)} for r in batch]
                    continue
                answers: dict[str, str] = {}
                for row, sha in zip(batch, hashes, strict=True):
                    version = found.get(sha)
                    if version is None:
                        state.unknown.append(row["path"])
                        answers[row["path"]] = scan_rows.UNKNOWN
                        continue
                    path = Path(row["path"])
                    entry = await self._adopt(path, row["model_type"], sha, version)
                    adopted.append(entry)
                    state.matched.append({"path": row["path"], **entry})
                    answers[row["path"]] = scan_rows.MATCHED
                state.asked += len(batch)
                await self.store.run(scan_rows.record_answers, answers, utcnow())
                self._tell()
        finally:
            if adopted:
                async with self.manifest_lock:
                    await asyncio.to_thread(self._add_to_manifest, adopted)

    async def _hash(self, path: Path) -> str:
        st = await asyncio.to_thread(path.stat)
        sha, cached = await file_sha256(self.store, path, st, self._count)
        if cached:
            self.state.cached += 1
            self.state.bytes_done += st.st_size
        else:
            self.state.hashed += 1
        return sha

    def _count(self, n: int) -> None:
        self.state.bytes_done += n  # on the hashing thread: the ticker tells the feed

    async def _tick(self) -> None:
        """Progress to the feed while a scan runs, a big file's bytes too."""
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            self._tell()

    async def _adopt(
        self, path: Path, model_type: str, sha: str, version: dict[str, Any]
    ) -> dict[str, Any]:
        model = version.get("model") or {}
        entry = {
            "modelId": version.get("modelId"),
            "modelVersionId": version.get("id"),
            "model_type": model_type,
            "sha256": sha,
            "filename": path.name,
        }
        await self.store.add_completed(
            {
                "job_id": None,
                "model_type": model_type,
                "modelId": entry["modelId"],
                "modelVersionId": entry["modelVersionId"],
                "fileId": next(  # which of the version's files: an export names it
                    (
                        f.get("id")
                        for f in version.get("files") or []
                        if str((f.get("hashes") or {}).get("SHA256") or "").lower() == sha
                    ),
                    None,
                ),
                "filename": path.name,
                "path": str(path),
                "sha256": sha,
                "size": (await asyncio.to_thread(path.stat)).st_size,
                "model_name": model.get("name"),
                "version_name": version.get("name"),
                **catalog.fields(version),  # base model, trigger words, the preview's NSFW mark
                "completed_at": utcnow(),
                "elapsed_s": 0.0,
            }
        )
        if self.settings.save_metadata:
            await write_sidecars(path, version, self.http, self.civitai, sha256=sha)
        log.info(
            "adopted %s as model %s version %s", path, entry["modelId"], entry["modelVersionId"]
        )
        return entry

    def _add_to_manifest(self, adopted: list[dict[str, Any]]) -> None:
        raw, _, _ = manifest.load(self.settings.manifest_path)
        have = {(e.get("modelId"), e.get("modelVersionId")) for e in raw if isinstance(e, dict)}
        for entry in adopted:
            if (entry["modelId"], entry["modelVersionId"]) not in have:
                raw.append(entry)
        manifest.save(self.settings.manifest_path, raw)
