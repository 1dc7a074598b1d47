"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service._json import json_safe
from service.progress import Progress
from service.store import Job

__all__ = [
    "BestPublic",
    "ErrorDetail",
    "JobPublic",
    "JobsPublic",
    "ReportPublic",
    "TrialPublic",
    "TrialsPublic",
]


class ErrorDetail(BaseModel):
    """Why a request was refused: the dotted spec field (or ``None``) and a message."""

    field: str | None = None
    message: str


class JobPublic(BaseModel):
    """A job as clients see it."""

    id: str
    name: str
    tenant: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    cancel_requested: bool
    progress: Progress = Field(
        description="complete, pruned, failed, running, total trials and best_value (the "
        "best projected metric so far)"
    )
    best: dict[str, Any] | None = Field(None, description="the best trial, once known")
    error: str | None = None
    spec: dict[str, Any]
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    queue: dict[str, Any] | None = Field(
        None,
        description="a queued job's place: position (1 = next to start) and reason (why it "
        "waits), as the scheduling controller last saw it",
    )
    links: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_job(cls, job: Job, queue: dict[str, dict[str, Any]] | None = None) -> JobPublic:
        """Project a stored job (internal fields such as ``claimed_by`` stay hidden);
        ``queue`` is :func:`service.api._cluster.queue_info` (for a queued job's place)."""
        base = f"/v1/jobs/{job.id}"
        place = None
        if job.status == "queued" and queue is not None:
            place = (
                queue.get(job.id)
                or queue.get("*")
                or {
                    "position": None,
                    "reason": "just queued; the controller has not planned it yet",
                }
            )
        return cls(
            queue=place,
            id=job.id,
            name=job.name,
            tenant=job.tenant,
            status=job.status,
            cancel_requested=job.cancel_requested,
            progress=job.progress_info,
            best=json_safe(job.best),
            error=job.error,
            spec=job.spec,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            heartbeat_at=job.heartbeat_at,
            links={
                "self": base,
                "trials": f"{base}/trials",
                "dashboard": f"{base}/dashboard",
                "best": f"{base}/best",
                "checkpoint": f"{base}/best/checkpoint",
                "report": f"{base}/report",
            },
        )


class JobsPublic(BaseModel):
    """A page of jobs, newest first."""

    data: list[JobPublic]
    count: int


class TrialPublic(BaseModel):
    """One Optuna trial of a job's study."""

    number: int
    state: str = Field(description="RUNNING | COMPLETE | PRUNED | FAIL | WAITING")
    value: float | None = Field(None, description="the objective: projected validation metric")
    params: dict[str, Any]
    user_attrs: dict[str, Any] = Field(
        description="val_projected, val_relaxed, equivariance_error_projected, "
        "equivariance_error_relaxed, final_theta, checkpoint, … (history only on request)"
    )
    last_step: int | None = Field(None, description="last epoch with an intermediate value")
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None
    duration_s: float | None = None


class TrialsPublic(BaseModel):
    """The trials of a job's study (empty before the search starts)."""

    job_id: str
    study: str
    data: list[TrialPublic]
    count: int


class BestPublic(BaseModel):
    """The exported best checkpoint of a finished job."""

    job_id: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    certificate: dict[str, Any]
    config: dict[str, Any]
    files: list[str]


class ReportPublic(BaseModel):
    """A job's relaxation gain report (``service/gain.py``): the best configuration retrained
    on fixed seeds, as found and with the relaxation off (θ = 0, all else equal)."""

    job_id: str
    status: str = Field(
        description="not_requested | pending | running | complete | incomplete | nothing_to_compare"
    )
    requested_seeds: int | None = None
    seeds: list[int] = Field(description="the report's training seeds (never the search seed)")
    search_seed: int
    source_trial: int | None = Field(None, description="the best trial that was retrained")
    metric: str
    quantity: str = Field(description="what is compared, e.g. test error (1 − accuracy)")
    better: str = Field(description="lower | higher")
    hparams: dict[str, Any] | None = None
    relaxing: bool | None = Field(None, description="whether the best configuration relaxes")
    runs: list[dict[str, Any]] = Field(
        description="per seed: as_found, relaxation_off, difference (as found − off)"
    )
    arms: dict[str, Any] = Field(description="n, mean, median, std of each arm")
    difference: dict[str, Any] | None = Field(
        None, description="mean, std, ci (95 % paired t interval), relative, method, …"
    )
    verdict: str | None = None
    failures: list[dict[str, Any]] = Field(default_factory=list)
    progress: dict[str, Any]
