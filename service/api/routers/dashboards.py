"""HTML dashboards: one page per job and a job list (token accepted in the query string)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from service.api._deps import DashboardUser, QueryToken, SettingsDep, StoreDep
from service.api._report import read_job_report
from service.api._trials_sql import read_study_snapshot
from service.artifacts import best_dir
from service.store import Job, JobStore

router = APIRouter(tags=["dashboards"])

_REFRESH_S = 15
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}},
    401: {"description": "missing or invalid token"},
    404: {"description": "no such job (or another tenant's)"},
}


def _token_suffix(token: str | None) -> str:
    # Links on a page opened with ?token= must carry it on, or the next page is a 401.
    return f"?token={quote(token, safe='')}" if token else ""


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


@router.get("/v1/jobs/{job_id}/dashboard", response_class=HTMLResponse, responses=_RESPONSES)
def job_dashboard(
    job_id: str,
    user: DashboardUser,
    store: StoreDep,
    settings: SettingsDep,
    token: QueryToken = None,
) -> HTMLResponse:
    """The job's dashboard: learning curves (projected and relaxed), θ schedules, equivariance
    error, optimisation history, parameter importances, the best model's certificate and, once
    asked for, the relaxation gain report."""
    from service.dashboard import render_dashboard

    job = store.get_job(job_id, user.tenant_filter)
    page = render_dashboard(
        _load_study(store, job),
        job.to_dict(),
        _certificate(settings.artifacts, job),
        refresh_seconds=None if job.finished else _REFRESH_S,
        jobs_link="/v1/dashboard" + _token_suffix(token),
        report=read_job_report(store, job),
    )
    return HTMLResponse(page)


@router.get("/v1/dashboard", response_class=HTMLResponse, responses=_RESPONSES)
def jobs_dashboard(user: DashboardUser, store: StoreDep, token: QueryToken = None) -> HTMLResponse:
    """A page listing the caller's jobs, each linking to its dashboard."""
    from service.dashboard import render_jobs_list

    jobs = store.list_jobs(user.tenant_filter, limit=500)
    page = render_jobs_list(
        [j.to_dict() for j in jobs],
        link_suffix=_token_suffix(token),
        refresh_seconds=_REFRESH_S if any(not j.finished for j in jobs) else None,
    )
    return HTMLResponse(page)
