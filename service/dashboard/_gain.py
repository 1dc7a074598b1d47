"""The dashboard's relaxation gain section: the report's paired points per seed and the
interval of their difference (data function + plotly drawing, like ``_data``/``_figures``).

The report itself is ``service.gain.build_report``'s dict (``GET /v1/jobs/{id}/report``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from service.dashboard._data import finite_or_none
from service.dashboard._figures import FIGURE_HEIGHT

PROJECTED_COLOR = "#1f5fa8"

RELAXATION_OFF_COLOR = "#7a8494"
DIFFERENCE_COLOR = "#2a9d57"


def gain_points(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the gain chart draws, or ``None`` when no run has a value yet.

    Keys: ``seeds`` (as text, the x axis), ``as_found`` and ``relaxation_off`` (values aligned
    with ``seeds``, ``None`` where a run is missing), ``differences`` (as found − off, per
    seed with both), ``mean_difference`` and ``ci`` (``[low, high]`` of the 95 % paired t
    interval, or ``None``), ``quantity``, ``better`` and ``verdict``.
    """
    runs = [r for r in report.get("runs") or [] if isinstance(r, Mapping)]
    as_found = [finite_or_none(r.get("as_found")) for r in runs]
    off = [finite_or_none(r.get("relaxation_off")) for r in runs]
    if all(v is None for v in as_found + off):
        return None
    difference = report.get("difference") or {}
    ci = difference.get("ci") if isinstance(difference, Mapping) else None
    return {
        "seeds": [str(r.get("seed")) for r in runs],
        "as_found": as_found,
        "relaxation_off": off,
        "differences": [finite_or_none(r.get("difference")) for r in runs],
        "mean_difference": finite_or_none(difference.get("mean")) if difference else None,
        "ci": [finite_or_none(ci[0]), finite_or_none(ci[1])] if ci else None,
        "quantity": str(report.get("quantity") or "test metric"),
        "better": str(report.get("better") or "lower"),
        "verdict": report.get("verdict"),
    }


def draw_gain(points: Mapping[str, Any]) -> go.Figure:
    """Left: both arms per seed, each pair joined by a line. Right: the per-seed differences,
    their mean and its 95 % interval, with the zero line (no difference)."""
    quantity = points["quantity"]
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.62, 0.38],
        horizontal_spacing=0.14,
        subplot_titles=(f"{quantity} per seed", "as found − relaxation off"),
    )
    seeds = points["seeds"]
    xs: list[Any] = []
    ys: list[Any] = []
    for seed, found, off in zip(seeds, points["as_found"], points["relaxation_off"], strict=True):
        if found is not None and off is not None:
            xs += [seed, seed, None]
            ys += [off, found, None]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            line={"color": "#c5cbd5", "width": 2},
            hoverinfo="skip",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    for name, key, color, symbol in (
        ("relaxation off (θ = 0)", "relaxation_off", RELAXATION_OFF_COLOR, "circle-open"),
        ("as found", "as_found", PROJECTED_COLOR, "circle"),
    ):
        fig.add_trace(
            go.Scatter(
                x=seeds,
                y=points[key],
                mode="markers",
                name=name,
                marker={"color": color, "size": 11, "symbol": symbol, "line": {"width": 2}},
                hovertemplate=f"seed %{{x}}<br>{name}: %{{y:.4g}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    diffs = [d for d in points["differences"] if d is not None]
    diff_seeds = [s for s, d in zip(seeds, points["differences"], strict=True) if d is not None]
    fig.add_trace(
        go.Scatter(
            x=["per seed"] * len(diffs),
            y=diffs,
            mode="markers",
            name="difference per seed",
            text=[f"seed {s}" for s in diff_seeds],
            marker={"color": DIFFERENCE_COLOR, "size": 9, "opacity": 0.7},
            hovertemplate="%{text}: %{y:.4g}<extra></extra>",
        ),
        row=1,
        col=2,
    )
    if points["ci"] is not None and points["mean_difference"] is not None:
        mean, (low, high) = points["mean_difference"], points["ci"]
        fig.add_trace(
            go.Scatter(
                x=["mean, 95 % CI"],
                y=[mean],
                mode="markers",
                name="mean difference, 95 % paired t interval",
                marker={"color": "#111111", "size": 12, "symbol": "diamond"},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [high - mean],
                    "arrayminus": [mean - low],
                    "thickness": 2,
                    "width": 10,
                },
                hovertemplate=(
                    f"mean %{{y:.4g}}<br>95 % CI [{low:.4g}, {high:.4g}]<extra></extra>"
                ),
            ),
            row=1,
            col=2,
        )
    fig.add_hline(y=0, line={"color": "#b42318", "dash": "dot", "width": 1}, row=1, col=2)
    fig.update_layout(
        template="plotly_white",
        height=FIGURE_HEIGHT,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "y": -0.18, "x": 0},
        hovermode="closest",
    )
    fig.update_xaxes(title_text="seed", type="category", row=1, col=1)
    fig.update_yaxes(title_text=f"{quantity} ({points['better']} is better)", row=1, col=1)
    fig.update_yaxes(title_text=f"difference in {quantity}", row=1, col=2)
    return fig
