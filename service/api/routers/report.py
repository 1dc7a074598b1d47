"""``/v1/jobs/{id}/report``: the relaxation gain report of a job (read it, or ask for one)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service.api._deps import CurrentUser, SettingsDep, StoreDep
from service.api._report import check_report_seeds, read_job_report
from service.api._schemas import ReportPublic

router = APIRouter(prefix="/v1/jobs", tags=["report"])

#: seeds of a report asked for without saying how many (and without a spec default)
DEFAULT_REPORT_SEEDS = 5

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid token"},
    404: {"description": "no such job (or another tenant's)"},
}


@router.get("/{job_id}/report", response_model=ReportPublic, responses=_ERRORS)
def get_report(job_id: str, user: CurrentUser, store: StoreDep) -> dict[str, Any]:
    """Did relaxation help? The best configuration retrained on the report seeds, as found
    and with the relaxation off: per seed both test values, mean/median/std per arm, the
    paired difference with its 95 % paired t interval, and a verdict. ``status`` is
    ``not_requested`` until a report is asked for."""
    return read_job_report(store, store.get_job(job_id, user.tenant_filter))


@router.post(
    "/{job_id}/report",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReportPublic,
    openapi_extra={
        "requestBody": {
            "required": False,
            "description": '{"seeds": K} (default: the spec\'s report.seeds, else 5)',
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
    responses={
        409: {"description": "the job is running, failed, or was cancelled in its search"},
        422: {"description": "seeds refused; names the field"},
        429: {"description": "too many queued or running jobs for this tenant"},
        **_ERRORS,
    },
)
async def request_report(
    job_id: str, request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep
) -> Any:
    """Ask for the gain report of a finished job (or change its seeds): the job is queued
    again and a controller retrains its best configuration on the report seeds. Runs a
    previous report finished are kept; a cancelled report resumes."""
    job = await run_in_threadpool(store.get_job, job_id, user.tenant_filter)
    body = await request.body()
    try:
        payload = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):
        return _refuse('the body must be a JSON object such as {"seeds": 5}', "body")
    if not isinstance(payload, dict) or set(payload) - {"seeds"}:
        return _refuse("the body must be a JSON object with at most the key 'seeds'", "body")
    default = (job.spec.get("report") or {}).get("seeds") or DEFAULT_REPORT_SEEDS
    from service.quotas import effective_settings

    limits = await run_in_threadpool(effective_settings, store, settings, job.tenant)
    seeds = check_report_seeds(payload.get("seeds", default), limits, "seeds")
    job = await run_in_threadpool(
        store.request_report,
        job.id,
        seeds,
        user.tenant_filter,
        max_active=limits.max_concurrent_jobs,
    )
    if request.app.state.on_job_created is not None and job.status == "queued":
        request.app.state.on_job_created()  # wake the embedded controller up
    return await run_in_threadpool(read_job_report, store, job)


def _refuse(message: str, field: str) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": {"field": field, "message": message}})
