"""``/v1/jobs/{id}/trials``: the trials of a job's Optuna study."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from service.api._deps import CurrentUser, StoreDep
from service.api._schemas import TrialPublic, TrialsPublic, finite
from service.errors import StoreError
from service.store import JobStore

router = APIRouter(prefix="/v1/jobs", tags=["trials"])


def load_trials(store: JobStore, study_name: str) -> list[Any] | None:
    """The study's frozen trials, or ``None`` when the study does not exist yet."""
    storage = store.optuna_storage()
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    except Exception as exc:  # Optuna's tables missing (`db upgrade` not run) and the like
        raise StoreError("reading the job's Optuna study", exc) from exc
    return storage.get_all_trials(study_id, deepcopy=False)


def _trial_public(trial: Any, with_history: bool) -> TrialPublic:
    attrs = dict(trial.user_attrs)
    if not with_history:
        attrs.pop("history", None)
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    return TrialPublic(
        number=trial.number,
        state=trial.state.name,
        value=finite(trial.value) if trial.values is not None and len(trial.values) == 1 else None,
        params=finite(dict(trial.params)),
        user_attrs=finite(attrs),
        last_step=trial.last_step,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        duration_s=duration,
    )


@router.get(
    "/{job_id}/trials",
    response_model=TrialsPublic,
    responses={401: {"description": "missing or invalid token"}, 404: {"description": "no job"}},
)
def list_trials(
    job_id: str,
    user: CurrentUser,
    store: StoreDep,
    history: bool = Query(False, description="include each trial's per-epoch history"),
) -> TrialsPublic:
    """The job's trials in order: state, parameters, projected value and the user attributes
    the trainable records (relaxed metric, equivariance errors, θ, …). Empty before the search
    has created its study."""
    job = store.get_job(job_id, user.tenant_filter)
    trials = load_trials(store, job.study_name) or []
    data = [_trial_public(t, history) for t in sorted(trials, key=lambda t: t.number)]
    return TrialsPublic(job_id=job.id, study=job.study_name, data=data, count=len(data))
