"""Dashboard data functions, drawings and pages on a small synthetic study."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from service import dashboard
from service.dashboard import _assets, _figures
from service.progress import Progress

REPO_ROOT = Path(__file__).resolve().parents[2]

DISTRIBUTIONS = {
    "optim.lr": FloatDistribution(1e-4, 1e-2, log=True),
    "relax.schedule": CategoricalDistribution(["none", "triangular"]),
    "relax.theta_max": FloatDistribution(0.0, 2.0),
}
PEAK = FloatDistribution(0.1, 0.9)


def _record(epoch: int, theta: float, val: float, **overrides: Any) -> dict[str, Any]:
    record = {
        "epoch": epoch,
        "progress": epoch / 3,
        "theta": theta,
        "val_projected": val,
        "val_relaxed": val + 0.05,
        "train_loss": 1.0 / epoch,
        "penalty_lie": 0.0,
        "penalty_norm": 0.01,
        "penalty_proj": 0.001,
        "equivariance_error_relaxed": 0.1 * theta,
        "equivariance_error_projected": 1e-7,
        "epoch_seconds": 2.0,
    }
    record.update(overrides)
    return record


def _trial(
    state: TrialState,
    history: list[dict[str, Any]],
    *,
    params: dict[str, Any],
    value: float | None = None,
    with_history: bool = True,
    final: dict[str, Any] | None = None,
) -> optuna.trial.FrozenTrial:
    distributions = dict(DISTRIBUTIONS)
    if "relax.peak" in params:
        distributions["relax.peak"] = PEAK
    user_attrs: dict[str, Any] = {"history": history} if with_history else {}
    user_attrs.update(final or {})
    return optuna.trial.create_trial(
        state=state,
        value=value,
        params=params,
        distributions={k: distributions[k] for k in params},
        user_attrs=user_attrs,
        intermediate_values={h["epoch"]: h["val_projected"] for h in history},
    )


def make_study(direction: str = "maximize") -> optuna.Study:
    """Six trials covering every state and the missing-data cases the readers must handle.

    0 COMPLETE (value 0.8), 1 COMPLETE (0.9, triangular with the conditional ``relax.peak``),
    2 PRUNED after 1 epoch, 3 FAIL before any epoch, 4 RUNNING with intermediate values but
    no history yet, 5 COMPLETE (0.7) with a NaN relaxed metric.
    """
    study = optuna.create_study(direction=direction)
    base = {"optim.lr": 1e-3, "relax.schedule": "none", "relax.theta_max": 0.5}
    study.add_trial(
        _trial(
            TrialState.COMPLETE,
            [_record(1, 0.5, 0.5), _record(2, 0.25, 0.7), _record(3, 0.0, 0.8)],
            params=base,
            value=0.8,
            final={
                "val_projected": 0.8,
                "val_relaxed": 0.85,
                "equivariance_error_relaxed": 0.0,
                "equivariance_error_projected": 1e-7,
                "final_theta": 0.0,
                "checkpoint": "artifacts/jobs/j/trials/0",
            },
        )
    )
    study.add_trial(
        _trial(
            TrialState.COMPLETE,
            [_record(1, 1.0, 0.6), _record(2, 0.5, 0.8), _record(3, 0.0, 0.9)],
            params={**base, "relax.schedule": "triangular", "relax.peak": 0.4, "optim.lr": 2e-3},
            value=0.9,
            final={
                "val_projected": 0.9,
                "val_relaxed": 0.91,
                "equivariance_error_relaxed": 0.01,
                "equivariance_error_projected": 2e-7,
                "final_theta": 0.0,
                "checkpoint": "artifacts/jobs/j/trials/1",
            },
        )
    )
    study.add_trial(
        _trial(TrialState.PRUNED, [_record(1, 0.8, 0.2)], params={**base, "optim.lr": 5e-3})
    )
    study.add_trial(_trial(TrialState.FAIL, [], params={**base, "relax.theta_max": 1.5}))
    study.add_trial(
        _trial(
            TrialState.RUNNING,
            [_record(1, 0.3, 0.55), _record(2, 0.1, 0.65)],
            params={**base, "relax.theta_max": 0.3},
            with_history=False,
        )
    )
    study.add_trial(
        _trial(
            TrialState.COMPLETE,
            [
                _record(1, 0.2, 0.6),
                _record(2, 0.1, 0.65),
                _record(3, 0.0, 0.7, val_relaxed=math.nan),
            ],
            params={**base, "relax.theta_max": 0.2, "optim.lr": 4e-4},
            value=0.7,
        )
    )
    return study


JOB = {
    "id": "j-1",
    "name": "rot<mnist> & c8",
    "status": "running",
    "progress": {"complete": 4, "pruned": 1, "total": 8},
    "spec": {"name": "rot<mnist> & c8", "objective": {"metric": "val_accuracy", "mode": "max"}},
}


# --- data -------------------------------------------------------------------------------------


def test_learning_curves_keep_every_state_and_merge_intermediate_values() -> None:
    curves = {c["number"]: c for c in dashboard.learning_curves(make_study())}
    assert sorted(curves) == [0, 1, 2, 4, 5]  # trial 3 failed before reporting an epoch
    assert curves[2]["state"] == "PRUNED" and curves[2]["epochs"] == [1]
    assert curves[1]["val_projected"] == [0.6, 0.8, 0.9]
    assert curves[1]["val_relaxed"] == pytest.approx([0.65, 0.85, 0.95])
    # RUNNING without a history attribute: projected values come from intermediates.
    assert curves[4]["state"] == "RUNNING"
    assert curves[4]["val_projected"] == [0.55, 0.65]
    assert curves[4]["val_relaxed"] == [None, None]
    # A NaN reported by a diverged epoch becomes None, not a NaN in the page's JSON.
    assert curves[5]["val_relaxed"][-1] is None


def test_curves_accept_trials_instead_of_a_study() -> None:
    study = make_study()
    trials = study.get_trials(deepcopy=False)
    assert dashboard.learning_curves(trials) == dashboard.learning_curves(study)


def test_theta_and_equivariance_curves() -> None:
    study = make_study()
    theta = {c["number"]: c for c in dashboard.theta_curves(study)}
    assert theta[1]["theta"] == [1.0, 0.5, 0.0]
    assert theta[4]["theta"] == [None, None]
    eq = {c["number"]: c for c in dashboard.equivariance_curves(study)}
    assert eq[1]["relaxed"] == pytest.approx([0.1, 0.05, 0.0])
    assert eq[1]["projected"] == [1e-7, 1e-7, 1e-7]
    assert eq[2]["state"] == "PRUNED"


def test_epoch_records_ignore_malformed_history_entries() -> None:
    trial = optuna.trial.create_trial(
        value=1.0,
        user_attrs={"history": ["junk", {"epoch": 2, "theta": "x", "val_projected": True}]},
        intermediate_values={1: 0.4, 2: 0.6},
    )
    records = dashboard.epoch_records(trial)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["theta"] is None
    assert records[1]["val_projected"] == 0.6  # the bool is refused, the intermediate fills in


def test_best_trial_summary_follows_the_direction() -> None:
    best = dashboard.best_trial_summary(make_study("maximize"))
    assert best is not None
    assert best["number"] == 1 and best["value"] == 0.9 and best["direction"] == "maximize"
    assert best["params"]["relax.peak"] == 0.4
    assert best["checkpoint"] == "artifacts/jobs/j/trials/1"
    assert best["equivariance_error_projected"] == 2e-7 and best["epochs"] == 3
    worst = dashboard.best_trial_summary(make_study("minimize"))
    assert worst is not None and worst["number"] == 5


def test_best_trial_summary_without_complete_trials_is_none() -> None:
    study = optuna.create_study()
    study.add_trial(_trial(TrialState.PRUNED, [_record(1, 0.1, 0.1)], params={}))
    assert dashboard.best_trial_summary(study) is None


def test_direction_is_required_for_a_trial_list() -> None:
    trials = make_study().get_trials()
    with pytest.raises(ValueError, match="direction"):
        dashboard.best_trial_summary(trials)
    summary = dashboard.best_trial_summary(trials, "minimize")
    assert summary is not None and summary["number"] == 5


def test_parameter_table_ranks_complete_trials_first() -> None:
    table = dashboard.parameter_table(make_study())
    assert [r["number"] for r in table["rows"]] == [1, 0, 5, 2, 3, 4]
    assert table["columns"][:4] == ["number", "state", "value", "epochs"]
    assert "relax.peak" in table["columns"]
    rows = {r["number"]: r for r in table["rows"]}
    assert rows[0]["relax.peak"] is None and rows[1]["relax.peak"] == 0.4
    assert rows[2]["value"] is None and rows[2]["epochs"] == 1
    limited = dashboard.parameter_table(make_study(), limit=2)
    assert [r["number"] for r in limited["rows"]] == [1, 0] and limited["total"] == 6


def test_state_counts_and_parameter_names() -> None:
    study = make_study()
    counts = dashboard.state_counts(study)
    assert counts["COMPLETE"] == 3 and counts["PRUNED"] == 1
    assert counts["FAIL"] == 1 and counts["RUNNING"] == 1 and counts["WAITING"] == 0
    assert dashboard.relax_param_names(study) == [
        "relax.peak",
        "relax.schedule",
        "relax.theta_max",
    ]
    # relax.peak exists only under the triangular schedule: not in every complete trial.
    assert dashboard.relax_param_names(study, in_every_complete_trial=True) == [
        "relax.schedule",
        "relax.theta_max",
    ]


def test_certificate_table_reads_lists_and_mappings() -> None:
    listed = dashboard.certificate_table(
        {
            "group": "C4",
            "elements": ["e", "r1", "r2", "r3"],
            "errors": [0.0, 1e-7, 2e-6, 1e-7],
            "relaxed_errors": [0.0, 0.1, 0.2, 0.1],
            "tolerance": 1e-6,
            "seed": 0,
            "passed": False,
        }
    )
    assert listed["group"] == "C4" and listed["passed"] is False
    assert [r["within_tolerance"] for r in listed["rows"]] == [True, True, False, True]
    assert listed["max_error_projected"] == 2e-6 and listed["max_error_relaxed"] == 0.2
    mapped = dashboard.certificate_table(
        {"errors": {"r1": 1e-8}, "relaxed": {"errors": {"r1": 0.3}}, "passed": "yes"}
    )
    assert mapped["rows"] == [
        {"element": "r1", "error_projected": 1e-8, "error_relaxed": 0.3, "within_tolerance": None}
    ]
    assert mapped["passed"] is None  # only a real bool counts as a verdict


def test_progress_is_one_typed_shape() -> None:
    progress = Progress.read({"complete": 3, "pruned": 1, "failed": 1, "running": 2, "total": 10})
    assert progress.finished == 5 and progress.fraction == 0.5
    assert dashboard.progress_fraction({"complete": 3, "total": 4}) == 0.75
    # other spellings are not guessed at: they are not the shape the service writes
    assert dashboard.progress_fraction({"completed": 3, "total": 4}) == 0.0
    assert dashboard.progress_fraction(None) is None
    assert dashboard.progress_fraction({"total": 0}) is None
    assert Progress.read({"complete": -1}) == Progress()  # a malformed row reads as empty
    assert Progress.read({"best_value": float("nan")}).best_value is None


# --- drawings ---------------------------------------------------------------------------------


def test_curve_figures_draw_each_trial_in_its_own_colour() -> None:
    study = make_study()
    curves = dashboard.learning_curves(study)
    fig = dashboard.draw_learning_curves(curves, best_number=1, metric_name="val_accuracy")
    by_trial: dict[str, list[Any]] = {}
    for trace in fig.data:
        by_trial.setdefault(trace.legendgroup, []).append(trace)
    # one projected (solid) and one relaxed (dashed) trace per trial with values, same colour
    complete = by_trial["trial-0"]
    assert [t.line.dash for t in complete] == ["solid", "dash"]
    assert complete[0].line.color == complete[1].line.color == _figures.trial_color(0)
    assert by_trial["trial-1"][0].line.color != complete[0].line.color
    assert len(by_trial["trial-4"]) == 1  # the running trial has no relaxed values yet
    assert fig.data[-1].legendgroup == "trial-1" and fig.data[-1].line.width > 3  # best on top
    assert fig.layout.yaxis.title.text == "val_accuracy"
    # whole epochs only on the x axis
    assert fig.layout.xaxis.tickformat == "d" and fig.layout.xaxis.dtick == 1


def test_epoch_axis_never_ticks_half_epochs() -> None:
    assert _figures.epoch_axis("epoch", 3)["dtick"] == 1
    assert _figures.epoch_axis("epoch", 120)["dtick"] == 12


def test_theta_is_drawn_per_step_from_the_schedule() -> None:
    spec = {"budget": {"epochs": 3}, "search_space": "relax"}
    curves = dashboard.theta_schedules(make_study(), spec, points=31)
    triangular = next(c for c in curves if c["number"] == 1)
    assert len(triangular["theta"]) == 31 and triangular["epochs"][-1] == 3
    # between epoch ends: θ rises to its apex inside the first epoch (peak 0.4 of the triangle)
    assert max(triangular["theta"]) == pytest.approx(0.5, rel=0.05)
    assert triangular["theta"][-1] == 0.0
    none = next(c for c in curves if c["number"] == 0)
    assert set(none["theta"]) == {0.0}


def test_fixed_hyperparameters_come_from_the_spec() -> None:
    assert dashboard.fixed_hparams({"search_space": "baseline"}) == {"relax.schedule": "none"}
    assert dashboard.fixed_hparams({"search_space": "no-such-preset"}) == {}


def test_equivariance_figure_is_log_scaled_and_floors_zero() -> None:
    curves = dashboard.equivariance_curves(make_study())
    fig = dashboard.draw_equivariance(curves)
    assert fig.layout.yaxis.type == "log"
    relaxed = next(t for t in fig.data if t.legendgroup == "trial-0" and t.line.dash == "dash")
    # Smallest positive error is 1e-7 (projected): a measured 0.0 is drawn at 1e-8.
    assert _figures.log_floor(curves, ("relaxed", "projected")) == pytest.approx(1e-8)
    assert pytest.approx(1e-8) in relaxed.y  # drawn at the floor, not dropped
    assert all(y is None or y > 0 for t in fig.data for y in t.y)


def test_light_study_keeps_trial_numbers_for_the_history_plot() -> None:
    study = make_study()
    light = _figures.light_study(study.get_trials(), study.direction)
    complete = light.get_trials(states=(TrialState.COMPLETE,))
    assert [t.number for t in complete] == [0, 1, 5]
    assert [t.value for t in complete] == [0.8, 0.9, 0.7]
    assert all("history" not in t.user_attrs for t in light.trials)


def test_importance_subsample_is_seeded_and_bounded() -> None:
    study = make_study()
    trials = study.get_trials()
    sample = _figures.importance_subsample(trials, 2)
    assert len(sample) == 2 and sample == _figures.importance_subsample(trials, 2)
    assert all(t.state == TrialState.COMPLETE for t in sample)
    assert len(_figures.importance_subsample(trials, 100)) == 3


# --- pages ------------------------------------------------------------------------------------


def _figures_of(study: Any, job: dict[str, Any] = JOB) -> dict[str, dict[str, Any]]:
    return dashboard.dashboard_view(study, job).figures


def _drawn(figure: dict[str, Any]) -> bool:
    return "data" in figure and "message" not in figure


def test_dashboard_page_is_self_contained_and_escapes_user_strings() -> None:
    page = dashboard.render_dashboard(make_study(), JOB, certificate={"group": "C4<b>"})
    for chart_id in dashboard.CHART_IDS:
        assert f'<section id="{chart_id}"' in page
    assert page.count("<script src=") == 0  # no CDN, no server: plotly.js is inline
    assert page.count(_assets.asset(_assets.PLOTLY).text[:200]) == 1  # type: ignore[union-attr]
    assert "rot&lt;mnist&gt; &amp; c8" in page and "rot<mnist>" not in page
    assert "C4&lt;b&gt;" in page
    assert 'aria-valuenow="62"' in page and "(5 of 8 trials)" in page  # progress 5 / 8
    # the figures travel as JSON that cannot close its script element
    data = page.split('<script type="application/json" id="dashboard-data">', 1)[1]
    assert "</" not in data.split("</script>", 1)[0]
    assert all(_drawn(f) for k, f in _figures_of(make_study()).items() if k != "chart-importance")


def test_served_page_links_its_assets_and_runs_no_inline_script() -> None:
    page = dashboard.render_dashboard(
        make_study(),
        JOB,
        page=dashboard.PageOptions(inline=False, csrf="c<s>rf"),
        live_url="/v1/jobs/j/dashboard/data",
        etag='"e"',
    )
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, flags=re.S)
    assert all(
        attrs.strip().startswith("src=") or "application/json" in attrs for attrs, _ in scripts
    )
    assert _assets.asset_url(_assets.PLOTLY) in page and len(page) < 200_000
    assert 'content="c&lt;s&gt;rf"' in page
    assert '"url": "/v1/jobs/j/dashboard/data"' in page or "/v1/jobs/j/dashboard/data" in page
    assert "http-equiv" not in page  # updates in place, never a reload


def test_no_server_path_reaches_the_page() -> None:
    page = dashboard.render_dashboard(make_study(), JOB)
    assert "artifacts/jobs" not in page  # trials record their checkpoint folder on the server


def test_dashboard_without_trials_says_so() -> None:
    page = dashboard.render_dashboard(optuna.create_study(), {"id": 7, "status": "queued"})
    assert "No trials yet" in page
    assert _figures_of(optuna.create_study(), {"id": 7, "status": "queued"}) == {}


def test_importances_need_two_complete_trials() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        _trial(
            TrialState.COMPLETE,
            [_record(1, 0.1, 0.5)],
            params={"relax.theta_max": 0.1, "relax.schedule": "none", "optim.lr": 1e-3},
            value=0.5,
        )
    )
    figures = _figures_of(study)
    assert "at least 2 complete trials" in figures["chart-importance"]["message"]
    assert _drawn(figures["chart-history"])


def test_a_running_relax_job_is_not_said_to_search_no_relax_parameter() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        _trial(
            TrialState.RUNNING,
            [_record(1, 0.3, 0.5)],
            params={"relax.theta_max": 0.3, "relax.schedule": "none", "optim.lr": 1e-3},
        )
    )
    figures = _figures_of(study)
    assert "No relax" not in figures["chart-parallel"].get("note", "")
    assert figures["chart-parallel"]["message"] == "No trial has completed yet."


def test_a_failing_chart_degrades_to_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("fanova <exploded>")

    monkeypatch.setattr(_figures, "draw_param_importances", broken)
    figures = _figures_of(make_study())
    assert figures["chart-importance"]["message"] == "Not available: fanova <exploded>"
    assert _drawn(figures["chart-parallel"])
    page = dashboard.render_dashboard(make_study(), JOB)
    assert "fanova <exploded>" not in page  # escaped inside the JSON


def test_single_valued_parameters_do_not_break_the_page() -> None:
    study = optuna.create_study(direction="minimize")
    for value in (0.3, 0.2, 0.1):
        study.add_trial(
            _trial(
                TrialState.COMPLETE,
                [_record(1, 0.1, value)],
                params={"relax.schedule": "none"},
                value=value,
            )
        )
    page = dashboard.render_dashboard(study, {"id": "x", "name": "flat"})
    for chart_id in dashboard.CHART_IDS:
        assert f'id="{chart_id}"' in page


def test_a_failed_jobs_error_is_shown_escaped_on_both_pages() -> None:
    error = "trial 0: ValueError: unknown keys ['<widht>']"
    failed = {"id": "f", "name": "bad", "status": "failed", "error": error}
    for page in (
        dashboard.render_dashboard(optuna.create_study(), failed),
        dashboard.render_dashboard(make_study(), {**JOB, "status": "failed", "error": error}),
        dashboard.render_jobs_list([failed, {"id": "g", "status": "succeeded", "error": None}]),
    ):
        assert "error: trial 0: ValueError: unknown keys [&#39;&lt;widht&gt;&#39;]" in page
        assert "<widht>" not in page and page.count('class="job-error"') == 1
    long = dashboard.render_jobs_list([{**failed, "error": "x" * 5000}])
    assert "x" * 199 + "…" in long and "x" * 200 not in long


def test_trial_failure_reasons_are_in_the_table() -> None:
    study = make_study()
    study.add_trial(
        _trial(
            TrialState.FAIL,
            [],
            params={"relax.schedule": "none", "relax.theta_max": 0.1, "optim.lr": 1e-3},
            final={"stop_reason": "diverged: loss became nan at epoch 1"},
        )
    )
    page = dashboard.render_dashboard(study, JOB)
    assert "diverged: loss became nan at epoch 1" in page


def test_jobs_list_links_escape_names_and_times_are_readable() -> None:
    page = dashboard.render_jobs_list(
        [
            {
                "id": "a/b",
                "name": "<i>x</i>",
                "status": "succeeded",
                "progress": {"complete": 4, "total": 4},
                "created_at": "2026-12-06T21:40:05.123456+00:00",
                "best": {"value": 0.9123456},
                "tenant": "alice",
            },
            {"id": 2, "name": "second", "status": "weird"},
        ],
        show_tenant=True,
    )
    assert 'href="/v1/jobs/a%2Fb/dashboard"' in page and "?token=" not in page
    assert "&lt;i&gt;x&lt;/i&gt;" in page and "<i>x</i>" not in page
    assert 'class="badge unknown"' in page
    assert "2026-12-06 21:40 UTC" in page and "0.9123" in page and "<th>tenant</th>" in page
    assert "100%" in page  # the bar is drawn from the typed progress
    custom = dashboard.render_jobs_list([{"id": 3}], link_format="/ui/{id}")
    assert 'href="/ui/3"' in custom
    assert "No jobs yet" in dashboard.render_jobs_list([])


def test_dashboard_imports_no_torch_ray_or_escnn() -> None:
    # A render also runs the lazy imports (Optuna's importance module, plotly.js).
    code = (
        "import sys, optuna\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "import service.dashboard as d\n"
        "s = optuna.create_study()\n"
        "s.optimize(lambda t: t.suggest_float('relax.theta_max', 0, 1)"
        " + t.suggest_float('optim.lr', 0, 1), n_trials=4)\n"
        "d.render_dashboard(s, {'id': 1, 'name': 'n'})\n"
        "d.warm_up()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'escnn'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_failing_study_copy_only_costs_the_optuna_charts(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("incompatible distribution")

    monkeypatch.setattr(_figures, "light_study", broken)
    figures = _figures_of(make_study())
    for chart_id in ("chart-history", "chart-parallel", "chart-importance"):
        assert figures[chart_id]["message"] == "Not available: incompatible distribution"
    for chart_id in ("chart-curves", "chart-theta", "chart-equivariance"):
        assert _drawn(figures[chart_id])


def test_compare_gives_the_improvement_over_a_baseline_job() -> None:
    spec = {"task": "rotated_mnist", "objective": {"metric": "val_accuracy", "mode": "max"}}
    baseline = optuna.create_study(direction="maximize")
    baseline.add_trial(
        _trial(TrialState.COMPLETE, [_record(1, 0.0, 0.8)], params={"optim.lr": 1e-3}, value=0.8)
    )
    jobs = [
        dashboard.ComparedJob(
            {"id": "b", "name": "base", "spec": {**spec, "search_space": "baseline"}},
            baseline.trials,
        ),
        dashboard.ComparedJob(
            {"id": "r", "name": "relax", "spec": {**spec, "search_space": "relax"}},
            make_study().trials,
        ),
    ]
    data = dashboard.compare_jobs(jobs)
    assert data["problem"] is None and data["baseline"] == "b"
    relax = data["jobs"][1]
    assert relax["best_value"] == 0.9 and relax["improvement"] == pytest.approx(0.125)
    assert data["jobs"][0]["improvement"] is None
    assert relax["curve"]["epochs"] == [1, 2, 3] and relax["params"]["relax.peak"] == 0.4
    assert relax["best_so_far"]["values"] == [0.8, 0.9, 0.9]
    assert "relax.peak" in data["param_keys"]
    figures = dashboard.compare_payload(data)
    assert all(_drawn(f) for f in figures.values())
    page = dashboard.render_compare(data)
    assert "+12.5 %" in page and "(baseline)" in page
    other = {"id": "n", "spec": {**spec, "task": "nbody"}}
    assert (
        "different tasks"
        in dashboard.compare_jobs([jobs[0], dashboard.ComparedJob(other, [])])["problem"]
    )
    assert dashboard.compare_jobs(jobs[:1])["problem"]
