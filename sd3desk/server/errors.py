"""Errors as every client understands them: JSON with a `detail`, the right status, a field name
for a bad field, and never a stack trace (that goes to the log)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sd3desk.core.errors import InvalidParamsError, SD3DeskError
from sd3desk.server.door import Door, LimitExceeded
from sd3desk.server.security import BodyTooLarge

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the server cannot answer as asked: `status` and a reason for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def door_of(request: Request) -> Door:
    return request.app.state.door


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def field_errors(exc: InvalidParamsError, where: str = "body") -> list[dict[str, object]]:
    """FastAPI's own 422 shape, so clients that read one read both."""
    return [
        {
            "type": "value_error",
            "loc": [where, error.field],
            "msg": f"{error.field} {error.message}",
        }
        for error in exc.errors
    ]


def install(app: FastAPI) -> None:
    """Turn every known failure into its JSON answer."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(InvalidParamsError)
    async def invalid(_request: Request, exc: InvalidParamsError) -> JSONResponse:
        return JSONResponse({"detail": field_errors(exc)}, status_code=422)

    @app.exception_handler(LimitExceeded)
    async def limit(_request: Request, exc: LimitExceeded) -> JSONResponse:
        return JSONResponse({"detail": exc.reason}, status_code=exc.status)

    @app.exception_handler(BodyTooLarge)
    async def too_large(_request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(TimeoutError)
    async def busy(_request: Request, exc: TimeoutError) -> JSONResponse:
        return JSONResponse({"detail": f"sd3desk is busy, try again: {exc}"}, status_code=503)

    @app.exception_handler(SD3DeskError)
    async def ours(_request: Request, exc: SD3DeskError) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "advice": exc.advice}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"detail": "the server could not answer this request; details are in its log"},
            status_code=500,
        )
