"""The FastAPI application factory."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi_offline import FastAPIOffline

from service.api._body_limit import BodySizeLimitMiddleware
from service.api._compression import NegotiatedGZipMiddleware
from service.api._deps import SignInRequired
from service.api._errors import install_error_handlers
from service.api._security import SecurityHeadersMiddleware, TokenRedactingFilter
from service.api._session import SessionSigner
from service.api._trials_sql import TrialsCache
from service.api.routers import best, cluster, dashboards, health, jobs, report, trials, web
from service.settings import Settings
from service.store import JobStore

__all__ = ["app_from_env", "create_app"]

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Hyperparameter search for equivariant networks trained with constraint relaxation.

Submit a job spec, follow its trials and dashboard, and download the best **projected,
exactly equivariant** model. Every `/v1` route needs a bearer token
(`relaxtune token create NAME`) or, in a browser, the session cookie of `/signin`; a token
sees only its tenant's jobs, an admin token all.
"""

_REDACTOR = TokenRedactingFilter()


def _redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if _REDACTOR not in access.filters:
        access.addFilter(_REDACTOR)


async def _sign_in_redirect(request: Request, exc: Exception) -> RedirectResponse:
    assert isinstance(exc, SignInRequired)
    from urllib.parse import quote

    return RedirectResponse(f"/signin?next={quote(exc.next_path, safe='/')}", status_code=303)


def _warm_up_dashboards(done: threading.Event) -> None:
    try:
        from service.dashboard import warm_up

        warm_up()
    except Exception:  # pages still render, only the first one is slower
        logger.warning("dashboard warm-up failed", exc_info=True)
    finally:
        # Everything loaded so far (plotly, scikit-learn, optuna, …) lives as long as the
        # process: keep it out of the garbage collector's full passes, which would otherwise
        # walk it and pause every request for a 100 ms or more now and then.
        gc.collect()
        gc.freeze()
        done.set()


def create_app(
    settings: Settings,
    store: JobStore | None = None,
    *,
    on_job_created: Callable[[], None] | None = None,
) -> FastAPI:
    """Build the API on ``store`` (default: a store on ``settings.db``). ``on_job_created``
    is called after each accepted job (``relaxtune serve`` wakes its controller up with it).

    No import-time globals: tests build an app on a throwaway database. The app does not create
    tables; run ``relaxtune db upgrade`` (``relaxtune serve`` does) first.
    """
    owns_store = store is None
    job_store = store if store is not None else JobStore(settings.db)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # FastAPI runs every `def` endpoint and dependency on anyio's default thread limiter
        # (40 threads); under a burst, 40 threads contending for the GIL cost more CPU per
        # request than they overlap (bench/api_load.py): cap them at settings.api_threads.
        to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        # plotly.js and scikit-learn load in the background, not in the first dashboard request
        if settings.warm_up_dashboards:
            app.state.dashboards_warming = True  # pages wait for it (routers/dashboards.py)
            threading.Thread(
                target=_warm_up_dashboards,
                args=(app.state.dashboards_warm,),
                name="dashboard-warm-up",
                daemon=True,
            ).start()
        else:
            app.state.dashboards_warm.set()
        yield
        if owns_store:
            job_store.close()

    # /docs and /redoc from the Swagger UI and ReDoc bundles of the fastapi-offline package,
    # not a CDN: they work on an isolated cluster, and no page loads another origin's script.
    app = FastAPIOffline(
        title="relaxtune",
        version="0.1.0",
        description=_DESCRIPTION,
        lifespan=lifespan,
        static_url="/static-docs",
    )
    _redact_access_log()
    app.state.settings = settings
    app.state.store = job_store
    app.state.trials_cache = TrialsCache()
    app.state.on_job_created = on_job_created
    app.state.dashboards_warm = threading.Event()  # set by the warm-up thread (/healthz)
    app.state.sessions = SessionSigner(settings, job_store)
    install_error_handlers(app)
    app.add_exception_handler(SignInRequired, _sign_in_redirect)
    # Outermost last: the size limit sees the raw request, then the security headers wrap
    # every answer, compressed or not (static files and trials come compressed already).
    app.add_middleware(NegotiatedGZipMiddleware, minimum_size=1024, compresslevel=6)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    modules = (health, jobs, cluster, trials, best, report, dashboards, web)
    for module in modules:
        app.include_router(module.router)
    # Kept for the 405 handler, which must see every route of a path.
    app.state.api_routes = [route for module in modules for route in module.router.routes]
    return app


def app_from_env() -> FastAPI:
    """App configured from ``RELAXTUNE_*`` variables (``uvicorn --factory`` entry point)."""
    return create_app(Settings())
