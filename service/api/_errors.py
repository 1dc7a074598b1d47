"""Mapping of service errors to HTTP responses (and no stack traces, ever)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    Conflict,
    LimitExceeded,
    NotFound,
    RelaxtuneError,
    SpecError,
    StoreError,
)

logger = logging.getLogger(__name__)


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    detail: object = {"field": field, "message": message} if field is not None else message
    return JSONResponse(status_code=status, content={"detail": detail})


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return _error(404, str(exc) or "not found")


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return _error(409, str(exc))


async def _limit(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LimitExceeded)
    # A limit on a spec field is a refused spec (422 naming the field, like any other);
    # a limit on the tenant's running work clears by itself, hence 429.
    if exc.field is not None:
        return _error(422, str(exc), exc.field)
    return _error(429, str(exc))


async def _spec(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    return _error(422, exc.message, exc.field)


async def _store(_: Request, exc: Exception) -> JSONResponse:
    logger.error("%s", exc, exc_info=exc.__cause__)
    return _error(503, "the job database is unavailable; try again shortly")


async def _other_service_error(_: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled service error: %s", exc, exc_info=exc)
    return _error(500, "internal error")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.error("unexpected error", exc_info=exc)
    return _error(500, "internal error")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        # Starlette's Allow header names only the first route matching the path; a path served
        # by several routes (GET and POST /v1/jobs) must list all their methods.
        path = request.scope.get("path", "")
        methods = {
            method
            for route in request.app.router.routes + _api_routes(request.app)
            if isinstance(route, APIRoute) and route.path_regex.match(path)
            for method in route.methods or ()
        }
        if methods:
            exc = StarletteHTTPException(
                405, exc.detail, headers={"Allow": ", ".join(sorted(methods))}
            )
    return await http_exception_handler(request, exc)


def _api_routes(app: FastAPI) -> list[Any]:
    return list(getattr(app.state, "api_routes", []))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; the most specific class wins."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(LimitExceeded, _limit)
    app.add_exception_handler(SpecError, _spec)
    app.add_exception_handler(StoreError, _store)
    app.add_exception_handler(RelaxtuneError, _other_service_error)
    app.add_exception_handler(Exception, _unexpected)
