"""Plain-data views of a job's Optuna study: what the dashboard draws, as dicts and lists.

Every function here takes either an ``optuna.Study`` or the trials already fetched from it
(``study.get_trials(deepcopy=False)``). The page fetches trials once and passes them to each
function, because on a database-backed study every ``get_trials`` is a round trip that costs
more than the whole computation below.

Trials report one record per epoch (see ``docs/ARCHITECTURE.md``, "Per-epoch report"): the
projected validation metric is the intermediate value at step ``epoch`` and the full record
list is the user attribute ``history``. Either may be missing or partial (a RUNNING trial, a
trial that failed before its first epoch, a study written by another tool), so the readers
below merge both and turn anything non-numeric or non-finite into ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from service._json import finite_or_none


@dataclass(frozen=True)
class StudySnapshot:
    """A study's optimisation directions and trials, read once (the API reads them with
    plain SQL, faster than ``RDBStorage``); accepted wherever a study is."""

    directions: list[StudyDirection]
    trials: list[FrozenTrial]


TrialsSource = optuna.Study | StudySnapshot | Sequence[FrozenTrial]

#: Prefix of the relaxation hyperparameters (``relax.theta_max``, ``relax.schedule`` …).
RELAX_PREFIX = "relax."

#: Keys of a per-epoch record that hold numbers (everything but ``epoch``).
EPOCH_METRIC_KEYS: tuple[str, ...] = (
    "progress",
    "theta",
    "val_projected",
    "val_relaxed",
    "train_loss",
    "penalty_lie",
    "penalty_norm",
    "penalty_proj",
    "equivariance_error_relaxed",
    "equivariance_error_projected",
    "epoch_seconds",
    "penalty_grad_ratio",
)

#: Final user attributes a finished trial carries (shown in the best-trial summary and table).
FINAL_ATTR_KEYS: tuple[str, ...] = (
    "val_projected",
    "val_relaxed",
    "equivariance_error_relaxed",
    "equivariance_error_projected",
    "final_theta",
)


def trials_of(source: TrialsSource) -> list[FrozenTrial]:
    """Return the trials of ``source`` sorted by trial number, without deep copies."""
    if isinstance(source, optuna.Study):
        trials = source.get_trials(deepcopy=False)
    elif isinstance(source, StudySnapshot):
        trials = source.trials
    else:
        trials = list(source)
    return sorted(trials, key=lambda t: t.number)


def epoch_records(trial: FrozenTrial) -> list[dict[str, float | int | None]]:
    """The trial's per-epoch records sorted by epoch, merged from ``history`` and intermediates.

    Each record has ``epoch`` (int) and every key of :data:`EPOCH_METRIC_KEYS` (float or
    ``None``). An epoch that only has an intermediate value (the history attribute is written
    less often than the intermediate values, or not at all by other tools) still appears, with
    ``val_projected`` taken from the intermediate value.
    """
    by_epoch: dict[int, dict[str, float | int | None]] = {}
    history = trial.user_attrs.get("history")
    if isinstance(history, list):
        for index, entry in enumerate(history):
            if not isinstance(entry, Mapping):
                continue
            epoch = _epoch_number(entry.get("epoch"), default=index + 1)
            record: dict[str, float | int | None] = {"epoch": epoch}
            for key in EPOCH_METRIC_KEYS:
                record[key] = finite_or_none(entry.get(key))
            by_epoch[epoch] = record
    for step, value in trial.intermediate_values.items():
        record = by_epoch.setdefault(step, {"epoch": step, **dict.fromkeys(EPOCH_METRIC_KEYS)})
        if record["val_projected"] is None:
            record["val_projected"] = finite_or_none(value)
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _epoch_number(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def _epoch_series(source: TrialsSource, keys: Mapping[str, str]) -> list[dict[str, Any]]:
    """Per trial: ``number``, ``state``, ``epochs`` and one list per output name in ``keys``.

    ``keys`` maps output names to record keys. Trials without any epoch are left out: they have
    nothing to draw.
    """
    series: list[dict[str, Any]] = []
    for trial in trials_of(source):
        records = epoch_records(trial)
        if not records:
            continue
        entry: dict[str, Any] = {
            "number": trial.number,
            "state": trial.state.name,
            "epochs": [r["epoch"] for r in records],
        }
        for name, key in keys.items():
            entry[name] = [r[key] for r in records]
        series.append(entry)
    return series


def learning_curves(source: TrialsSource) -> list[dict[str, Any]]:
    """Projected and relaxed validation metric by epoch, one entry per trial with epochs.

    Entry keys: ``number``, ``state`` (``"COMPLETE"``, ``"PRUNED"``, ``"RUNNING"``,
    ``"FAIL"`` …, so pruned trials can be told apart), ``epochs``, ``val_projected``,
    ``val_relaxed`` (lists aligned with ``epochs``; ``None`` where a value is missing).
    """
    return _epoch_series(source, {"val_projected": "val_projected", "val_relaxed": "val_relaxed"})


def theta_curves(source: TrialsSource) -> list[dict[str, Any]]:
    """Relaxation strength θ by epoch: entries with ``number``, ``state``, ``epochs``, ``theta``."""
    return _epoch_series(source, {"theta": "theta"})


def equivariance_curves(source: TrialsSource) -> list[dict[str, Any]]:
    """Equivariance error by epoch of the relaxed model and of its projection.

    Entry keys: ``number``, ``state``, ``epochs``, ``relaxed``, ``projected``.
    """
    return _epoch_series(
        source,
        {"relaxed": "equivariance_error_relaxed", "projected": "equivariance_error_projected"},
    )


def state_counts(source: TrialsSource) -> dict[str, int]:
    """Number of trials per state name, every state present (zero counts included)."""
    counts = {state.name: 0 for state in TrialState}
    for trial in trials_of(source):
        counts[trial.state.name] += 1
    return counts


def _direction_of(source: TrialsSource, direction: StudyDirection | str | None) -> StudyDirection:
    if direction is None:
        if isinstance(source, optuna.Study):
            return source.direction
        raise ValueError("direction is required when trials are passed instead of a study")
    if isinstance(direction, StudyDirection):
        return direction
    name = direction.strip().upper()
    if name in ("MAX", "MAXIMIZE"):
        return StudyDirection.MAXIMIZE
    if name in ("MIN", "MINIMIZE"):
        return StudyDirection.MINIMIZE
    raise ValueError(f"unknown study direction {direction!r}: use 'maximize' or 'minimize'")


def completed_ranking(
    source: TrialsSource, direction: StudyDirection | str | None = None
) -> list[FrozenTrial]:
    """COMPLETE trials with a finite objective value, best first (ties: lower number first)."""
    sign = -1.0 if _direction_of(source, direction) == StudyDirection.MAXIMIZE else 1.0
    ranked = [
        t
        for t in trials_of(source)
        if t.state == TrialState.COMPLETE and finite_or_none(t.value) is not None
    ]
    return sorted(ranked, key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]


def best_trial_summary(
    source: TrialsSource, direction: StudyDirection | str | None = None
) -> dict[str, Any] | None:
    """Summary of the best COMPLETE trial, or ``None`` when no trial has completed.

    The objective is the projected validation metric, so "best" is the trial the exported
    checkpoint comes from. Keys: ``number``, ``value``, ``direction``, ``params``, ``epochs``
    (number of reported epochs), ``duration_seconds``, ``checkpoint`` (path or ``None``) and
    each of :data:`FINAL_ATTR_KEYS` (float or ``None``).
    """
    resolved = _direction_of(source, direction)
    ranking = completed_ranking(source, resolved)
    if not ranking:
        return None
    best = ranking[0]
    checkpoint = best.user_attrs.get("checkpoint")
    summary: dict[str, Any] = {
        "number": best.number,
        "value": finite_or_none(best.value),
        "direction": resolved.name.lower(),
        "params": dict(sorted(best.params.items())),
        "epochs": len(epoch_records(best)),
        "duration_seconds": best.duration.total_seconds() if best.duration else None,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
    }
    for key in FINAL_ATTR_KEYS:
        summary[key] = finite_or_none(best.user_attrs.get(key))
    return summary


def param_names(source: TrialsSource, *, in_every_complete_trial: bool = False) -> list[str]:
    """Sampled hyperparameter names, sorted.

    With ``in_every_complete_trial``, only those every COMPLETE trial has: conditional
    parameters (``relax.peak`` exists only for the triangular schedule) would otherwise shrink
    an importance estimate to the trials of one branch.
    """
    trials = trials_of(source)
    if not in_every_complete_trial:
        return sorted({name for t in trials for name in t.params})
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    common = set(complete[0].params)
    for trial in complete[1:]:
        common &= set(trial.params)
    return sorted(common)


def relax_param_names(source: TrialsSource, *, in_every_complete_trial: bool = False) -> list[str]:
    """Sampled ``relax.*`` hyperparameter names, sorted (see :func:`param_names`)."""
    names = param_names(source, in_every_complete_trial=in_every_complete_trial)
    return [name for name in names if name.startswith(RELAX_PREFIX)]


def parameter_table(
    source: TrialsSource,
    direction: StudyDirection | str | None = None,
    *,
    limit: int | None = None,
) -> dict[str, Any]:
    """A table of trials: ranked COMPLETE trials first (best first), then the rest by number.

    Returns ``{"columns": [...], "rows": [...], "total": n}``; each row is a dict keyed by
    column: ``number``, ``state``, ``value``, ``epochs``, every hyperparameter name (``None``
    where the trial did not sample it), then ``val_relaxed``, ``equivariance_error_projected``,
    ``final_theta`` and ``duration_seconds``. ``limit`` keeps the first rows only; ``total``
    is the number of trials before the limit.
    """
    trials = trials_of(source)
    names = param_names(trials)
    ranked = completed_ranking(trials, _direction_of(source, direction))
    ranked_numbers = {t.number for t in ranked}
    ordered = ranked + [t for t in trials if t.number not in ranked_numbers]
    tail = ["val_relaxed", "equivariance_error_projected", "final_theta", "duration_seconds"]
    columns = ["number", "state", "value", "epochs", *names, *tail]
    rows: list[dict[str, Any]] = []
    for trial in ordered if limit is None else ordered[: max(limit, 0)]:
        row: dict[str, Any] = {
            "number": trial.number,
            "state": trial.state.name,
            "value": finite_or_none(trial.value) if trial.values else None,
            "epochs": len(epoch_records(trial)),
        }
        for name in names:
            row[name] = trial.params.get(name)
        for key in tail[:-1]:
            row[key] = finite_or_none(trial.user_attrs.get(key))
        row["duration_seconds"] = trial.duration.total_seconds() if trial.duration else None
        rows.append(row)
    return {"columns": columns, "rows": rows, "total": len(trials)}


def certificate_table(certificate: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise a best-trial ``certificate.json`` into rows per group element.

    Accepts errors either as a list aligned with ``elements`` or as a mapping from element to
    error, under ``errors`` (projected model) and ``relaxed_errors`` (the relaxed model before
    projection; ``errors_relaxed`` and ``{"relaxed": {"errors": ...}}`` are read too).
    Returns ``group``, ``tolerance``, ``seed``, ``passed`` and ``rows``; each row has
    ``element``, ``error_projected``, ``error_relaxed`` and ``within_tolerance`` (``None``
    when the tolerance or the error is unknown). ``max_error_projected`` and
    ``max_error_relaxed`` summarise the rows.
    """
    elements_raw = certificate.get("elements")
    projected = certificate.get("errors")
    relaxed = certificate.get("relaxed_errors", certificate.get("errors_relaxed"))
    if relaxed is None and isinstance(certificate.get("relaxed"), Mapping):
        relaxed = certificate["relaxed"].get("errors")

    elements: list[str] = [str(e) for e in elements_raw] if isinstance(elements_raw, list) else []
    for errors in (projected, relaxed):
        if isinstance(errors, Mapping):
            elements.extend(str(k) for k in errors if str(k) not in elements)
        elif isinstance(errors, list) and len(errors) > len(elements):
            elements.extend(f"#{i}" for i in range(len(elements), len(errors)))

    tolerance = finite_or_none(certificate.get("tolerance"))
    rows: list[dict[str, Any]] = []
    for index, element in enumerate(elements):
        error_projected = _error_at(projected, element, index)
        error_relaxed = _error_at(relaxed, element, index)
        within = (
            None if tolerance is None or error_projected is None else error_projected <= tolerance
        )
        rows.append(
            {
                "element": element,
                "error_projected": error_projected,
                "error_relaxed": error_relaxed,
                "within_tolerance": within,
            }
        )
    passed = certificate.get("passed")
    return {
        "group": None if certificate.get("group") is None else str(certificate["group"]),
        "tolerance": tolerance,
        "seed": certificate.get("seed"),
        "passed": passed if isinstance(passed, bool) else None,
        "rows": rows,
        "max_error_projected": _max_or_none(r["error_projected"] for r in rows),
        "max_error_relaxed": _max_or_none(r["error_relaxed"] for r in rows),
    }


def _error_at(errors: Any, element: str, index: int) -> float | None:
    if isinstance(errors, Mapping):
        return finite_or_none(errors.get(element))
    if isinstance(errors, list) and index < len(errors):
        return finite_or_none(errors[index])
    return None


def _max_or_none(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def search_space_params(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters of a job spec's search space by key (searched and fixed), or ``{}``
    when the spec names none or an unreadable one (a page still renders)."""
    from search_spaces import SpecError
    from search_spaces._spec import _resolve_search_space

    space_source = spec.get("search_space") if isinstance(spec, Mapping) else None
    if space_source is None:
        return {}
    try:
        return dict(_resolve_search_space(space_source).params)
    except (SpecError, ValueError, TypeError, KeyError):
        return {}


def fixed_hparams(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """The hyperparameters a job's spec fixes (not searched): trials do not record them as
    parameters, yet they shape the trial (its θ schedule)."""
    return {
        key: param.value  # type: ignore[union-attr]
        for key, param in search_space_params(spec).items()
        if param.kind == "fixed"
    }


def theta_schedules(
    source: TrialsSource, spec: Mapping[str, Any] | None, *, points: int = 49
) -> list[dict[str, Any]]:
    """θ of every trial at ``points`` steps across its training, from its hyperparameters.

    The schedule is a pure function of the hyperparameters and of training progress (the
    trainer recomputes it every step), so the curve is exact at any resolution, not only at
    the epoch ends the history records. Entries: ``number``, ``state``, ``epochs`` (progress
    in epochs, fractional), ``theta``. Trials whose parameters do not make a schedule, and
    ``adaptive`` trials (their θ is learned), are left out.
    """
    from search_spaces import SpecError
    from search_spaces._schedules import make_schedule

    budget = spec.get("budget") if isinstance(spec, Mapping) else None
    epochs = budget.get("epochs") if isinstance(budget, Mapping) else None
    n_epochs = epochs if isinstance(epochs, int) and epochs > 0 else None
    fixed = fixed_hparams(spec)
    curves: list[dict[str, Any]] = []
    for trial in trials_of(source):
        flat = {
            k: v for k, v in {**fixed, **trial.params}.items() if k.startswith(RELAX_PREFIX)
        }
        try:
            schedule = make_schedule(flat, n_epochs)
        except (SpecError, ValueError, TypeError):
            continue
        if schedule.family == "adaptive":  # θ is learned, not a function of progress
            continue
        span = n_epochs or 1
        xs = [span * i / (points - 1) for i in range(points)]
        curves.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "epochs": [round(x, 4) for x in xs],
                "theta": [float(f"{schedule(x / span):.4g}") for x in xs],
            }
        )
    return curves


def stop_reason(trial: FrozenTrial) -> str | None:
    """Why a trial ended before its last epoch (failed, pruned, cancelled), if recorded."""
    reason = trial.user_attrs.get("stop_reason")
    return str(reason) if reason else None
