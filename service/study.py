"""A job's Optuna study as the record of its search: the names of what the search writes on
it, reading progress and failures back, and reconciling what a dead driver left behind.

The study (``job-<id>``, :func:`service.artifacts.study_name`) is the truth about a job's
trials: the progress the API shows, the budget a resumed driver still has to spend, and the
best trial the export picks are all read from it here. Nothing in this module imports Ray;
torch only when a trial's saved state is read (:func:`reconcile_study`).
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search_spaces import STAGE_ATTR, FixedParam, JobSpec, space_for_stage
from service._internals import fail_left_running
from service._json import json_safe
from service.artifacts import trial_dir
from service.errors import ExportFailed
from service.progress import Progress

log = logging.getLogger(__name__)

#: the metric the search optimises and the schedulers compare (each epoch's report)
OBJECTIVE = "val_projected"

# ---- study user attributes -------------------------------------------------------------
#: the job's id, its spec (as JSON) and the folder of its trials' state folders
STUDY_JOB_ID = "job_id"
STUDY_SPEC = "spec"
STUDY_TRIALS_DIR = "trials_dir"
#: seconds the search has run, summed over every driver run of the job
SEARCH_SECONDS = "search_seconds"
#: the exported best trial: its number, checkpoint folder and Optuna artifact id (Optuna
#: refuses edits to finished trials, so the link lives on the study)
BEST_TRIAL = "best_trial"
BEST_CHECKPOINT = "best_checkpoint"
BEST_ARTIFACT_ID = "best_artifact_id"

# ---- trial user attributes -------------------------------------------------------------
#: why a PRUNED or FAIL trial stopped (one of the reasons below, or ``diverged: …``,
#: ``error: …``, ``pruned by the scheduler after epoch N``)
STOP_REASON = "stop_reason"
#: the trial's state folder (``<artifacts>/jobs/<id>/trials/<number>``)
CHECKPOINT = "checkpoint"
#: one per-epoch report (:func:`history_keys`) per epoch
HISTORY = "history"
#: a re-queued trial: the state folder it continues from and the epochs trained before
RESUME_FROM = "resume_from"
HISTORY_BEFORE = "history_before"
REQUEUED_FROM = "requeued_from"
#: the trial's final metrics, set when it ends (with ``final_theta``)
FINAL_ATTRS = (
    "val_projected",
    "val_relaxed",
    "equivariance_error_relaxed",
    "equivariance_error_projected",
)

# ---- stop reasons ----------------------------------------------------------------------
#: a trial a dead driver left running: it was re-queued as a new trial, so it does not use
#: up budget (:func:`uses_budget`)
REQUEUED = "driver stopped; re-queued"

#: the trials a cancel stopped
CANCELLED = "job cancelled"
#: the trials the spec's ``timeout_s`` stopped
TIMED_OUT = "job timed out"
#: reasons that say why the search stopped a trial, not what went wrong with it
NOT_THE_TRIALS_FAULT = (REQUEUED, CANCELLED, TIMED_OUT)


@cache
def history_keys() -> tuple[str, ...]:
    """The per-epoch report's keys (``workers.training.EpochReport``): one history entry.
    (Imports the workers, hence torch: called when a trial reports, never at import.)"""
    from dataclasses import fields

    from workers.training import EpochReport

    return tuple(f.name for f in fields(EpochReport))


def optuna_storage(db_url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on the job database (pre-ping: survives server restarts).

    On a server database the pool is bounded like the job store's: a driver uses few
    connections at once (Tune's callbacks, the progress watcher, the export), and every
    controller holding up to ``pool_size + max_overflow`` of them must fit under the server's
    ``max_connections``; connections are recycled before proxies and firewalls that drop idle
    ones after half an hour or more do.
    """
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if db_url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=5, max_overflow=10, pool_recycle=1800)
    return optuna.storages.RDBStorage(db_url, engine_kwargs=kwargs, heartbeat_interval=None)


def trial_folder(study: optuna.Study, trial: FrozenTrial | optuna.trial.Trial) -> Path:
    """A trial's state folder: its ``checkpoint`` attribute, else the folder its number
    names under the study's ``trials_dir`` (a driver may die before the attribute is
    written)."""
    recorded = trial.user_attrs.get(CHECKPOINT)
    if recorded:
        return Path(recorded)
    return trial_dir(study.user_attrs.get(STUDY_TRIALS_DIR, "."), trial.number)


def failure_reason(study: optuna.Study) -> str | None:
    """``trial N: <reason>`` of the first trial that failed on its own (not re-queued, not
    stopped by a cancel or a timeout): what a job that found nothing says about why."""
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        reason = trial.user_attrs.get(STOP_REASON)
        if trial.state != TrialState.FAIL or not reason or reason in NOT_THE_TRIALS_FAULT:
            continue
        return f"trial {trial.number}: {reason.removeprefix('error: ')}"
    return None


# ---- resume: reconcile what a dead driver left behind ----------------------------------
def reconcile_study(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a dead driver FAIL and re-queue their parameters (with
    their epoch history and last state folder so they continue). Returns how many."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        fail_left_running(study, trial, STOP_REASON, REQUEUED)
        attrs: dict[str, Any] = {REQUEUED_FROM: trial.number}
        if STAGE_ATTR in trial.user_attrs:  # a two-stage trial stays in its stage
            attrs[STAGE_ATTR] = trial.user_attrs[STAGE_ATTR]
        folder = trial_folder(study, trial)
        if (folder / "state.pt").exists():
            attrs[RESUME_FROM] = str(folder)
            # the saved state is the truth about what was trained (Optuna may have missed
            # the last epoch's write if the driver or the database went away)
            attrs[HISTORY_BEFORE] = _saved_history(folder) or trial.user_attrs.get(HISTORY, [])
        study.enqueue_trial(trial.params, user_attrs=attrs)
        count += 1
    return count


def _saved_history(folder: Path) -> list[dict[str, Any]]:
    """The per-epoch reports stored in a trial's ``state.pt`` (loaded without pickle)."""
    import torch

    try:
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # an unreadable state: fall back to what Optuna recorded
        log.warning("cannot read %s/state.pt: %s", folder, exc)
        return []
    return [json_safe(dict(r)) for r in state.get("reports", [])]


# ---- progress --------------------------------------------------------------------------
def uses_budget(trial: FrozenTrial) -> bool:
    """Whether ``trial`` used up budget: COMPLETE, PRUNED, and FAIL unless re-queued."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get(STOP_REASON) != REQUEUED


def trial_stage(trial: FrozenTrial) -> int | None:
    """The stage of a two-stage job's trial (``None``: a joint job's)."""
    stage = trial.user_attrs.get(STAGE_ATTR)
    return stage if isinstance(stage, int) else None


def current_stage(trials: list[FrozenTrial]) -> int | None:
    """The latest stage that has trials (``None`` for a joint job or before any trial)."""
    return max((s for t in trials if (s := trial_stage(t)) is not None), default=None)


def finished_count(study: optuna.Study) -> int:
    """Trials that used up budget: COMPLETE, PRUNED, and FAIL that were not re-queued."""
    return sum(uses_budget(t) for t in study.get_trials(deepcopy=False))


def progress_of(study: optuna.Study, total: int, mode: str) -> dict[str, Any]:
    """Counts by state and the best projected value so far (from the study: the truth);
    for a two-stage job also ``stage``, the latest stage that has trials. The shape is
    :class:`service.progress.Progress`, which the store, the API and the pages read."""
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    best = None
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
            if t.value is not None and (
                best is None or (t.value > best if mode == "max" else t.value < best)
            ):
                best = t.value
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == TrialState.FAIL:
            if uses_budget(t):  # not re-queued
                counts["failed"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
    stage = current_stage(trials)
    return Progress(**counts, total=total, best_value=best, stage=stage or None).to_dict()


# ---- the best trial --------------------------------------------------------------------
def best_trial(study: optuna.Study) -> FrozenTrial:
    """The COMPLETE trial with the best projected validation metric (never Ray's latest)."""
    completed = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None
    ]
    if not completed:
        raise ExportFailed("no completed trial to export")
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return (max if maximize else min)(completed, key=lambda t: float(t.value))  # type: ignore[arg-type]


def trial_hparams(job_spec: JobSpec, trial: FrozenTrial) -> dict[str, Any]:
    """The full flat hyperparameters a trial trained with (defaults + fixed + sampled):
    fixed parameters of the space are not Optuna params."""
    space = space_for_stage(job_spec.resolved_space(), trial.user_attrs.get(STAGE_ATTR))
    values: dict[str, Any] = {}
    for key, param in space.params.items():
        if key in trial.params:
            values[key] = trial.params[key]
        elif isinstance(param, FixedParam) and space.is_active(key, values):
            values[key] = param.value
    return values
