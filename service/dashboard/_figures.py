"""Plotly drawings of the dashboard data (see ``_data``), plus the standard Optuna plots.

The per-epoch charts draw one trace per trial and series, in the trial's colour (projected
solid, relaxed dashed), faded by state (running opaque, pruned and failed faint), the best
trial bold. Hover texts are one template per trace, not one string per point, which keeps a
page of hundreds of trials light. Epoch axes tick whole epochs only.

The Optuna plots (history, parallel coordinates, importances) are drawn from a light
in-memory copy of the study (:func:`light_study`): parameters and objective values only, so
the plotting functions neither re-read the database nor copy every trial's epoch history.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
import types
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

_OPTUNA_PLOTTING_IMPORT = threading.Lock()
#: tries at importing scikit-learn while another thread is half-way through it (see below)
SKLEARN_IMPORT_TRIES = 5


def optuna_plotting() -> tuple[types.ModuleType, types.ModuleType]:
    """``optuna.visualization`` and ``optuna.importance``, safely imported from any thread.

    Optuna imports both lazily, and ``optuna.importance`` imports scikit-learn inside Optuna's
    ``try_import``, which records a failed import for the life of the process (every later
    importance chart would then fail). scikit-learn's modules import each other in cycles, so
    a thread that enters it while another thread is half-way through a different entry point
    (escnn imports ``sklearn.utils.extmath``; the API's warm-up thread imports Optuna's
    importances) can be handed a half-initialised module and fail. So scikit-learn is imported
    here first, one thread at a time, and again after a pause when that happens; only then
    does Optuna import it. A missing scikit-learn is left to Optuna to report.
    """
    with _OPTUNA_PLOTTING_IMPORT:
        for attempt in range(1, SKLEARN_IMPORT_TRIES + 1):
            try:
                import sklearn.ensemble  # noqa: F401
            except ModuleNotFoundError:
                break
            except ImportError:  # a half-initialised module, another thread is importing it
                if attempt == SKLEARN_IMPORT_TRIES:
                    raise
                time.sleep(0.5)
            else:
                break
        import optuna.importance
        import optuna.visualization
    return optuna.visualization, optuna.importance


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


#: One colour per trial (cycled by trial number): a trial's series share it, so its
#: projected (solid) and relaxed (dashed) curves read as one trial.
TRIAL_COLORS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39", "#7b4173",
    "#3182bd", "#e6550d", "#31a354", "#756bb1",
)  # fmt: skip

#: Opacity by trial state: running trials stand out, pruned and failed ones recede.
STATE_OPACITY: dict[str, float] = {"RUNNING": 1.0, "COMPLETE": 0.75, "PRUNED": 0.3, "FAIL": 0.3}
_LEGEND_MAX_TRIALS = 12


def trial_color(number: int) -> str:
    """The colour of trial ``number`` on every per-trial chart."""
    return TRIAL_COLORS[number % len(TRIAL_COLORS)]


def epoch_axis(title: str, max_epoch: float | None) -> dict[str, Any]:
    """An x axis in epochs with whole-number ticks only (never 1.5, 2.5)."""
    top = max(float(max_epoch or 1), 1.0)
    step = max(1, math.ceil(top / 10))
    return {
        "title": {"text": title},
        "tickmode": "linear",
        "tick0": 0,
        "dtick": step,
        "tickformat": "d",
        "rangemode": "tozero",
    }


def _rounded(values: Sequence[float | None], floor: float | None) -> list[float | None]:
    out: list[float | None] = []
    for value in values:
        if value is None:
            out.append(None)
        elif floor is not None and value <= 0:
            out.append(floor)
        else:
            out.append(float(f"{value:.5g}"))
    return out


def _trial_figure(
    curves: Sequence[dict[str, Any]],
    series: Sequence[tuple[str, str, str]],
    layout: dict[str, Any],
    *,
    best_number: int | None,
    floor: float | None = None,
) -> go.Figure:
    """One trace per (trial, series) in the trial's colour; ``series`` lists ``(key, label,
    dash)``. The best trial is drawn bold and on top; the legend (one entry per trial,
    toggling all its series) is shown while there are few trials."""
    traces: list[dict[str, Any]] = []
    ordered = sorted(curves, key=lambda c: (c["number"] == best_number, c["number"]))
    show_legend = len(ordered) <= _LEGEND_MAX_TRIALS
    max_epoch = 0.0
    for curve in ordered:
        number, state = curve["number"], curve["state"]
        best = number == best_number
        first = True
        for key, label, dash in series:
            values = curve[key]
            if all(v is None for v in values):
                continue
            max_epoch = max(max_epoch, max(curve["epochs"], default=0))
            state_text = state.lower() + (", best" if best else "")
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers" if len(values) <= 30 else "lines",
                    "x": list(curve["epochs"]),
                    "y": _rounded(values, floor),
                    "name": f"trial {number}" + (" (best)" if best else ""),
                    "legendgroup": f"trial-{number}",
                    "showlegend": show_legend and first,
                    "line": {
                        "color": trial_color(number),
                        "dash": dash,
                        "width": 3.2 if best else 1.4,
                    },
                    "marker": {"size": 6 if best else 4},
                    "opacity": 1.0 if best else STATE_OPACITY.get(state, 0.4),
                    "connectgaps": False,
                    "hovertemplate": f"trial {number} ({state_text})<br>{label}: %{{y:.4g}}"
                    "<br>epoch %{x}<extra></extra>",
                }
            )
            first = False
    layout["xaxis"] = epoch_axis(layout["xaxis"]["title"]["text"], max_epoch)
    layout["showlegend"] = show_legend
    # A dict figure skips plotly's per-property validation of thousands of points; the
    # structure above is fixed and covered by the page tests.
    return go.Figure({"data": traces, "layout": layout}, skip_invalid=False)


def draw_learning_curves(
    curves: Sequence[dict[str, Any]],
    *,
    best_number: int | None = None,
    metric_name: str = "validation metric",
) -> go.Figure:
    """Projected (solid) and relaxed (dashed) metric by epoch, one colour per trial."""
    return _trial_figure(
        curves,
        [("val_projected", "projected", "solid"), ("val_relaxed", "relaxed", "dash")],
        _layout("Learning curves (projected vs relaxed model)", "epoch", metric_name),
        best_number=best_number,
    )


def draw_theta(curves: Sequence[dict[str, Any]], *, best_number: int | None = None) -> go.Figure:
    """Relaxation strength θ over training (per step when the curves come from
    :func:`service.dashboard.theta_schedules`), one colour per trial."""
    return _trial_figure(
        curves,
        [("theta", "θ", "solid")],
        _layout("Relaxation strength θ over training", "epoch", "θ"),
        best_number=best_number,
    )


def draw_equivariance(
    curves: Sequence[dict[str, Any]], *, best_number: int | None = None
) -> go.Figure:
    """Equivariance error by epoch, relaxed (dashed) vs projected (solid), on a log axis."""
    layout = _layout(
        "Equivariance error (relaxed vs projected)",
        "epoch",
        "equivariance error",
    )
    layout["yaxis"]["type"] = "log"
    layout["yaxis"]["exponentformat"] = "power"
    return _trial_figure(
        curves,
        [("relaxed", "relaxed", "dash"), ("projected", "projected", "solid")],
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
        fig = optuna_plotting()[0].plot_optimization_history(study, target_name=metric_name)
    return _style_optuna_figure(fig, f"Optimization history ({metric_name}, projected model)")


def draw_parallel_coordinate(
    study: optuna.Study, params: Sequence[str], *, metric_name: str = "objective"
) -> go.Figure:
    """Optuna's parallel-coordinate plot over ``params`` (the relaxation parameters)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = optuna_plotting()[0].plot_parallel_coordinate(
            study, params=list(params), target_name=metric_name
        )
    # Long parameter names overlap when written flat above neighbouring axes: slant them.
    fig.update_traces(labelangle=-25, labelside="bottom", selector={"type": "parcoords"})
    _style_optuna_figure(fig, "Parallel coordinates (relaxation parameters)")
    fig.update_layout(margin={"l": 60, "r": 40, "t": 40, "b": 110})
    return fig


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
    visualization, importance = optuna_plotting()
    evaluator = importance.FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = visualization.plot_param_importances(
            study, params=list(params), evaluator=evaluator
        )
    return _style_optuna_figure(fig, "Hyperparameter importances (fANOVA)")
