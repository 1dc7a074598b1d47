"""The HTML pages: one job's dashboard, the job list, the comparison of jobs, and sign-in.

Pages are Jinja2 templates (``service/dashboard/templates``, autoescaped: every string from a
user, such as job names, specs, parameter names, categorical values or error texts, is
escaped by the template engine) with their stylesheet and scripts in
``service/dashboard/static``. No page runs inline script: each embeds its figures as JSON in a
``<script type="application/json">`` block that ``job.js`` draws with plotly.

A page is either *served* (``PageOptions(inline=False)``: plotly.js, the stylesheet and the
scripts are linked from ``/static``, cached by the browser; a running job's page asks
``live_url`` for changes and updates in place) or *self-contained* (the default: everything
inline, so the page opens offline from a file: ``relaxtune dashboard JOB --out FILE.html``).

A chart that cannot be drawn (no completed trial yet, importances on too few trials, an Optuna
error) becomes a message in its container, never an exception: the API serves this page while
the job runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import jinja2
import optuna
import plotly.graph_objects as go
import plotly.io as pio
from markupsafe import Markup
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from service.dashboard import _assets, _data, _figures, _gain, _strengths
from service.progress import Progress

logger = logging.getLogger(__name__)

#: Ids of the chart containers, in page order. Tests and users' scripts rely on them.
CHART_IDS: tuple[str, ...] = (
    "chart-history",
    "chart-curves",
    "chart-theta",
    "chart-equivariance",
    "chart-parallel",
    "chart-importance",
)
_CHART_HEADINGS = {
    "chart-history": "Optimization history",
    "chart-curves": "Learning curves",
    "chart-theta": "Relaxation strength θ",
    "chart-equivariance": "Equivariance error",
    "chart-parallel": "Parallel coordinates",
    "chart-importance": "Hyperparameter importances",
}
#: Ids of the parts of a job page that a live update replaces.
FRAGMENT_IDS: tuple[str, ...] = ("job-header", "job-summary", "job-trials")

DEFAULT_LINK_FORMAT = "/v1/jobs/{id}/dashboard"

# Job statuses get a CSS class only from this set (an unknown one still renders, neutrally).
_STATUS_CLASSES = {
    "queued": "queued",
    "running": "running",
    "succeeded": "ok",
    "failed": "bad",
    "cancelled": "muted",
}
_TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class PageOptions:
    """How a page is delivered: ``inline`` assets (a self-contained file) or linked ones,
    who is signed in (``user``: a ``Principal``, shown in the top bar) and the session's
    ``csrf`` token (for the page's state-changing requests)."""

    inline: bool = True
    user: Any = None
    csrf: str | None = None


# --- template environment ----------------------------------------------------------------------


def _num(value: Any) -> str:
    """A table cell: numbers to 4 significant digits, missing as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _status_class(status: Any) -> str:
    return _STATUS_CLASSES.get(str(status).lower(), "unknown") if status else "unknown"


def human_time(value: Any) -> str:
    """An ISO 8601 timestamp as ``2026-12-06 21:40 UTC`` (pages turn it into the reader's
    local time and "5 minutes ago" when their script runs)."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@jinja2.pass_context
def _script(context: Any, name: str) -> Markup:
    found = _assets.asset(name)
    if found is None:
        raise KeyError(name)
    if context.get("inline", True):
        # "</script" cannot occur in plotly.js or ours; the file is inlined as it is.
        return Markup(f"<script>{found.text}</script>")
    return Markup(f'<script src="{found.url}"></script>')


@jinja2.pass_context
def _stylesheet(context: Any) -> Markup:
    found = _assets.asset("relaxtune.css")
    assert found is not None
    if context.get("inline", True):
        return Markup(f"<style>{found.text}</style>")
    return Markup(f'<link rel="stylesheet" href="{found.url}">')


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("service.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
    )
    env.filters["num"] = _num
    env.filters["status_class"] = _status_class
    env.filters["human_time"] = human_time
    env.globals["script"] = _script
    env.globals["stylesheet"] = _stylesheet
    return env


def _render(template: str, options: PageOptions, **context: Any) -> str:
    return (
        _environment()
        .get_template(template)
        .render(inline=options.inline, user=options.user, csrf=options.csrf, **context)
    )


def warm_up() -> None:
    """Load now what the first page would otherwise load while a request waits.

    That is plotly.js (read from the installed package, and compressed once), the templates,
    Optuna's importance module, whose import pulls in scikit-learn (about a second), and
    plotly's lazily built figure classes (one page of a tiny study is rendered and thrown
    away). The API calls this once in a background thread at startup; pages render correctly
    without it.
    """
    plotly_js = _assets.asset(_assets.PLOTLY)
    if plotly_js is not None:
        _ = plotly_js.gzipped
    _figures.optuna_plotting()
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import create_trial

    distributions = {
        "optim.lr": FloatDistribution(1e-4, 1e-1, log=True),
        "relax.theta_max": FloatDistribution(0.0, 1.0),
        "relax.schedule": CategoricalDistribution(["linear_decay", "cosine"]),
    }
    trials = []
    for number in range(4):
        history = [
            {
                "epoch": e,
                "progress": e / 2,
                "theta": 0.5 * (2 - e) / 2,
                "val_projected": 0.1 * e,
                "val_relaxed": 0.1 * e,
                "equivariance_error_relaxed": 0.1,
                "equivariance_error_projected": 1e-6,
            }
            for e in (1, 2)
        ]
        trial = create_trial(
            params={
                "optim.lr": 10.0 ** -(number + 1),
                "relax.theta_max": number / 4,
                "relax.schedule": ("linear_decay", "cosine")[number % 2],
            },
            distributions=distributions,
            value=0.1 * number,
            intermediate_values={1: 0.05 * number, 2: 0.1 * number},
            user_attrs={"history": history, "val_projected": 0.1 * number},
        )
        trial.number = number
        trials.append(trial)
    job = {
        "id": "warm-up",
        "name": "warm-up",
        "status": "succeeded",
        "spec": {"objective": {"metric": "val_accuracy", "mode": "max"}},
    }
    render_dashboard(_data.StudySnapshot([StudyDirection.MAXIMIZE], trials), job)


# --- the job page ------------------------------------------------------------------------------


def progress_fraction(progress: Any) -> float | None:
    """Completed fraction in [0, 1] of a job's progress (:class:`~service.progress.Progress`
    or its stored dict), or ``None`` without a trial budget."""
    return Progress.read(progress).fraction


def _metric_name(job: Mapping[str, Any]) -> str:
    spec = job.get("spec")
    objective = spec.get("objective") if isinstance(spec, Mapping) else None
    metric = objective.get("metric") if isinstance(objective, Mapping) else None
    return str(metric) if metric else "objective"


def _figure_json(fig: go.Figure) -> dict[str, Any]:
    # The section heading names the chart; a second title inside the plot only costs space.
    parcoords = any(getattr(trace, "type", None) == "parcoords" for trace in fig.data)
    fig.update_layout(title_text="", margin_t=48 if parcoords else 24)
    return json.loads(pio.to_json(fig, validate=False, engine="json"))


def _chart(build: Callable[[], go.Figure | str], chart_id: str, note: str = "") -> dict[str, Any]:
    """A chart's payload: ``{"data", "layout"}`` or ``{"message"}``, plus its ``note``."""
    try:
        result = build()
        payload = {"message": result} if isinstance(result, str) else _figure_json(result)
    except Exception as error:  # any plotting failure degrades to a message, never a 500
        logger.warning("dashboard chart %s not drawn: %s", chart_id, error)
        payload = {"message": f"Not available: {error}"}
    if note:
        payload["note"] = note
    return payload


def _job_context(job: Mapping[str, Any], direction: StudyDirection) -> dict[str, Any]:
    status = job.get("status")
    return {
        "id": job.get("id", "—"),
        "name": job.get("name") or f"job {job.get('id', '')}",
        "status": status,
        "finished": status in _TERMINAL,
        "cancel_requested": bool(job.get("cancel_requested")),
        "error": job.get("error"),
        "metric": _metric_name(job),
        "direction": direction.name.lower(),
        "progress": Progress.read(job.get("progress")),
        "created_at": job.get("created_at"),
        "started_at": job.get("started_at"),
        "finished_at": job.get("finished_at"),
        "has_checkpoint": status == "succeeded" and job.get("best") is not None,
    }


def _best_rows(best: Mapping[str, Any]) -> list[tuple[str, Any]]:
    # No checkpoint path: it names a folder on the server, of no use to a remote reader (the
    # download button fetches the checkpoint).
    return [
        ("trial", best["number"]),
        (f"objective ({best['direction']}, projected)", best["value"]),
        ("validation, projected", best["val_projected"]),
        ("validation, relaxed", best["val_relaxed"]),
        ("equivariance error, projected", best["equivariance_error_projected"]),
        ("equivariance error, relaxed", best["equivariance_error_relaxed"]),
        ("final θ", best["final_theta"]),
        ("epochs", best["epochs"]),
        ("duration (s)", best["duration_seconds"]),
    ]


def _gain_context(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if report is None or report.get("status") in (None, "not_requested"):
        return None
    progress = report.get("progress") or {}
    verdict = report.get("verdict") or (
        f"Report {report.get('status')}: {progress.get('done', 0)} of "
        f"{progress.get('total', '?')} runs done."
    )
    arms = report.get("arms") or {}
    difference = report.get("difference") or {}
    return {
        "verdict": verdict,
        "has_chart": _gain.gain_points(report) is not None,
        "arms": [
            (label, arms[arm])
            for arm, label in (
                ("as_found", "as found"),
                ("relaxation_off", "relaxation off (θ = 0)"),
            )
            if arm in arms
        ],
        "method": difference.get("method") if isinstance(difference, Mapping) else None,
        "quantity": report.get("quantity"),
        "source_trial": report.get("source_trial"),
        "seeds": report.get("seeds"),
        "search_seed": report.get("search_seed"),
    }


def _trial_table(
    trials: Sequence[FrozenTrial], direction: StudyDirection, limit: int
) -> dict[str, Any]:
    table = _data.parameter_table(trials, direction, limit=limit)
    by_number = {t.number: t for t in trials}
    for row in table["rows"]:
        trial = by_number.get(row["number"])
        reason = _data.stop_reason(trial) if trial is not None else None
        row["state"] = row["state"].lower()
        row["reason"] = reason if row["state"] != "complete" else None
    table["columns"] = [*table["columns"], "reason"]
    return table


@dataclass
class DashboardView:
    """Everything a job page shows: template ``context`` and chart payloads (``figures``)."""

    context: dict[str, Any]
    figures: dict[str, dict[str, Any]]

    def __post_init__(self) -> None:
        self._fragments: dict[str, str] | None = None
        self._figure_texts: dict[str, str] = {}

    def fragments(self) -> dict[str, str]:
        """The parts a live update replaces, rendered: ``FRAGMENT_IDS`` → HTML (rendered
        once per view)."""
        if self._fragments is None:
            names = {
                "job-header": "_job_header.html",
                "job-summary": "_job_summary.html",
                "job-trials": "_job_trials.html",
            }
            self._fragments = {
                key: _render(names[key], PageOptions(), **self.context) for key in FRAGMENT_IDS
            }
        return self._fragments

    def figure_text(self, chart_id: str) -> str:
        """The chart's payload as JSON text (made once per view)."""
        if chart_id not in self._figure_texts:
            self._figure_texts[chart_id] = json.dumps(
                self.figures[chart_id], separators=(",", ":"), sort_keys=True
            )
        return self._figure_texts[chart_id]

    def changes_since(self, earlier: DashboardView | None) -> dict[str, Any]:
        """What a page showing ``earlier`` must replace to show this view: the fragments and
        figures that differ (everything when ``earlier`` is unknown). An epoch of a running
        trial changes a few charts, not the page: the update carries only those."""
        fragments = self.fragments()
        figures = dict(self.figures)
        if earlier is not None:
            before = earlier.fragments()
            fragments = {k: v for k, v in fragments.items() if before.get(k) != v}
            figures = {
                k: v
                for k, v in figures.items()
                if k not in earlier.figures or earlier.figure_text(k) != self.figure_text(k)
            }
        return {"fragments": fragments, "figures": figures}


def dashboard_view(
    study: optuna.Study | _data.StudySnapshot,
    job: Mapping[str, Any],
    certificate: Mapping[str, Any] | None = None,
    *,
    max_table_rows: int = 50,
    importance_max_trials: int = 100,
    report: Mapping[str, Any] | None = None,
    interactive: bool = False,
) -> DashboardView:
    """The job page's content as plain data (see :class:`DashboardView`); ``interactive``
    adds the cancel and download buttons (a served page, not a saved file)."""
    trials = _data.trials_of(study)
    # relaxtune studies have one objective; ``directions[0]`` keeps a page for any other
    # study instead of raising where ``study.direction`` would.
    direction = study.directions[0]
    job_context = _job_context(job, direction)
    if certificate is not None and job_context["status"] == "succeeded":
        job_context["has_checkpoint"] = True  # the best folder is exported
    metric = job_context["metric"]
    spec = job.get("spec") if isinstance(job.get("spec"), Mapping) else None
    context: dict[str, Any] = {
        "job": job_context,
        "interactive": interactive,
        "no_trials": not trials,
        "certificate": _data.certificate_table(certificate) if certificate is not None else None,
        "gain": _gain_context(report),
        "spec_text": json.dumps(spec, indent=2, sort_keys=True, default=str) if spec else None,
        "charts": [{"id": c, "heading": _CHART_HEADINGS[c]} for c in CHART_IDS],
        "cards": [],
        "best": None,
        "best_rows": [],
        "table": None,
    }
    figures: dict[str, dict[str, Any]] = {}
    if report is not None and context["gain"] and context["gain"]["has_chart"]:
        points = _gain.gain_points(report)
        figures["chart-gain"] = _chart(lambda: _gain.draw_gain(points or {}), "chart-gain")
    if not trials:
        return DashboardView(context, figures)

    counts = _data.state_counts(trials)
    best = _data.best_trial_summary(trials, direction)
    best_number = best["number"] if best else None
    context["best"] = best
    context["best_rows"] = _best_rows(best) if best else []
    context["cards"] = [
        (state.lower(), n)
        for state, n in counts.items()
        if n or state in ("COMPLETE", "PRUNED", "RUNNING", "FAIL")
    ]
    context["table"] = _trial_table(trials, direction, max_table_rows)

    # Built on first use inside a chart, so a failure there is that chart's message.
    light_study = functools.cache(lambda: _figures.light_study(trials, direction))
    n_complete = counts[TrialState.COMPLETE.name]
    # Optuna's parallel-coordinate plot only knows parameters of COMPLETE trials (a conditional
    # parameter sampled only by pruned trials would make it fail)
    complete_params = {name for t in trials if t.state == TrialState.COMPLETE for name in t.params}
    relax_searched = _data.relax_param_names(trials)
    relax_complete = [p for p in relax_searched if p in complete_params]
    parallel_params = relax_complete or [
        p for p in _data.param_names(trials) if p in complete_params
    ]
    common_params = _data.param_names(trials, in_every_complete_trial=True)
    importance_params = [
        p for p in common_params if p.startswith(_data.RELAX_PREFIX)
    ] or common_params
    sample = _figures.importance_subsample(trials, importance_max_trials)

    def history() -> go.Figure | str:
        if n_complete == 0:
            return "No trial has completed yet."
        return _figures.draw_optimization_history(light_study(), metric_name=metric)

    def parallel() -> go.Figure | str:
        if n_complete == 0:
            return "No trial has completed yet."
        if not parallel_params:
            return "This job searches no hyperparameters."
        return _figures.draw_parallel_coordinate(light_study(), parallel_params, metric_name=metric)

    def importance() -> go.Figure | str:
        if n_complete < 2:
            return f"Importances need at least 2 complete trials ({n_complete} so far)."
        if not importance_params:
            return "No hyperparameter is sampled in every complete trial."
        subset = _figures.light_study(trials, direction, only=sample)
        return _figures.draw_param_importances(subset, importance_params)

    importance_note = (
        f"Estimated on a seeded sample of {len(sample)} of {n_complete} complete trials."
        if len(sample) < n_complete
        else ""
    )
    if relax_complete and set(relax_complete) - set(importance_params):
        skipped = ", ".join(sorted(set(relax_complete) - set(importance_params)))
        importance_note += f" Conditional parameters left out: {skipped}."
    # Said only when it is true of the whole job, not merely of its complete trials so far.
    parallel_note = (
        "No relax.* parameter is searched: showing all."
        if n_complete and not relax_searched
        else ""
    )

    def theta() -> go.Figure | str:
        curves = _data.theta_schedules(trials, spec)
        drawn = {curve["number"] for curve in curves}
        # trials without a schedule to draw (adaptive: θ learned): what they reported
        curves += [c for c in _data.theta_curves(trials) if c["number"] not in drawn]
        return _figures.draw_theta(curves, best_number=best_number)

    curves = _data.learning_curves(trials)
    figures.update(
        {
            "chart-history": _chart(history, "chart-history"),
            "chart-curves": _chart(
                lambda: _figures.draw_learning_curves(
                    curves, best_number=best_number, metric_name=metric
                ),
                "chart-curves",
                "One colour per trial: projected model solid, relaxed dashed; running trials "
                "opaque, pruned and failed ones faint; the best trial bold.",
            ),
            "chart-theta": _chart(
                theta,
                "chart-theta",
                "θ at every training step, from each trial's schedule and hyperparameters.",
            ),
            "chart-equivariance": _chart(
                lambda: _figures.draw_equivariance(
                    _data.equivariance_curves(trials), best_number=best_number
                ),
                "chart-equivariance",
                "Log scale; relaxed dashed, projected solid; a measured 0 is drawn a decade "
                "below the smallest positive error.",
            ),
            "chart-parallel": _chart(parallel, "chart-parallel", parallel_note),
            "chart-importance": _chart(importance, "chart-importance", importance_note.strip()),
        }
    )
    strengths = _strengths.strength_curves(trials)
    if strengths or _strengths.may_be_adaptive(spec):  # the adaptive family's own chart
        after_theta = CHART_IDS.index("chart-theta") + 1
        context["charts"].insert(
            after_theta, {"id": _strengths.STRENGTHS_CHART_ID, "heading": _strengths.HEADING}
        )
        figures[_strengths.STRENGTHS_CHART_ID] = _chart(
            lambda: _strengths.draw_strengths(strengths, best_number=best_number)
            if strengths
            else "No trial of the adaptive family has reported an epoch yet.",
            _strengths.STRENGTHS_CHART_ID,
            _strengths.NOTE,
        )
    return DashboardView(context, figures)


def view_etag(*parts: Any) -> str:
    """A strong ETag over what a page's content depends on."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f'"{digest[:32]}"'


def render_dashboard(
    study: optuna.Study | _data.StudySnapshot,
    job: Mapping[str, Any],
    certificate: Mapping[str, Any] | None = None,
    *,
    max_table_rows: int = 50,
    importance_max_trials: int = 100,
    report: Mapping[str, Any] | None = None,
    page: PageOptions | None = None,
    live_url: str | None = None,
    live_interval_s: float = 5.0,
    etag: str | None = None,
    view: DashboardView | None = None,
) -> str:
    """One job's dashboard as an HTML page.

    ``job`` carries ``id``, ``name``, ``status``, ``spec`` (its ``objective.metric`` names the
    axes), ``progress``, ``error`` and its timestamps; ``certificate`` is the best trial's
    ``certificate.json``. ``max_table_rows`` caps the trial table (best first);
    ``importance_max_trials`` caps the COMPLETE trials fANOVA sees (a seeded sample).
    ``report`` is the job's gain report, drawn in the section ``gain-report`` once asked for.
    ``page`` says how the page is delivered (default: self-contained). With ``live_url``
    (a served page of a running job) the page asks that URL for changes every
    ``live_interval_s`` seconds, sending ``etag``, and updates in place.
    The charts' containers have the ids in :data:`CHART_IDS`.
    """
    started = time.perf_counter()
    options = page or PageOptions()
    if view is None:
        view = dashboard_view(
            study,
            job,
            certificate,
            max_table_rows=max_table_rows,
            importance_max_trials=importance_max_trials,
            report=report,
            interactive=not options.inline,
        )
    live = (
        {"url": live_url, "interval_s": live_interval_s, "etag": etag}
        if live_url and not view.context["job"]["finished"]
        else None
    )
    html = _render(
        "job.html",
        options,
        title=f"{view.context['job']['name']}: relaxtune",
        page="job",
        live=live is not None,
        data={"figures": view.figures, "live": live},
        **view.context,
    )
    logger.debug("dashboard for job %s: %.3f s", job.get("id"), time.perf_counter() - started)
    return html


# --- the job list -------------------------------------------------------------------------------


def _list_row(job: Mapping[str, Any], link_format: str) -> dict[str, Any]:
    job_id = str(job.get("id", ""))
    progress = Progress.read(job.get("progress"))
    best = job.get("best") if isinstance(job.get("best"), Mapping) else {}
    best_value = _data.finite_or_none((best or {}).get("value"))
    if best_value is None:
        best_value = progress.best_value
    return {
        "id": job_id,
        "href": link_format.format(id=quote(job_id, safe="")),
        "name": job.get("name") or f"job {job_id}",
        "status": job.get("status"),
        "finished": job.get("status") in _TERMINAL,
        "cancel_requested": bool(job.get("cancel_requested")),
        "error": job.get("error"),
        "progress": progress,
        "best_value": best_value,
        "metric": _metric_name(job) if job.get("spec") else None,
        "created_at": job.get("created_at"),
        "started_at": job.get("started_at"),
        "finished_at": job.get("finished_at"),
        "tenant": job.get("tenant"),
    }


def render_jobs_rows(
    jobs: Iterable[Mapping[str, Any]],
    *,
    link_format: str = DEFAULT_LINK_FORMAT,
    show_tenant: bool = False,
) -> str:
    """The job list's table alone (what the list page refreshes while jobs run)."""
    rows = [_list_row(j, link_format) for j in jobs]
    return _render("_jobs_rows.html", PageOptions(), jobs=rows, show_tenant=show_tenant)


def render_jobs_list(
    jobs: Iterable[Mapping[str, Any]],
    *,
    link_format: str = DEFAULT_LINK_FORMAT,
    title: str = "relaxtune jobs",
    show_tenant: bool = False,
    page: PageOptions | None = None,
) -> str:
    """A page listing ``jobs`` (dicts as ``Job.to_dict()``: ``id``, ``name``, ``status``,
    ``progress``, ``best``, ``error``, timestamps, ``tenant``), each linking to
    ``link_format.format(id=<url-quoted id>)``, with the spec submission form and, with
    ``show_tenant`` (an admin's list), a tenant column."""
    rows = [_list_row(j, link_format) for j in jobs]
    return _render(
        "jobs.html",
        page or PageOptions(),
        title=title,
        page="jobs",
        jobs=rows,
        show_tenant=show_tenant,
    )


def render_sign_in(
    *,
    next_path: str = "/v1/dashboard",
    error: str | None = None,
    hours: float = 12,
    form_token: str = "",
) -> str:
    """The sign-in page: one field for an API token (``form_token``: the form's one-time
    value, matched against a cookie when it is posted)."""
    return _render(
        "signin.html",
        PageOptions(inline=False),
        title="Sign in: relaxtune",
        page="signin",
        next_path=next_path,
        error=error,
        hours=f"{hours:g}",
        form_token=form_token,
    )


# --- the comparison -----------------------------------------------------------------------------


def compare_payload(data: Mapping[str, Any]) -> dict[str, Any]:
    """The comparison's figures as chart payloads (empty when the jobs cannot be compared)."""
    if data.get("problem"):
        return {}
    from service.dashboard import _compare

    return {
        "chart-compare-curves": _chart(
            lambda: (
                _compare.draw_compare_curves(data)
                if any(row["curve"] for row in data["jobs"])
                else "No job has a complete trial yet."
            ),
            "chart-compare-curves",
            "One colour per job: projected model solid, relaxed dashed.",
        ),
        "chart-compare-history": _chart(
            lambda: _compare.draw_compare_history(data), "chart-compare-history"
        ),
    }


def render_compare(
    data: Mapping[str, Any],
    *,
    page: PageOptions | None = None,
    link_format: str = DEFAULT_LINK_FORMAT,
) -> str:
    """The comparison page of :func:`service.dashboard.compare_jobs`' data."""
    jobs = [
        {**row, "href": link_format.format(id=quote(str(row["id"]), safe=""))}
        for row in data.get("jobs", [])
    ]
    baseline = next((row for row in jobs if row["id"] == data.get("baseline")), None)
    note = (
        f"vs baseline: the change of the best {data.get('metric')} relative to "
        f"{baseline['name']} (the baseline preset: θ = 0 throughout), positive when better."
        if baseline
        else "None of these jobs searched the baseline preset, so no improvement is given."
    )
    return _render(
        "compare.html",
        page or PageOptions(),
        title="Compare jobs: relaxtune",
        page="compare",
        problem=data.get("problem"),
        task=data.get("task"),
        metric=data.get("metric"),
        direction=data.get("direction"),
        jobs=jobs,
        param_keys=data.get("param_keys", []),
        baseline_note=None if data.get("problem") else note,
        data={"figures": compare_payload(data), "live": None},
    )
