"""The files on disk: which folder a type lives in (layout), their sidecars, moving, deleting,
adopting (the scanner), what is held, the manifest of tracked models and app integrations.
It knows no job queue and no request.

Must not import: web, daemon, main, updater, engine.workers, engine.runner, engine.resolver,
engine.controls, fastapi, starlette, uvicorn
"""
