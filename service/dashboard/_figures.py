"""Plotly drawings of the dashboard data (see ``_data``), plus the standard Optuna plots.

The per-epoch charts draw one trace per (state, series) group, with ``None`` separating the
trials inside a trace: a study of 500 trials then costs a handful of traces instead of
thousands, which keeps both the page build and the browser responsive. The trial number
travels in each point's hover text.

The Optuna plots (history, parallel coordinates, importances) are drawn from a light
in-memory copy of the study (:func:`light_study`): parameters and objective values only, so
the plotting functions neither re-read the database nor copy every trial's epoch history.
"""

from __future__ import annotations

import contextlib
import logging
import random
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

#: Drawing order (later on top) and line style of each trial state.
STATE_STYLES: dict[str, dict[str, Any]] = {
    "FAIL": {"dash": "dashdot", "opacity": 0.35},
    "PRUNED": {"dash": "dot", "opacity": 0.35},
    "COMPLETE": {"dash": "solid", "opacity": 0.55},
    "RUNNING": {"dash": "dash", "opacity": 0.9},
}
_OTHER_STATE_STYLE: dict[str, Any] = {"dash": "longdash", "opacity": 0.4}

PROJECTED_COLOR = "#1f5fa8"
RELAXED_COLOR = "#e07b24"
THETA_COLOR = "#2a9d57"
#: Colours of the best trial's series, in the order of the figure's series.
BEST_COLORS = ("#111111", "#8c3b00")

#: Log axes cannot show zero, yet an exactly equivariant model (θ = 0, or the identity
#: element) measures 0.0. Such points are drawn one decade below the smallest positive error
#: of the chart (the hover text still shows 0), or at this floor when nothing is positive.
LOG_FLOOR = 1e-12

FIGURE_HEIGHT = 420


def _layout(title: str, x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0.01, "xanchor": "left"},
        "template": "plotly_white",
        "height": FIGURE_HEIGHT,
        "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
        "xaxis": {"title": {"text": x_title}},
        "yaxis": {"title": {"text": y_title}},
        "legend": {"orientation": "h", "y": -0.18, "x": 0},
        "hovermode": "closest",
    }
    layout.update(extra)
    return layout


def _ordered_states(curves: Iterable[dict[str, Any]]) -> list[str]:
    present = {c["state"] for c in curves}
    known = [s for s in STATE_STYLES if s in present]
    return known + sorted(present - set(STATE_STYLES))


def _group_trace(
    curves: Sequence[dict[str, Any]],
    key: str,
    *,
    name: str,
    color: str,
    style: dict[str, Any],
    legendgroup: str,
    floor: float | None = None,
    width: float = 1.2,
) -> dict[str, Any] | None:
    """One scatter trace holding every curve of ``curves`` for series ``key``."""
    xs: list[Any] = []
    ys: list[Any] = []
    texts: list[Any] = []
    for curve in curves:
        values = curve[key]
        if all(v is None for v in values):
            continue
        label = f"trial {curve['number']} ({curve['state'].lower()})"
        for epoch, value in zip(curve["epochs"], values, strict=True):
            xs.append(epoch)
            if floor is not None and value is not None and value <= 0:
                ys.append(floor)
            else:
                ys.append(value)
            texts.append(f"{label}<br>{name}: {value:.4g}" if value is not None else label)
        xs.append(None)
        ys.append(None)
        texts.append(None)
    if not xs:
        return None
    return {
        "type": "scatter",
        "mode": "lines+markers" if len(xs) < 400 else "lines",
        "x": xs,
        "y": ys,
        "text": texts,
        "name": name,
        "legendgroup": legendgroup,
        "line": {"color": color, "dash": style["dash"], "width": width},
        "marker": {"size": 4},
        "opacity": style["opacity"],
        "connectgaps": False,
        "hovertemplate": "%{text}<br>epoch %{x}<extra></extra>",
    }


def _series_figure(
    curves: Sequence[dict[str, Any]],
    series: Sequence[tuple[str, str, str]],
    layout: dict[str, Any],
    *,
    best_number: int | None,
    floor: float | None = None,
) -> go.Figure:
    """Figure with one trace per (state, series) plus a bold trace for the best trial.

    ``series`` lists ``(key, label, color)``.
    """
    traces: list[dict[str, Any]] = []
    for state in _ordered_states(curves):
        group = [c for c in curves if c["state"] == state]
        style = STATE_STYLES.get(state, _OTHER_STATE_STYLE)
        for key, label, color in series:
            trace = _group_trace(
                group,
                key,
                name=f"{label} · {state.lower()}",
                color=color,
                style=style,
                legendgroup=f"{key}-{state}",
                floor=floor,
            )
            if trace is not None:
                traces.append(trace)
    best = [c for c in curves if c["number"] == best_number]
    if best:
        for index, (key, label, _color) in enumerate(series):
            trace = _group_trace(
                best,
                key,
                name=f"{label} · best (trial {best_number})",
                color=BEST_COLORS[index % len(BEST_COLORS)],
                style={"dash": "solid" if index == 0 else "dash", "opacity": 1.0},
                legendgroup=f"best-{key}",
                floor=floor,
                width=3.0,
            )
            if trace is not None:
                traces.append(trace)
    # A dict figure skips plotly's per-property validation of thousands of points; the
    # structure above is fixed and covered by the page tests.
    return go.Figure({"data": traces, "layout": layout}, skip_invalid=False)


def draw_learning_curves(
    curves: Sequence[dict[str, Any]],
    *,
    best_number: int | None = None,
    metric_name: str = "validation metric",
) -> go.Figure:
    """Projected (solid colour) and relaxed metric by epoch; line style shows the trial state."""
    return _series_figure(
        curves,
        [
            ("val_projected", "projected", PROJECTED_COLOR),
            ("val_relaxed", "relaxed", RELAXED_COLOR),
        ],
        _layout("Learning curves (projected vs relaxed model)", "epoch", metric_name),
        best_number=best_number,
    )


def draw_theta(curves: Sequence[dict[str, Any]], *, best_number: int | None = None) -> go.Figure:
    """Relaxation strength θ by epoch for every trial."""
    return _series_figure(
        curves,
        [("theta", "θ", THETA_COLOR)],
        _layout("Relaxation strength θ by epoch", "epoch", "θ"),
        best_number=best_number,
    )


def draw_equivariance(
    curves: Sequence[dict[str, Any]], *, best_number: int | None = None
) -> go.Figure:
    """Equivariance error by epoch, relaxed vs projected model, on a log axis."""
    layout = _layout(
        "Equivariance error (relaxed vs projected)",
        "epoch",
        "equivariance error",
    )
    layout["yaxis"]["type"] = "log"
    layout["yaxis"]["exponentformat"] = "power"
    return _series_figure(
        curves,
        [("relaxed", "relaxed", RELAXED_COLOR), ("projected", "projected", PROJECTED_COLOR)],
        layout,
        best_number=best_number,
        floor=log_floor(curves, ("relaxed", "projected")),
    )


def log_floor(curves: Sequence[dict[str, Any]], keys: Sequence[str]) -> float:
    """Where a log-scaled chart of ``curves`` draws zeros: a decade under the smallest
    positive value, so a zero neither vanishes nor stretches the axis over many decades.
    """
    positive = [v for c in curves for k in keys for v in c[k] if v is not None and v > 0]
    return min(positive) / 10.0 if positive else LOG_FLOOR


def _drop_record(record: logging.LogRecord) -> bool:
    return False


@contextlib.contextmanager
def _quiet_in_memory_storage() -> Iterator[None]:
    logger = logging.getLogger("optuna.storages._in_memory")
    logger.addFilter(_drop_record)
    try:
        yield
    finally:
        logger.removeFilter(_drop_record)


def light_study(
    trials: Sequence[FrozenTrial],
    direction: StudyDirection,
    *,
    only: Sequence[FrozenTrial] | None = None,
) -> optuna.Study:
    """An in-memory study holding the parameters and values of ``trials``.

    Trial numbers must survive the copy (the optimization history plots them), and an
    in-memory study numbers trials in the order they are added, so every trial is copied in
    number order; trials that are not COMPLETE become parameterless FAIL placeholders, which
    Optuna's plots ignore. With ``only``, just those (COMPLETE) trials are copied and numbers
    are not kept: that is for estimates that do not show numbers (importances).
    """
    # Each render builds such studies; Optuna logs every in-memory study it creates at INFO,
    # which would add two meaningless lines per page view to the API log.
    with _quiet_in_memory_storage():
        study = optuna.create_study(direction=direction, storage=optuna.storages.InMemoryStorage())
    copies: list[FrozenTrial] = []
    source = only if only is not None else sorted(trials, key=lambda t: t.number)
    for trial in source:
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            copies.append(
                optuna.trial.create_trial(
                    params=trial.params,
                    distributions=trial.distributions,
                    value=trial.value,
                )
            )
        elif only is None:
            copies.append(optuna.trial.create_trial(state=TrialState.FAIL))
    study.add_trials(copies)
    return study


def _style_optuna_figure(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"},
        template="plotly_white",
        height=FIGURE_HEIGHT,
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        legend={"orientation": "h", "y": -0.18, "x": 0},
    )
    return fig


def draw_optimization_history(study: optuna.Study, *, metric_name: str = "objective") -> go.Figure:
    """Optuna's optimization history (objective per trial and best so far)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = optuna.visualization.plot_optimization_history(study, target_name=metric_name)
    return _style_optuna_figure(fig, f"Optimization history ({metric_name}, projected model)")


def draw_parallel_coordinate(
    study: optuna.Study, params: Sequence[str], *, metric_name: str = "objective"
) -> go.Figure:
    """Optuna's parallel-coordinate plot over ``params`` (the relaxation parameters)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = optuna.visualization.plot_parallel_coordinate(
            study, params=list(params), target_name=metric_name
        )
    return _style_optuna_figure(fig, "Parallel coordinates (relaxation parameters)")


def importance_subsample(
    trials: Sequence[FrozenTrial], max_trials: int, *, seed: int = 0
) -> list[FrozenTrial]:
    """At most ``max_trials`` COMPLETE trials, a seeded uniform sample (number order kept).

    fANOVA's cost grows faster than linearly with the trial count; a uniform sample keeps the
    estimate unbiased and the page fast, and the seed keeps it the same on every reload.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if len(complete) <= max_trials:
        return complete
    picked = random.Random(seed).sample(range(len(complete)), max_trials)
    return [complete[i] for i in sorted(picked)]


def draw_param_importances(
    study: optuna.Study, params: Sequence[str], *, n_trees: int = 32, seed: int = 0
) -> go.Figure:
    """Optuna's fANOVA hyperparameter importances over ``params``.

    Raises whatever Optuna raises (too few trials, a parameter with one value …): the page
    turns that into a message.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        raise ValueError("importances need at least 2 complete trials")
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = optuna.visualization.plot_param_importances(
            study, params=list(params), evaluator=evaluator
        )
    return _style_optuna_figure(fig, "Hyperparameter importances (fANOVA)")
