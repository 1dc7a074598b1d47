"""``/healthz``: liveness plus a database round trip (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api._deps import StoreDep
from service.errors import StoreError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(store: StoreDep) -> JSONResponse:
    """200 when the API and its database answer, 503 otherwise."""
    try:
        store.ping()
    except StoreError:
        return JSONResponse(status_code=503, content={"status": "degraded", "db": "unreachable"})
    return JSONResponse(content={"status": "ok", "db": "ok"})
