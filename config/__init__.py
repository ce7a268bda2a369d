"""Settings and how they change while running: config.json as one typed object, live changes
and SIGHUP, the daemon's record in its home, and how sizes are written.

Must not import: engine, sources, web, daemon, main, updater, notify, fastapi, starlette, uvicorn
"""
