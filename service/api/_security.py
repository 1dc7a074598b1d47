"""Security headers on every response, and an access log that never shows a token.

Pages run no inline script (their code is in ``/static``), so the policy allows scripts from
this origin only; plotly sets inline styles, hence ``style-src 'unsafe-inline'``. The
interactive API docs (``/docs``, ``/redoc``, from the packaged Swagger UI and ReDoc bundles)
start with a short inline script, so they alone get ``script-src 'unsafe-inline'``. Nothing is
fetched from another origin. Responses that set no ``Cache-Control`` get ``no-store``: every
``/v1`` answer is some tenant's data; ``/static`` files set their own (versioned, immutable).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeadersMiddleware", "TokenRedactingFilter", "content_security_policy"]

_BASE_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGES_POLICY = f"{_BASE_POLICY}; script-src 'self'"
_DOCS_POLICY = f"{_BASE_POLICY}; script-src 'self' 'unsafe-inline'"
_DOCS_PATHS = ("/docs", "/redoc")


def content_security_policy(path: str) -> str:
    """The Content-Security-Policy of a response to ``path``."""
    docs = any(path == p or path.startswith(p + "/") for p in _DOCS_PATHS)
    return _DOCS_POLICY if docs else _PAGES_POLICY


class SecurityHeadersMiddleware:
    """Adds CSP, ``Referrer-Policy: no-referrer``, ``X-Content-Type-Options: nosniff``,
    ``X-Frame-Options: DENY`` and (unless the response set one) ``Cache-Control: no-store``;
    over HTTPS also ``Strict-Transport-Security``. Pure ASGI: no per-request task."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [
            (b"content-security-policy", content_security_policy(scope["path"]).encode()),
            (b"referrer-policy", b"no-referrer"),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
        ]
        if scope.get("scheme") == "https":
            extra.append((b"strict-transport-security", b"max-age=31536000"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in extra if n not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


#: an API token (``rt_<id>_<secret>``) or a ``token=`` query value, wherever it appears
_TOKEN = re.compile(r"rt_[0-9a-f]{16}_[A-Za-z0-9_\-]+|(?<=token=)[^&\s\"']+")


class TokenRedactingFilter(logging.Filter):
    """Replaces anything that looks like an API token in a log record with ``[redacted]``.

    Installed on ``uvicorn.access``: no page takes a token in its URL any more, but a user may
    still paste one into a link, and the access log must not keep it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _TOKEN.sub("[redacted]", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _TOKEN.sub("[redacted]", record.msg)
        return True
