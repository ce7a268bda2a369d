"""One job from claim to verified file: the job request and its states, the rows and queries of
the queue, the runner, the transfer (the byte path, its throttle and progress) and the resolver.

Must not import: web, daemon, main, updater, notify, fastapi, starlette, uvicorn
"""
