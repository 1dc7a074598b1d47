"""The ``adaptive`` family on the dashboard: learned per-layer strengths γ_i and their dual
variables λ_i by epoch (docs/METHOD.md §2), one curve per layer.

A pair like the others (plain data, then its drawing), in a module of its own; the page
shows the chart when a trial is adaptive or the job's search space can make one
(:func:`may_be_adaptive`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from service._json import finite_or_none
from service.dashboard._data import TrialsSource, search_space_params, trials_of
from service.dashboard._figures import FIGURE_HEIGHT, _layout

#: Id of the chart container (present only when the job has or may have an adaptive trial).
STRENGTHS_CHART_ID = "chart-strengths"
HEADING = "Adaptive relaxation: strengths and dual variables"
NOTE = (
    "One curve per relaxed layer: the learned strength γ (solid, top) and its dual "
    "variable λ (dashed, bottom); γ is exactly 0 in the final tail before projection."
)

#: One colour per relaxed layer, cycled (plotly's default qualitative palette).
LAYER_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def strength_curves(source: TrialsSource) -> list[dict[str, Any]]:
    """Per adaptive trial: ``number``, ``state``, ``value``, ``epochs`` and ``strengths`` /
    ``duals``, one list per relaxed layer aligned with ``epochs`` (``None`` where missing).

    Read from the trial's ``history`` (the per-epoch reports carry ``strengths`` and ``duals``
    for this family only); trials with neither are left out.
    """
    curves: list[dict[str, Any]] = []
    for trial in trials_of(source):
        history = trial.user_attrs.get("history")
        if not isinstance(history, list):
            continue
        rows = [
            entry
            for entry in history
            if isinstance(entry, Mapping) and isinstance(entry.get("strengths"), list)
        ]
        if not rows:
            continue
        layers = max(len(entry["strengths"]) for entry in rows)
        curve: dict[str, Any] = {
            "number": trial.number,
            "state": trial.state.name,
            "value": trial.value if trial.values is not None else None,
            "epochs": [int(entry.get("epoch", index + 1)) for index, entry in enumerate(rows)],
        }
        for key in ("strengths", "duals"):
            curve[key] = [[_at(entry.get(key), layer) for entry in rows] for layer in range(layers)]
        curves.append(curve)
    return curves


def _at(values: Any, index: int) -> float | None:
    if not isinstance(values, list) or index >= len(values):
        return None
    return finite_or_none(values[index])


def shown_trial(curves: Sequence[dict[str, Any]], best_number: int | None) -> dict[str, Any] | None:
    """The adaptive trial the chart shows: the job's best when it is adaptive, else the
    adaptive trial with the most epochs (the latest among equals)."""
    if not curves:
        return None
    for curve in curves:
        if curve["number"] == best_number:
            return curve
    return max(curves, key=lambda c: (len(c["epochs"]), c["number"]))


def draw_strengths(
    curves: Sequence[dict[str, Any]], *, best_number: int | None = None
) -> go.Figure:
    """γ_i (top) and λ_i (bottom) by epoch for one adaptive trial, one curve per layer."""
    curve = shown_trial(curves, best_number)
    if curve is None:
        raise ValueError("no adaptive trial")
    which = "best trial" if curve["number"] == best_number else "trial"
    traces: list[dict[str, Any]] = []
    for key, axis, symbol in (("strengths", "y", "γ"), ("duals", "y2", "λ")):
        for layer, values in enumerate(curve[key]):
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "x": curve["epochs"],
                    "y": values,
                    "yaxis": axis,
                    "name": f"{symbol}{_subscript(layer)} layer {layer}",
                    "legendgroup": f"layer-{layer}",
                    "line": {
                        "color": LAYER_COLORS[layer % len(LAYER_COLORS)],
                        "dash": "solid" if key == "strengths" else "dash",
                    },
                    "marker": {"size": 4},
                    "hovertemplate": f"{symbol} layer {layer}: %{{y:.4g}}<br>epoch %{{x}}"
                    "<extra></extra>",
                }
            )
    layout = _layout(
        f"Learned strengths γ and dual variables λ per layer ({which} {curve['number']})",
        "epoch",
        "γ (strength)",
        height=FIGURE_HEIGHT + 80,
    )
    layout["yaxis"].update({"domain": [0.55, 1.0]})
    layout["yaxis2"] = {"title": {"text": "λ (dual)"}, "domain": [0.0, 0.45], "anchor": "x"}
    layout["xaxis"]["anchor"] = "y2"
    return go.Figure({"data": traces, "layout": layout}, skip_invalid=False)


def _subscript(number: int) -> str:
    return str(number).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def may_be_adaptive(spec: Mapping[str, Any] | None) -> bool:
    """Whether the job's search space fixes or offers ``relax.schedule: adaptive`` (so a
    running job's page has the chart's place before its first adaptive trial reports)."""
    param = search_space_params(spec).get("relax.schedule")
    if param is None:
        return False
    if param.kind == "fixed":
        return bool(param.value == "adaptive")  # type: ignore[union-attr]
    return "adaptive" in getattr(param, "choices", ())
