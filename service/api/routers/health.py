"""``/healthz``: liveness plus a database round trip (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api._deps import StoreDep
from service.errors import StoreError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(request: Request, store: StoreDep) -> JSONResponse:
    """200 when the API and its database answer, 503 otherwise. ``dashboards`` says whether
    the start-up warm-up (plotly.js, scikit-learn) has finished: ``warm`` or ``warming``."""
    warm = request.app.state.dashboards_warm.is_set()
    dashboards = "warm" if warm else "warming"
    try:
        store.ping()
    except StoreError:
        return JSONResponse(
            status_code=503,
            content={"status": "degraded", "db": "unreachable", "dashboards": dashboards},
        )
    return JSONResponse(content={"status": "ok", "db": "ok", "dashboards": dashboards})
