"""``/v1/jobs``: submit, list, inspect and cancel search jobs."""

from __future__ import annotations

import json
from functools import partial
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service.api._cluster import queue_info
from service.api._deps import CurrentUser, SettingsDep, StoreDep
from service.api._report import check_report_seeds
from service.api._schemas import ErrorDetail, JobPublic, JobsPublic
from service.settings import Settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_JSON_TYPES = {"application/json"}
_TEXT_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"}

_SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "a job spec (see README.md, 'The job spec') as JSON or YAML text",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid token"},
    404: {"description": "no such job (or another tenant's)"},
}


def _refuse(status_code: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status_code, content={"detail": {"field": field, "message": message}}
    )


def _check_limits(spec: Any, store: Any, settings: Settings, tenant: str) -> Settings:
    """The tenant's quota (``service/quotas.py``) applied to what one job may spend; returns
    the tenant's effective limits."""
    from service.quotas import check_spec, effective_settings

    limits = effective_settings(store, settings, tenant)
    check_spec(spec, limits, tenant)
    if spec.report is not None:
        check_report_seeds(spec.report.seeds, limits, "report.seeds")
    return limits


def _placement_problem(spec: Any, settings: Settings) -> tuple[str, str] | None:
    """A trial no node could ever place, when the cluster is known here: without
    ``ray_address`` the controller starts its Ray on this machine (``service/_placement.py``;
    a remote cluster is checked by the search driver, which fails the job at once)."""
    if settings.ray_address:
        return None
    from service._placement import local_nodes, placement_problem

    return placement_problem(
        spec.resources.cpu, spec.resources.gpu, local_nodes(), "this server's Ray (one machine)"
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    openapi_extra=_SPEC_BODY,
    responses={
        400: {"description": "body is not UTF-8 text"},
        413: {"description": "body larger than the limit"},
        415: {"description": "unsupported content type"},
        422: {"model": dict[str, ErrorDetail], "description": "spec refused; names the field"},
        429: {"description": "too many queued or running jobs for this tenant"},
        **_ERRORS,
    },
)
async def create_job(
    request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep
) -> Any:
    """Validate a job spec and queue it; the controller runs it.

    Nothing is written when the spec is refused.
    """
    from search_spaces import SpecError, parse_spec

    media_type = request.headers.get("content-type", "text/plain").split(";")[0].strip().lower()
    if media_type not in _JSON_TYPES | _TEXT_TYPES:
        return _refuse(
            415,
            f"unsupported content type {media_type!r}; send application/json, "
            "application/yaml or text/plain",
        )
    body = await request.body()  # the size limit is enforced while this streams in
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _refuse(400, f"body is not UTF-8 text (bad byte at offset {exc.start})")
    source: str | dict[str, Any] = text
    if media_type in _JSON_TYPES:
        try:
            source = json.loads(text)
        except json.JSONDecodeError as exc:
            return _refuse(422, f"invalid JSON: {exc.msg} at line {exc.lineno}", "spec")
        except (ValueError, RecursionError) as exc:  # a 5000-digit number, hostile nesting
            return _refuse(422, f"invalid JSON: {str(exc)[:200]}", "spec")
        if not isinstance(source, dict):
            return _refuse(422, "a job spec must be a JSON object", "spec")
    # A Ray cluster decides itself whether it has GPUs; only a local Ray needs one here.
    gpu_check = (lambda: True) if settings.ray_address else None
    try:
        spec = await run_in_threadpool(
            partial(
                parse_spec,
                gpu_available=gpu_check,
                local=False,  # a tenant's spec: no filesystem paths
                data_root=settings.data_root,
            ),
            source,
        )
    except SpecError as exc:
        return _refuse(422, exc.message, exc.field)
    limits = await run_in_threadpool(_check_limits, spec, store, settings, user.tenant)
    problem = await run_in_threadpool(_placement_problem, spec, settings)
    if problem is not None:
        return _refuse(422, problem[1], problem[0])
    job = await run_in_threadpool(
        store.create_job,
        user.tenant,
        spec.to_dict(),
        spec.name,
        max_active=limits.max_concurrent_jobs,
    )
    if request.app.state.on_job_created is not None:  # e.g. wake the embedded controller up
        request.app.state.on_job_created()
    return JobPublic.from_job(job)


@router.get("", response_model=JobsPublic, responses=_ERRORS)
def list_jobs(
    user: CurrentUser,
    store: StoreDep,
    status_filter: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = Query(
        None, alias="status"
    ),
    limit: int = Query(100, ge=1, le=1000),
) -> JobsPublic:
    """The caller's jobs (every tenant's for an admin), newest first."""
    jobs = store.list_jobs(user.tenant_filter, status=status_filter, limit=limit)
    queue = queue_info(store) if any(j.status == "queued" for j in jobs) else None
    return JobsPublic(data=[JobPublic.from_job(j, queue) for j in jobs], count=len(jobs))


@router.get("/{job_id}", response_model=JobPublic, responses=_ERRORS)
def get_job(job_id: str, user: CurrentUser, store: StoreDep) -> JobPublic:
    """A job's status, progress, best projected metric, timestamps and error text."""
    job = store.get_job(job_id, user.tenant_filter)
    return JobPublic.from_job(job, queue_info(store) if job.status == "queued" else None)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses={409: {"description": "the job already finished"}, **_ERRORS},
)
def cancel_job(job_id: str, user: CurrentUser, store: StoreDep) -> JobPublic:
    """Ask for a job to stop: a queued job is cancelled at once, a running one at the
    controller's next check (its status turns ``cancelled`` then)."""
    return JobPublic.from_job(store.request_cancel(job_id, user.tenant_filter))
