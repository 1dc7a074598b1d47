"""The adaptive family's chart: per-layer strengths and dual variables by epoch."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from service import dashboard
from service.dashboard import _strengths

SCHEDULE = CategoricalDistribution(["none", "adaptive"])


def _history(strengths: list[list[float]], duals: list[list[float]]) -> list[dict[str, Any]]:
    return [
        {
            "epoch": epoch,
            "theta": max(abs(g) for g in gammas),
            "val_projected": 0.5 + 0.1 * epoch,
            "strengths": gammas,
            "duals": lams,
        }
        for epoch, (gammas, lams) in enumerate(zip(strengths, duals, strict=True), 1)
    ]


def _study() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    adaptive = _history([[1.0, 0.8], [0.4, 0.1], [0.0, 0.0]], [[0.1, 0.2], [0.3, 0.5], [0.3, 0.5]])
    for number, (schedule, history, value) in enumerate(
        [
            ("none", [{"epoch": 1, "theta": 0.0, "val_projected": 0.4}], 0.4),
            ("adaptive", adaptive, 0.8),
        ]
    ):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=value,
                params={"relax.schedule": schedule},
                distributions={"relax.schedule": SCHEDULE},
                user_attrs={"history": history},
                intermediate_values={h["epoch"]: h["val_projected"] for h in history},
            )
        )
        assert study.trials[-1].number == number
    return study


def test_curves_are_per_layer_and_only_for_adaptive_trials() -> None:
    curves = dashboard.strength_curves(_study())
    assert len(curves) == 1
    (curve,) = curves
    assert curve["number"] == 1 and curve["epochs"] == [1, 2, 3]
    assert curve["strengths"] == [[1.0, 0.4, 0.0], [0.8, 0.1, 0.0]]  # one list per layer
    assert curve["duals"] == [[0.1, 0.3, 0.3], [0.2, 0.5, 0.5]]


def test_figure_has_a_curve_per_layer_for_each_quantity() -> None:
    figure = dashboard.draw_strengths(dashboard.strength_curves(_study()), best_number=1)
    names = [trace.name for trace in figure.data]
    assert names == ["γ₀ layer 0", "γ₁ layer 1", "λ₀ layer 0", "λ₁ layer 1"]
    assert {trace.yaxis for trace in figure.data} == {"y", "y2"}
    assert "best trial 1" in figure.layout.title.text


def test_page_shows_the_chart_only_when_a_trial_is_or_may_be_adaptive() -> None:
    job = {"id": "j", "name": "adaptive", "status": "succeeded"}
    chart = _strengths.STRENGTHS_CHART_ID
    page = dashboard.render_dashboard(_study(), job)
    assert f'<section id="{chart}"' in page
    figure = dashboard.dashboard_view(_study(), job).figures[chart]
    assert "data" in figure and "message" not in figure  # drawn
    plain = optuna.create_study(direction="maximize")
    plain.add_trial(_study().trials[0])
    assert chart not in dashboard.render_dashboard(plain, job)
    # a running job whose search space offers the family has the chart's place already
    running = {**job, "status": "running", "spec": {"search_space": "relax"}}
    assert f'<section id="{chart}"' in dashboard.render_dashboard(plain, running)
    assert "message" in dashboard.dashboard_view(plain, running).figures[chart]
    assert not _strengths.may_be_adaptive({"search_space": "paper"})
    assert _strengths.may_be_adaptive({"search_space": "adaptive"})
