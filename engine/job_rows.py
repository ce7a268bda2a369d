"""A request's job row: its folder, its final path, and what Civitai said about it (SPEC §5).

The queue stores these rows before the caller hears back. A single request asks Civitai first
(`prepare`); a list is stored as far as it is known without the network (`rows_without_civitai`)
and resolved later (resolver.py, or the worker that claims the job).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import errors
import safefs
from engine.jobs import JobRequest, JobStatus, model_type_from_civitai
from library.layout import Layout
from sources.civitai import CivitaiClient, Resolved

TYPE_LOOKUPS = 8  # Civitai questions at once for the entries of a list that name no model_type


def request_key(req: JobRequest) -> str:
    """What makes two unresolved requests the same file."""
    if req.modelVersionId:
        return f"civitai:{req.modelVersionId}:{req.fileId or 'primary'}"
    if req.modelId:
        return f"model:{req.modelId}:{req.fileId or 'primary'}"
    return f"url:{req.url}"


class JobRows:
    """Builds the job row of a request, under `models_root` (download_dir, resolved once), in
    the folder `layout` gives its type (a job keeps the path it was given when queued)."""

    def __init__(self, civitai: CivitaiClient, models_root: Path, layout: Layout) -> None:
        self.civitai = civitai
        self.models_root = models_root
        self.layout = layout

    async def prepare(
        self, req: JobRequest, source: str, replaces: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The job row for a request, with what Civitai says about it."""
        if req.model_type is None:
            req, resolved = await self.typed(req)
            return await asyncio.to_thread(self.row, req, source, replaces, resolved)
        note = None
        await asyncio.to_thread(self.folder, req.model_type)  # a link out: refused before Civitai
        try:
            resolved: Resolved | None = await self.civitai.resolve(req)
        except errors.Retryable as exc:
            resolved = None
            note = f"Civitai could not be asked yet ({exc}); the job will try again"
        if resolved is not None:  # names a path: looked at in a thread
            return await asyncio.to_thread(self.row, req, source, replaces, resolved, note)
        return self.row(req, source, replaces, resolved, note)

    async def typed(self, req: JobRequest) -> tuple[JobRequest, Resolved]:
        """A request without model_type: Civitai's answer, and the request with the folder its
        model's type on Civitai names (LORA → lora, TextualInversion → embedding)."""
        if req.url and not (req.modelId or req.modelVersionId):
            if not self.civitai.is_civitai_url(req.url) or self.civitai.source_for(req.url):
                raise errors.ModelTypeRequired(req.url)
        try:
            resolved = await self.civitai.resolve(req)
        except errors.Retryable as exc:
            raise errors.ModelTypeUnknown(exc) from None
        kind = ((resolved.info or {}).get("model") or {}).get("type")
        req = req.model_copy(update={"model_type": model_type_from_civitai(kind)})
        assert req.model_type is not None
        await asyncio.to_thread(self.folder, req.model_type)  # a link out is refused
        return req, resolved

    async def rows_asking_civitai(
        self, entries: list[tuple[int, JobRequest]], source: str
    ) -> list[tuple[int, dict[str, Any] | errors.DaemonError]]:
        """Each entry's job row, its model_type taken from Civitai (entries that name none),
        or why it cannot be queued; a few questions at a time."""
        limit = asyncio.Semaphore(TYPE_LOOKUPS)

        Outcome = tuple[int, dict[str, Any] | errors.DaemonError]

        async def one(index: int, req: JobRequest) -> Outcome:
            async with limit:
                try:
                    return index, await self.prepare(req, source, None)
                except errors.DaemonError as exc:
                    return index, exc

        return list(await asyncio.gather(*(one(i, req) for i, req in entries)))

    def rows_without_civitai(
        self, entries: list[tuple[int, JobRequest]], source: str
    ) -> list[tuple[int, dict[str, Any] | errors.DaemonError]]:
        """Each entry's job row as far as it is known without asking Civitai, or why it cannot
        be queued. Runs in a thread: it looks at folders."""
        folders: dict[str, errors.DaemonError | None] = {}
        out: list[tuple[int, dict[str, Any] | errors.DaemonError]] = []
        for index, req in entries:
            try:
                if req.model_type not in folders:
                    try:
                        self.folder(req.model_type)  # a link out: refused before Civitai
                        folders[req.model_type] = None
                    except errors.DaemonError as exc:
                        folders[req.model_type] = exc
                if (problem := folders[req.model_type]) is not None:
                    raise problem
                out.append((index, self.row(req, source, None, self._resolve_locally(req))))
            except errors.DaemonError as exc:
                out.append((index, exc))
        return out

    def _resolve_locally(self, req: JobRequest) -> Resolved | None:
        """A direct URL is resolved here (its host must be allowed: no network is needed to
        say so), and a civitai.com URL must name a model or a version; None: ask Civitai."""
        if req.url and not (req.modelId or req.modelVersionId):
            if self.civitai.source_for(req.url) is not None:
                return None  # another source (sources/): asked over the network later
            if not self.civitai.is_civitai_url(req.url):
                return self.civitai.resolve_direct(req)
            self.civitai.parse_url(req.url)
        return None

    def row(
        self,
        req: JobRequest,
        source: str,
        replaces: dict[str, Any] | None,
        resolved: Resolved | None,
        note: str | None = None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "status": JobStatus.QUEUED,
            "model_type": req.model_type,
            "modelId": req.modelId,
            "modelVersionId": req.modelVersionId,
            "fileId": req.fileId,
            "url": req.url,
            "filename": req.filename,
            "sha256": req.sha256,
            "priority": req.priority,
            "track": int(req.track),
            "dedupe_key": resolved.dedupe_key if resolved else request_key(req),
            "request_key": request_key(req),
            "source": source,
            "error": note,
            "request": req.model_dump_json(exclude_none=True),
            "replaces": json.dumps(replaces) if replaces else None,
            "folder": self.layout.folder(req.model_type),
        }
        if req._subfolder:  # a workflow's `SD1.5/x.safetensors`: inside the type's folder
            row["folder"] = f"{row['folder']}/{req._subfolder}"
        if req._folder:  # an imported library's own folder
            row["folder"] = req._folder
            self.folder(req.model_type, req._folder)  # a link out is refused
        if resolved:
            row.update(self.resolved_fields(resolved, req.model_type, row["folder"]))
        return row

    def resolved_fields(
        self, r: Resolved, model_type: str, folder: str | None = None
    ) -> dict[str, Any]:
        """The job fields Civitai's answer sets, the final path among them: in `folder` (the
        one the job was queued with, relative to download_dir), else its type's folder now."""
        fields: dict[str, Any] = {
            "modelId": r.model_id,
            "modelVersionId": r.version_id,
            "fileId": r.file_id,
            "download_url": r.download_url,
            "filename": r.filename,
            "sha256": r.sha256,
            "size": r.size,
            "bytes_total": r.size,
            "model_name": r.model_name,
            "version_name": r.version_name,
            "dedupe_key": r.dedupe_key,
            "verified_by": r.verified_by,
            "git_sha1": r.git_sha1,
        }
        if r.info is not None:
            fields["info"] = json.dumps(r.info)
        if r.filename:
            fields["path"] = str(self.final_path(model_type, r.filename, folder))
        return fields

    def folder(self, model_type: str, relative: str | None = None) -> Path:
        """The real folder of a model_type (or of `relative`, a folder the layout gave it
        earlier); one that leads out of download_dir is refused."""
        relative = relative or self.layout.folder(model_type)
        folder = self.models_root.joinpath(*relative.split("/"))
        return safefs.real_folder(folder, self.models_root)

    def final_path(self, model_type: str, filename: str, relative: str | None = None) -> Path:
        folder = self.folder(model_type, relative)
        path = folder / filename
        # The last guard; names are already made safe upstream.
        if path.parent != folder or path.name in ("", ".", ".."):
            raise errors.InvalidRequest(f"{filename!r} would be written outside {folder}")
        return path
