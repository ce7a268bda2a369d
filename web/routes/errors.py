"""One error shape for every API error: `{"detail": "<a sentence>"}` with a 4xx/5xx status."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from engine.jobs import describe_errors
from errors import DaemonError

log = logging.getLogger("civitai.api")


def install(app: FastAPI) -> None:
    @app.exception_handler(DaemonError)
    async def daemon_error(request: Request, exc: DaemonError) -> JSONResponse:
        status = exc.status_code if 400 <= exc.status_code < 600 else 500
        headers = {}
        if status == 429 and exc.retry_after is not None:  # passed on as the server asked
            headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_errors(exc.errors())}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "Internal error; the daemon's logs/error.log has the details."},
            status_code=500,
        )
