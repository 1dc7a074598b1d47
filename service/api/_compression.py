"""Gzip for pages and JSON, for clients that accept it (``q=0`` honoured)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import Receive, Scope, Send

from service.api._trials_sql import accepts_gzip

__all__ = ["NegotiatedGZipMiddleware"]


class NegotiatedGZipMiddleware(GZipMiddleware):
    """Starlette's ``GZipMiddleware``, which compresses whenever ``gzip`` appears in
    ``Accept-Encoding``, even as ``gzip;q=0`` (refused): this one asks ``accepts_gzip``.
    Responses that are compressed already (``/trials``, ``/static``) pass through as they are."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not accepts_gzip(
            Headers(scope=scope).get("accept-encoding")
        ):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
