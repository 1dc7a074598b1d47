"""Two or more jobs of one task side by side: the data (``compare_jobs``) and its drawings.

Each job contributes its best projected value, its best trial's configuration and learning
curves, and its best-so-far by trial. When one of the jobs searched the ``baseline`` preset
(standard equivariant training, θ = 0), every other job's best is also given relative to the
baseline's: the improvement in the objective's direction (positive is better), as a fraction
of the baseline's value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from service._json import finite_or_none
from service.dashboard import _data, _figures

__all__ = ["ComparedJob", "compare_jobs", "draw_compare_curves", "draw_compare_history"]

BASELINE_PRESET = "baseline"


@dataclass(frozen=True)
class ComparedJob:
    """One job to compare: its stored dict (``Job.to_dict()``) and its trials."""

    job: Mapping[str, Any]
    trials: Sequence[FrozenTrial]


def _space_name(spec: Mapping[str, Any]) -> str:
    space = spec.get("search_space")
    if isinstance(space, str):
        return space
    if isinstance(space, Mapping) and isinstance(space.get("preset"), str):
        return f"{space['preset']} (overridden)"
    return "custom"


def _is_baseline(spec: Mapping[str, Any]) -> bool:
    space = spec.get("search_space")
    return space == BASELINE_PRESET or (
        isinstance(space, Mapping) and space.get("preset") == BASELINE_PRESET
    )


def _spec_of(job: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = job.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _objective(spec: Mapping[str, Any]) -> tuple[str, str]:
    found = spec.get("objective")
    objective: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    return str(objective.get("metric") or "objective"), str(objective.get("mode") or "max")


def compare_jobs(jobs: Sequence[ComparedJob]) -> dict[str, Any]:
    """What the comparison shows, as plain data.

    Returns ``task``, ``metric``, ``direction`` (``maximize``/``minimize``), ``problem`` (a
    sentence when the jobs cannot be compared: fewer than two, different tasks or objectives;
    else ``None``), ``baseline`` (the id of the baseline job, or ``None``), ``param_keys``
    and ``jobs``: per job ``id``, ``name``, ``status``, ``space``, ``is_baseline``,
    ``complete``, ``best_value``, ``best_number``, ``params``, ``improvement`` (relative to the
    baseline, positive = better; ``None`` for the baseline itself or without one), ``curve``
    (the best trial's ``epochs``, ``val_projected``, ``val_relaxed``) and ``best_so_far``
    (``numbers``, ``values``).
    """
    if len(jobs) < 2:
        return {"problem": "Choose at least two jobs to compare.", "jobs": []}
    specs: list[Mapping[str, Any]] = [_spec_of(j.job) for j in jobs]
    tasks = {str(s.get("task")) for s in specs}
    objectives = {_objective(s) for s in specs}
    if len(tasks) > 1:
        return {
            "problem": f"These jobs are of different tasks ({', '.join(sorted(tasks))}): only "
            "jobs of one task can be compared.",
            "jobs": [],
        }
    if len(objectives) > 1:
        return {
            "problem": "These jobs optimise different objectives: "
            + ", ".join(f"{m} ({d})" for m, d in sorted(objectives))
            + ".",
            "jobs": [],
        }
    metric, mode = objectives.pop()
    direction = StudyDirection.MAXIMIZE if mode == "max" else StudyDirection.MINIMIZE
    rows: list[dict[str, Any]] = []
    for item, spec in zip(jobs, specs, strict=True):
        trials = _data.trials_of(item.trials)
        best = _data.best_trial_summary(trials, direction)
        best_trial = next((t for t in trials if best and t.number == best["number"]), None)
        curve = None
        if best_trial is not None:
            records = _data.epoch_records(best_trial)
            curve = {
                "epochs": [r["epoch"] for r in records],
                "val_projected": [r["val_projected"] for r in records],
                "val_relaxed": [r["val_relaxed"] for r in records],
            }
        numbers: list[int] = []
        values: list[float] = []
        running: float | None = None
        for trial in trials:
            value = finite_or_none(trial.value) if trial.state == TrialState.COMPLETE else None
            if value is None:
                continue
            if running is None or (value > running if mode == "max" else value < running):
                running = value
            numbers.append(trial.number)
            values.append(running)
        rows.append(
            {
                "id": str(item.job.get("id")),
                "name": item.job.get("name") or f"job {item.job.get('id')}",
                "status": item.job.get("status"),
                "space": _space_name(spec),
                "is_baseline": _is_baseline(spec),
                "complete": sum(t.state == TrialState.COMPLETE for t in trials),
                "best_value": best["value"] if best else None,
                "best_number": best["number"] if best else None,
                # what the spec fixed (the baseline's θ = 0) and what the search found
                "params": {**_data.fixed_hparams(spec), **best["params"]} if best else {},
                "improvement": None,
                "curve": curve,
                "best_so_far": {"numbers": numbers, "values": values},
            }
        )
    baseline = next((r for r in rows if r["is_baseline"] and r["best_value"] is not None), None)
    if baseline is not None and baseline["best_value"]:
        reference = baseline["best_value"]
        sign = 1.0 if mode == "max" else -1.0
        for row in rows:
            if row is not baseline and row["best_value"] is not None:
                row["improvement"] = sign * (row["best_value"] - reference) / abs(reference)
    return {
        "problem": None,
        "task": tasks.pop(),
        "metric": metric,
        "direction": direction.name.lower(),
        "baseline": baseline["id"] if baseline else None,
        "param_keys": sorted({k for r in rows for k in r["params"]}),
        "jobs": rows,
    }


def _job_color(index: int) -> str:
    return _figures.TRIAL_COLORS[index % len(_figures.TRIAL_COLORS)]


def draw_compare_curves(data: Mapping[str, Any]) -> go.Figure:
    """Each job's best trial: projected (solid) and relaxed (dashed) metric by epoch, one
    colour per job."""
    traces: list[dict[str, Any]] = []
    max_epoch = 1
    for index, row in enumerate(data["jobs"]):
        curve = row["curve"]
        if not curve:
            continue
        max_epoch = max(max_epoch, max(curve["epochs"], default=1))
        for key, label, dash in (
            ("val_projected", "projected", "solid"),
            ("val_relaxed", "relaxed", "dash"),
        ):
            if all(v is None for v in curve[key]):
                continue
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "x": curve["epochs"],
                    "y": curve[key],
                    "name": f"{row['name']} ({label})",
                    "legendgroup": row["id"],
                    "line": {"color": _job_color(index), "dash": dash, "width": 2},
                    "hovertemplate": f"{row['name']}, trial {row['best_number']}<br>{label}: "
                    "%{y:.4g}<br>epoch %{x}<extra></extra>",
                }
            )
    layout = {
        "template": "plotly_white",
        "height": _figures.FIGURE_HEIGHT,
        "margin": {"l": 60, "r": 20, "t": 24, "b": 50},
        "xaxis": _figures.epoch_axis("epoch", max_epoch),
        "yaxis": {"title": {"text": data.get("metric", "")}},
        "legend": {"orientation": "h", "y": -0.18, "x": 0},
        "hovermode": "closest",
    }
    return go.Figure({"data": traces, "layout": layout}, skip_invalid=False)


def draw_compare_history(data: Mapping[str, Any]) -> go.Figure:
    """Each job's best projected value so far, by trial number."""
    traces = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "line": {"shape": "hv", "color": _job_color(index), "width": 2},
            "x": row["best_so_far"]["numbers"],
            "y": row["best_so_far"]["values"],
            "name": row["name"],
            "hovertemplate": f"{row['name']}<br>best so far: %{{y:.4g}}<br>trial %{{x}}"
            "<extra></extra>",
        }
        for index, row in enumerate(data["jobs"])
        if row["best_so_far"]["numbers"]
    ]
    layout = {
        "template": "plotly_white",
        "height": _figures.FIGURE_HEIGHT,
        "margin": {"l": 60, "r": 20, "t": 24, "b": 50},
        "xaxis": _figures.epoch_axis(
            "trial",
            max((max(r["best_so_far"]["numbers"], default=0) for r in data["jobs"]), default=1),
        ),
        "yaxis": {"title": {"text": f"best {data.get('metric', '')} so far"}},
        "legend": {"orientation": "h", "y": -0.18, "x": 0},
        "hovermode": "closest",
    }
    return go.Figure({"data": traces, "layout": layout}, skip_invalid=False)
