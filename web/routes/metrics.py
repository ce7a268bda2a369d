"""GET /metrics: Prometheus's text format, for the API key, the viewer key, a GUI session, or
`metrics_token`, a scraper's bearer token that opens this route and nothing else."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from metrics.exposition import DaemonMetrics
from web.auth import TooManyFailures, client_address, presented_key, require_key
from web.roles import is_metrics_token


async def require_scraper(request: Request) -> None:
    """The metrics token, else whatever opens the API's GETs (401 otherwise)."""
    key = presented_key(request.headers)
    if key is not None and is_metrics_token(request.app.state.settings, key):
        address = client_address(request)
        # An address that is guessing keys is refused even the right one, as on /api.
        if (seconds := request.app.state.failed_auths.retry_after(address)) is not None:
            raise TooManyFailures(address, seconds)
        return
    await require_key(request)


router = APIRouter(tags=["metrics"], dependencies=[Depends(require_scraper)])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """The daemon's metrics in Prometheus's classic text format (0.0.4), which every
    Prometheus reads (README, Metrics)."""
    exporter: DaemonMetrics = request.app.state.metrics
    return Response(await exporter.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)
