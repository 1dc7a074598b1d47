"""HTML dashboards: one page per job, the job list, and the comparison of jobs, plus the JSON
their scripts read.

A browser signs in once (``/signin``) and then carries a session cookie; scripts send a bearer
header. No page takes a token in its URL, and no link carries one. A page fetched with a
bearer header (``relaxtune dashboard JOB --out FILE``) is self-contained (plotly.js inlined, to
open offline); a signed-in browser gets the light page, whose static files are cached, and
which updates itself in place from ``/v1/jobs/{id}/dashboard/data`` while the job runs.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse

from service.api._deps import CurrentUser, PageUser, SettingsDep, StoreDep
from service.api._report import read_job_report
from service.api._schemas import ErrorDetail
from service.api._trials_sql import read_study_snapshot
from service.artifacts import best_dir
from service.store import Job, JobStore, Principal

router = APIRouter(tags=["dashboards"])

_MAX_COMPARED = 8
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}},
    303: {"description": "a browser without a session: sent to /signin"},
    401: {"description": "missing or invalid token"},
    404: {"description": "no such job (or another tenant's)"},
}
_COMPARE_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": dict[str, ErrorDetail], "description": "more jobs than can be compared"},
}
_JSON_RESPONSES: dict[int | str, dict[str, Any]] = {
    304: {"description": "unchanged since the response whose ETag is in If-None-Match"},
    401: {"description": "missing or invalid token"},
    404: {"description": "no such job (or another tenant's)"},
}


def _load_study(store: JobStore, job: Job) -> Any:
    """The job's study as a ``StudySnapshot`` read with plain SQL; before the search has
    created it, an empty one, so the page still shows the job's state."""
    from optuna.study import StudyDirection

    from service.dashboard import StudySnapshot

    snapshot = read_study_snapshot(store, job.study_name)
    if snapshot is None:
        mode = (job.spec.get("objective") or {}).get("mode", "max")
        direction = StudyDirection.MAXIMIZE if mode == "max" else StudyDirection.MINIMIZE
        return StudySnapshot(directions=[direction], trials=[])
    return snapshot


def _certificate(settings_artifacts: Any, job: Job) -> dict[str, Any] | None:
    path = best_dir(settings_artifacts, job.id) / "certificate.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _page_options(request: Request, user: Principal) -> Any:
    """Linked assets and the CSRF token for a signed-in browser; inline for a script."""
    from service.dashboard import PageOptions

    session = getattr(request.state, "session", None)
    if session is None:
        return PageOptions(inline=True)
    return PageOptions(inline=False, user=user, csrf=session.csrf)


class _ViewCache:
    """The last few job views by ETag: a page and its polls in several tabs build one view
    per change of the study, not one per request."""

    def __init__(self, size: int = 32) -> None:
        self._views: OrderedDict[str, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                self._views.move_to_end(key)
            return view

    def put(self, key: str, view: Any) -> None:
        with self._lock:
            self._views[key] = view
            while len(self._views) > self._size:
                self._views.popitem(last=False)


def _views(request: Request) -> _ViewCache:
    state = request.app.state
    cache = getattr(state, "dashboard_views", None)
    if cache is None:
        cache = state.dashboard_views = _ViewCache()
    return cache


def _job_view(
    request: Request, store: JobStore, settings: Any, job: Job, interactive: bool
) -> tuple[Any, str]:
    """The job's ``DashboardView`` and its ETag (over the study's version, the job row, the
    certificate and the report)."""
    from service.dashboard import dashboard_view, view_etag

    # The start-up warm-up imports plotly, pandas and scikit-learn in a thread; building a view
    # at the same time would import them concurrently, which can meet a half-initialised
    # module. Wait for it (it takes seconds, once per process).
    if getattr(request.app.state, "dashboards_warming", False):
        request.app.state.dashboards_warm.wait(timeout=120)
    certificate = _certificate(settings.artifacts, job)
    report = read_job_report(store, job)
    _, study_etag = request.app.state.trials_cache.get(store, job.id, job.study_name, True)
    job_dict = job.to_dict()
    job_dict.pop("heartbeat_at", None)  # changes every few seconds, shown nowhere
    etag = view_etag(study_etag, job_dict, certificate, report, interactive)
    cache = _views(request)
    view = cache.get(etag)
    if view is None:
        view = dashboard_view(
            _load_study(store, job),
            job_dict,
            certificate,
            report=report,
            interactive=interactive,
        )
        cache.put(etag, view)
    return view, etag


@router.get("/v1/jobs/{job_id}/dashboard", response_class=HTMLResponse, responses=_RESPONSES)
def job_dashboard(
    job_id: str, request: Request, user: PageUser, store: StoreDep, settings: SettingsDep
) -> HTMLResponse:
    """The job's dashboard: learning curves (projected and relaxed), θ schedules, equivariance
    error, optimisation history, parameter importances, the best model's certificate and, once
    asked for, the relaxation gain report. A running job's page updates itself in place."""
    from service.dashboard import render_dashboard

    job = store.get_job(job_id, user.tenant_filter)
    options = _page_options(request, user)
    view, etag = _job_view(request, store, settings, job, interactive=not options.inline)
    page = render_dashboard(
        None,  # type: ignore[arg-type]  # the view is given
        job.to_dict(),
        page=options,
        view=view,
        live_url=None if options.inline else f"/v1/jobs/{job.id}/dashboard/data",
        live_interval_s=settings.dashboard_refresh_s,
        etag=etag,
    )
    return HTMLResponse(page)


@router.get("/v1/jobs/{job_id}/dashboard/data", responses=_JSON_RESPONSES)
def job_dashboard_data(
    job_id: str, request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep
) -> Response:
    """What a job page shows, for its in-place updates: ``fragments`` (rendered parts of the
    page by element id), ``figures`` (plotly figures by chart id, or a ``message``),
    ``finished`` and ``has_trials``. Carries an ``ETag``; ``If-None-Match`` naming it gets
    ``304 Not Modified`` while nothing changed, and otherwise only the fragments and figures
    that changed since the answer it names (all of them when that one is unknown)."""
    job = store.get_job(job_id, user.tenant_filter)
    interactive = getattr(request.state, "session", None) is not None
    view, etag = _job_view(request, store, settings, job, interactive=interactive)
    headers = {"ETag": etag, "Vary": "Accept-Encoding, Cookie, Authorization"}
    presented = [t.strip() for t in request.headers.get("if-none-match", "").split(",")]
    if etag in presented:
        return Response(status_code=304, headers=headers)
    # the view the page shows now, when still known: send only what changed since
    earlier = next((v for t in presented if t and (v := _views(request).get(t)) is not None), None)
    body = {
        **view.changes_since(earlier),
        "finished": job.finished,
        "has_trials": not view.context["no_trials"],
    }
    return Response(
        content=json.dumps(body, separators=(",", ":"), allow_nan=False),
        media_type="application/json",
        headers=headers,
    )


def _jobs(store: JobStore, user: Principal) -> list[dict[str, Any]]:
    return [j.to_dict() for j in store.list_jobs(user.tenant_filter, limit=500)]


@router.get("/v1/dashboard", response_class=HTMLResponse, responses=_RESPONSES)
def jobs_dashboard(request: Request, user: PageUser, store: StoreDep) -> HTMLResponse:
    """The caller's jobs (every tenant's, with a tenant column, for an admin): status,
    failure reason, progress, best value, times; links to each dashboard, a form to submit a
    spec, cancel buttons, and the choice of jobs to compare."""
    from service.dashboard import render_jobs_list

    page = render_jobs_list(
        _jobs(store, user), show_tenant=user.admin, page=_page_options(request, user)
    )
    return HTMLResponse(page)


@router.get("/v1/dashboard/rows", response_class=HTMLResponse, responses=_RESPONSES)
def jobs_dashboard_rows(user: CurrentUser, store: StoreDep) -> HTMLResponse:
    """The job list's table alone (an HTML fragment the list page refreshes itself with)."""
    from service.dashboard import render_jobs_rows

    return HTMLResponse(render_jobs_rows(_jobs(store, user), show_tenant=user.admin))


def _compare_data(store: JobStore, user: Principal, job_ids: list[str]) -> dict[str, Any]:
    from service.dashboard import ComparedJob, compare_jobs

    unique = list(dict.fromkeys(job_ids))
    if len(unique) > _MAX_COMPARED:
        raise HTTPException(
            status_code=422,
            detail={"field": "job", "message": f"compare at most {_MAX_COMPARED} jobs at once"},
        )
    items = []
    for job_id in unique:
        job = store.get_job(job_id, user.tenant_filter)  # another tenant's job: 404
        items.append(ComparedJob(job.to_dict(), _load_study(store, job).trials))
    return compare_jobs(items)


JobIds = Query(
    default_factory=list,
    alias="job",
    description="a job id; repeat for each job (two or more, of the same task)",
)


@router.get("/v1/compare", responses={**_JSON_RESPONSES, **_COMPARE_RESPONSES})
def compare(user: CurrentUser, store: StoreDep, job_ids: list[str] = JobIds) -> Any:
    """Two or more jobs of one task side by side: per job the best projected value, the best
    configuration, the best trial's learning curves and the best so far by trial; where one
    job searched the ``baseline`` preset, each other's ``improvement`` over it (relative,
    positive = better). ``problem`` says why jobs cannot be compared (fewer than two,
    different tasks or objectives)."""
    return _compare_data(store, user, job_ids)


@router.get(
    "/v1/compare/dashboard",
    response_class=HTMLResponse,
    responses={**_RESPONSES, 422: {"description": "more jobs than can be compared"}},
)
def compare_dashboard(
    request: Request, user: PageUser, store: StoreDep, job_ids: list[str] = JobIds
) -> HTMLResponse:
    """The comparison as a page: a table of the jobs' best values (and improvement over a
    baseline job), their best trials' learning curves on one set of axes, their best-so-far
    curves, and their best configurations."""
    from service.dashboard import render_compare

    data = _compare_data(store, user, job_ids)
    return HTMLResponse(render_compare(data, page=_page_options(request, user)))
