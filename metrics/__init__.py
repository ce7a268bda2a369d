"""What Prometheus reads at GET /metrics: the daemon's counts read at each scrape from the
database (`stored.py`: they survive a restart) and from the running queue, and the counts kept
while running (`exposition.py`: failures as they happen, the shared store's hits and uploads).

Must not import: web, main, fastapi, starlette, uvicorn
"""
