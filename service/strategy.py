"""The stages of a job's search, planned from its Optuna study (the study is the record).

A ``joint`` job is one stage: every parameter of the space, the whole budget. A
``two_stage`` job (``search_spaces._strategy``) runs

1. stage 1: the optimiser parameters with the relaxation off, on its share of the budget;
2. stage 2: the whole space with the optimiser held at stage 1's best trial's values
   (Optuna's ``PartialFixedSampler``, so they are still recorded as the trial's parameters),
   which leaves only the relaxation to search.

Both stages are trials of the job's one study; each trial carries its stage in the user
attribute ``stage``. :func:`next_stage` reads the study and says what is left to run, so a
driver that died in stage 2 resumes in stage 2 (stage 1's trials are kept, not rerun), and
one that died in stage 1 finishes stage 1 first.

Each stage has its own TPE sampler, with random start-up trials sized to what that stage
searches (:func:`search_spaces.startup_trials`). TPE reads every finished trial of the
study: stage 2's start-up count is therefore offset by stage 1's trials, and its split into
good and bad trials ranks stage-2 trials together with stage 1's (which carry no relaxation
parameters, so they add no observation). A relaxation thus counts as good once it comes
near the tuned baseline; until one does, TPE's model of the good relaxations is its prior
and it explores.

Stage 2 does not retrain the θ = 0 configuration of stage 1's best: that is stage 1's best
trial itself (same hyperparameters, same seed), already in the study, and the job's best
is taken over both stages.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search_spaces import (
    STAGE_ATTR,
    JobSpec,
    is_optimiser_key,
    relaxation_keys,
    stage1_space,
    stage_trials,
    startup_trials,
)
from service.errors import SearchFailed
from service.study import trial_stage, uses_budget

STAGE_NAMES = {1: "optimiser, relaxation off", 2: "relaxation, optimiser fixed"}


@dataclass(frozen=True)
class Stage:
    """What one Tune run of the job launches."""

    #: 1 or 2 for a two-stage job, ``None`` for a joint one
    number: int | None
    #: trials still to launch in this stage
    trials: int
    #: define-by-run space: Optuna trial -> full flat hyperparameters
    suggest: Callable[[Any], dict[str, Any]]
    sampler: optuna.samplers.BaseSampler
    #: user attributes set on every trial of the stage
    attrs: dict[str, Any] = field(default_factory=dict)


def tpe_sampler(seed: int, n_startup: int) -> optuna.samplers.TPESampler:
    """The job's sampler: multivariate TPE over the group-decomposed space, constant liar."""
    with warnings.catch_warnings():
        # `group` is flagged experimental by Optuna; its interface is what we rely on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            constant_liar=True,
            n_startup_trials=n_startup,
            # the relax spaces are conditional (a schedule family's timing parameters exist
            # only when it is drawn): multivariate TPE over the group-decomposed space models
            # the parameters that occur together jointly, instead of one by one
            multivariate=True,
            group=True,
        )


def next_stage(spec: JobSpec, study: optuna.Study) -> Stage | None:
    """The stage to run next and its remaining trials; ``None`` when the budget is spent.

    Raises ``RuntimeError`` when stage 2 is due but stage 1 completed no trial.
    """
    space = spec.resolved_space()
    total = spec.budget.trials
    trials = study.get_trials(deepcopy=False)
    strategy = spec.strategy
    if strategy is None or strategy.name == "joint" or _started_joint(trials):
        left = total - sum(uses_budget(t) for t in trials)
        if left <= 0:
            return None
        n_startup = startup_trials(len(space.searched_keys()), total)
        return Stage(None, left, space.suggest, tpe_sampler(spec.seed, n_startup))
    first, second = stage_trials(strategy, total)
    left = first - sum(uses_budget(t) for t in trials if t.user_attrs.get(STAGE_ATTR) == 1)
    if left > 0:
        space1 = stage1_space(space)
        n_startup = startup_trials(len(space1.searched_keys()), first)
        return Stage(1, left, space1.suggest, tpe_sampler(spec.seed, n_startup), {STAGE_ATTR: 1})
    left = second - sum(uses_budget(t) for t in trials if t.user_attrs.get(STAGE_ATTR) == 2)
    if left <= 0:
        return None
    best = stage1_best(study)
    if best is None:
        raise SearchFailed(
            "stage 1 (the optimiser, relaxation off) completed no trial, so stage 2 has no "
            "optimiser to fix"
        )
    fixed = {k: v for k, v in best.params.items() if is_optimiser_key(k)}
    # TPE's start-up counts the study's finished trials: stage 1's come first
    before = sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        for t in trials
        if t.user_attrs.get(STAGE_ATTR) != 2
    )
    n_startup = before + startup_trials(len(relaxation_keys(space)), second)
    with warnings.catch_warnings():
        # flagged experimental by Optuna since 2.4; its interface is what we rely on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.PartialFixedSampler(fixed, tpe_sampler(spec.seed, n_startup))
    return Stage(2, left, space.suggest, sampler, {STAGE_ATTR: 2, "optimiser_from": best.number})


def _started_joint(trials: list[FrozenTrial]) -> bool:
    """A study with finished trials but no stages was started as ``joint`` (before the spec
    had a strategy): it continues as one."""
    return any(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED) and STAGE_ATTR not in t.user_attrs
        for t in trials
    )


def stage1_best(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE stage-1 trial: the tuned baseline whose optimiser stage 2 keeps."""
    return _best(study, [t for t in study.get_trials(deepcopy=False) if trial_stage(t) == 1])


def stage_summary(study: optuna.Study) -> list[dict[str, Any]]:
    """Per stage of a two-stage study (empty for a joint one): its number, what it searched,
    how many trials finished, and its best COMPLETE trial's number and value."""
    trials = study.get_trials(deepcopy=False)
    out = []
    for number in sorted({s for t in trials if (s := trial_stage(t)) is not None}):
        members = [t for t in trials if trial_stage(t) == number]
        best = _best(study, members)
        out.append(
            {
                "stage": number,
                "searches": STAGE_NAMES.get(number, ""),
                "finished": sum(uses_budget(t) for t in members),
                "best_trial": None if best is None else best.number,
                "best_value": None if best is None else best.value,
            }
        )
    return out


def _best(study: optuna.Study, trials: list[FrozenTrial]) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return (max if maximize else min)(complete, key=lambda t: float(t.value or 0.0))
