"""Self-contained HTML pages: one job's study dashboard and the list of jobs.

A page embeds plotly.js from the installed plotly package once, then every figure as a
``<div>`` plus its ``Plotly.newPlot`` call: the page opens offline (clusters often are) and
can be saved as one file (``relaxtune dashboard JOB --out FILE.html``). Every string that
comes from a user (job names, specs, parameter names, categorical values, paths) goes through
``html.escape``; figure data is JSON that plotly itself escapes.

A chart that cannot be drawn (no completed trial yet, importances on too few trials, an Optuna
error) becomes a message in its container, never an exception: the API serves this page while
the job runs.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import optuna
import plotly.graph_objects as go
import plotly.offline
from optuna.trial import TrialState

from service.dashboard import _data, _figures, _gain, _strengths

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

DEFAULT_LINK_FORMAT = "/v1/jobs/{id}/dashboard"

_PLOT_CONFIG: dict[str, Any] = {"responsive": True, "displaylogo": False}

# Job statuses get a CSS class only from this set, so a status string never reaches markup
# unescaped (and an unknown one still renders, neutrally).
_STATUS_CLASSES = {
    "queued": "queued",
    "pending": "queued",
    "running": "running",
    "succeeded": "ok",
    "completed": "ok",
    "complete": "ok",
    "done": "ok",
    "failed": "bad",
    "error": "bad",
    "cancelled": "muted",
    "canceled": "muted",
}

_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde2ea; --bg:#f5f7fa; --card:#fff;
        --ok:#1e7d45; --bad:#b42318; --run:#1f5fa8; --warn:#a15c00; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:var(--card); border-bottom:1px solid var(--line); padding:18px 28px; }
header h1 { margin:0 0 4px; font-size:22px; }
main { padding:20px 28px 40px; max-width:1600px; margin:0 auto; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
          padding:14px 18px; margin:0 0 18px; }
section h2 { margin:0 0 10px; font-size:17px; }
.meta { color:var(--muted); font-size:13px; }
.meta span { margin-right:16px; }
.job-error { color:var(--bad); margin:8px 0 0; font-size:14px; overflow-wrap:anywhere; }
td .job-error { font-size:12px; margin:2px 0 0; }
.badge { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12px;
         font-weight:600; border:1px solid currentColor; vertical-align:middle; }
.badge.ok { color:var(--ok); } .badge.bad { color:var(--bad); }
.badge.running { color:var(--run); } .badge.queued { color:var(--warn); }
.badge.muted, .badge.unknown { color:var(--muted); }
.progress { display:inline-block; width:180px; height:8px; background:var(--line);
            border-radius:4px; vertical-align:middle; overflow:hidden; margin-right:6px; }
.progress > div { height:100%; background:var(--run); }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin-bottom:18px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px;
        padding:10px 16px; min-width:120px; }
.card .n { font-size:22px; font-weight:600; } .card .l { color:var(--muted); font-size:12px; }
/* auto-fill keeps empty column tracks, so the first chart is sized for its final column
   while later sections are still being parsed. */
.grid { display:grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap:18px; }
.grid > section { margin:0; min-width:0; }
.chart-message { color:var(--muted); padding:24px 4px; margin:0; }
.note { color:var(--muted); font-size:13px; margin:6px 0 0; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:4px 10px 4px 0; border-bottom:1px solid var(--line);
         white-space:nowrap; }
th { color:var(--muted); font-weight:600; }
td.num { font-variant-numeric: tabular-nums; }
.scroll { overflow-x:auto; }
.pass { color:var(--ok); font-weight:600; } .fail { color:var(--bad); font-weight:600; }
pre { background:var(--bg); padding:10px; border-radius:6px; overflow-x:auto; font-size:12px; }
a { color:var(--run); }
"""


# Responsive plotly charts follow window resizes only; one resize after load fits any chart
# whose container changed size while the page was still being laid out.
_RESIZE_ON_LOAD = (
    "<script>window.addEventListener('load', function () "
    "{ window.dispatchEvent(new Event('resize')); });</script>"
)


@functools.lru_cache(maxsize=1)
def _plotly_js() -> str:
    # ~5 MB read from the installed package; the same for every page of this process.
    return plotly.offline.get_plotlyjs()


def warm_up() -> None:
    """Load now what the first page would otherwise load while a request waits.

    That is plotly.js (read from the installed package), Optuna's importance module, whose
    import pulls in scikit-learn (about a second), and plotly's lazily built figure classes
    (one page of a tiny study is rendered and thrown away). The API calls this once in a
    background thread at startup; pages render correctly without it.
    """
    _plotly_js()
    import optuna.importance  # noqa: F401

    # One page of a tiny study: plotly builds its figure and property validators lazily, on
    # first use, which otherwise lands in the first real page.
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.study import StudyDirection
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


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _error_html(job: Mapping[str, Any], limit: int | None = None) -> str:
    """Why the job failed (its ``error``, escaped), or nothing."""
    error = job.get("error")
    if not error:
        return ""
    text = str(error)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return f'<p class="job-error">error: {_esc(text)}</p>'


def _fmt(value: Any) -> str:
    """A table cell: numbers to 4 significant digits, missing as an em dash, all escaped."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return _esc(value)


def _status_badge(status: Any) -> str:
    text = "unknown" if status is None else str(status)
    css = _STATUS_CLASSES.get(text.lower(), "unknown")
    return f'<span class="badge {css}">{_esc(text)}</span>'


def progress_fraction(progress: Any) -> float | None:
    """Completed fraction in [0, 1] from a job's ``progress``, or ``None`` if it has none.

    Accepts a fraction, a percentage (numbers above 1), or a mapping with ``fraction`` or a
    done/total pair (``completed``/``done``/``finished``/``trials_completed`` over
    ``total``/``trials_total``/``budget``).
    """
    if isinstance(progress, Mapping):
        if "fraction" in progress:
            return progress_fraction(progress["fraction"])
        done = _first_number(progress, ("completed", "done", "finished", "trials_completed"))
        total = _first_number(progress, ("total", "trials_total", "budget"))
        if done is None or not total:
            return None
        return min(max(done / total, 0.0), 1.0)
    number = _data.finite_or_none(progress)
    if number is None:
        return None
    if number > 1.0:
        number /= 100.0
    return min(max(number, 0.0), 1.0)


def _first_number(mapping: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    for key in keys:
        number = _data.finite_or_none(mapping.get(key))
        if number is not None:
            return number
    return None


def _progress_html(progress: Any) -> str:
    fraction = progress_fraction(progress)
    detail = ""
    if isinstance(progress, Mapping):
        detail = ", ".join(f"{_esc(k)}: {_fmt(v)}" for k, v in progress.items())
    if fraction is None:
        return detail or ("—" if progress is None else _esc(progress))
    bar = f'<span class="progress"><div style="width:{fraction * 100:.1f}%"></div></span>'
    return f"{bar}{fraction * 100:.0f}%" + (f" ({detail})" if detail else "")


def _metric_name(job: Mapping[str, Any]) -> str:
    spec = job.get("spec")
    objective = spec.get("objective") if isinstance(spec, Mapping) else None
    metric = objective.get("metric") if isinstance(objective, Mapping) else None
    return str(metric) if metric else "objective"


def _figure_html(fig: go.Figure, chart_id: str) -> str:
    # The section heading names the chart; a second title inside the plot only costs space.
    fig.update_layout(title_text="", margin_t=24)
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"{chart_id}-plot",
        config=_PLOT_CONFIG,
        default_height=f"{_figures.FIGURE_HEIGHT}px",
        default_width="100%",
    )


def _chart_section(
    chart_id: str, heading: str, build: Callable[[], go.Figure | str], note: str = ""
) -> str:
    """A chart container: the figure ``build`` returns, or a message (a str it returns, or
    the error it raises).
    """
    try:
        result = build()
        body = (
            f'<p class="chart-message">{_esc(result)}</p>'
            if isinstance(result, str)
            else _figure_html(result, chart_id)
        )
    except Exception as error:  # any plotting failure degrades to a message, never a 500
        logger.warning("dashboard chart %s not drawn: %s", chart_id, error)
        body = f'<p class="chart-message">Not available: {_esc(error)}</p>'
    note_html = f'<p class="note">{_esc(note)}</p>' if note else ""
    return (
        f'<section id="{chart_id}" class="chart"><h2>{_esc(heading)}</h2>{body}{note_html}'
        "</section>"
    )


def _key_value_table(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in pairs)
    return f"<table>{rows}</table>"


def _best_section(best: dict[str, Any] | None) -> str:
    if best is None:
        return (
            '<section id="best-trial"><h2>Best trial</h2>'
            '<p class="chart-message">No trial has completed yet.</p></section>'
        )
    pairs: list[tuple[str, Any]] = [
        ("trial", best["number"]),
        (f"objective ({best['direction']}, projected)", best["value"]),
        ("validation, projected", best["val_projected"]),
        ("validation, relaxed", best["val_relaxed"]),
        ("equivariance error, projected", best["equivariance_error_projected"]),
        ("equivariance error, relaxed", best["equivariance_error_relaxed"]),
        ("final θ", best["final_theta"]),
        ("epochs", best["epochs"]),
        ("duration (s)", best["duration_seconds"]),
        ("checkpoint", best["checkpoint"]),
    ]
    params = _key_value_table(best["params"].items())
    return (
        '<section id="best-trial"><h2>Best trial</h2><div class="grid">'
        f"<div>{_key_value_table(pairs)}</div><div><h3>Hyperparameters</h3>{params}</div>"
        "</div></section>"
    )


def _certificate_section(certificate: Mapping[str, Any] | None) -> str:
    if certificate is None:
        return (
            '<section id="certificate"><h2>Equivariance certificate</h2>'
            '<p class="chart-message">No certificate yet: it is written when the best '
            "trial's checkpoint is exported.</p></section>"
        )
    table = _data.certificate_table(certificate)
    verdict = {True: '<span class="pass">passed</span>', False: '<span class="fail">failed</span>'}
    head = _key_value_table(
        [
            ("group", table["group"]),
            ("tolerance", table["tolerance"]),
            ("seed", table["seed"]),
            ("max error, projected", table["max_error_projected"]),
            ("max error, relaxed (before projection)", table["max_error_relaxed"]),
        ]
    )
    rows = "".join(
        "<tr>"
        f"<td>{_esc(r['element'])}</td>"
        f'<td class="num">{_fmt(r["error_projected"])}</td>'
        f'<td class="num">{_fmt(r["error_relaxed"])}</td>'
        f"<td>{verdict.get(r['within_tolerance'], '—')}</td>"
        "</tr>"
        for r in table["rows"]
    )
    elements = (
        '<div class="scroll"><table class="elements"><thead><tr><th>group element</th><th>error (projected)</th>'
        "<th>error (relaxed)</th><th>within tolerance</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
        if table["rows"]
        else '<p class="note">The certificate lists no group elements.</p>'
    )
    return (
        '<section id="certificate"><h2>Equivariance certificate: '
        f"{verdict.get(table['passed'], '<span>unknown</span>')}</h2>"
        f'<div class="grid"><div>{head}</div><div>{elements}</div></div></section>'
    )


def _gain_section(report: Mapping[str, Any] | None) -> str:
    """ "Did relaxation help?": the gain report's verdict, paired points and interval."""
    if report is None or report.get("status") in (None, "not_requested"):
        return ""
    progress = report.get("progress") or {}
    verdict = report.get("verdict") or (
        f"Report {report.get('status')}: {progress.get('done', 0)} of "
        f"{progress.get('total', '?')} runs done."
    )
    points = _gain.gain_points(report)
    chart = ""
    if points is not None:
        try:
            chart = _figure_html(_gain.draw_gain(points), "chart-gain")
        except Exception as error:  # a drawing failure is a message, never a 500
            logger.warning("dashboard gain chart not drawn: %s", error)
            chart = f'<p class="chart-message">Not available: {_esc(error)}</p>'
    arms = report.get("arms") or {}
    rows = "".join(
        f"<tr><th>{_esc(label)}</th>"
        + "".join(
            f'<td class="num">{_fmt((arms.get(arm) or {}).get(k))}</td>'
            for k in ("n", "mean", "median", "std")
        )
        + "</tr>"
        for arm, label in (("as_found", "as found"), ("relaxation_off", "relaxation off (θ = 0)"))
        if arm in arms
    )
    table = (
        "<table><thead><tr><th>arm</th><th>seeds</th><th>mean</th><th>median</th><th>std</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    difference = report.get("difference") or {}
    method = f'<p class="note">{_esc(difference["method"])}.</p>' if difference else ""
    note = (
        f'<p class="note">{_esc(report.get("quantity"))} of the projected model, best trial '
        f"#{_fmt(report.get('source_trial'))} retrained on seeds {_esc(report.get('seeds'))} "
        f"(search seed {_fmt(report.get('search_seed'))}), as found and with the relaxation "
        "off (every other hyperparameter the same).</p>"
    )
    return (
        '<section id="gain-report"><h2>Did relaxation help?</h2>'
        f'<p class="verdict"><strong>{_esc(verdict)}</strong></p>{chart}'
        f"{table}{method}{note}</section>"
    )


def _parameter_section(table: dict[str, Any]) -> str:
    columns = table["columns"]
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_fmt(row[c])}</td>' for c in columns) + "</tr>"
        for row in table["rows"]
    )
    shown = len(table["rows"])
    note = (
        f'<p class="note">Showing the best {shown} of {table["total"]} trials.</p>'
        if shown < table["total"]
        else ""
    )
    return (
        '<section id="trials"><h2>Trials (best first)</h2><div class="scroll"><table>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{note}</section>"
    )


def _spec_section(job: Mapping[str, Any]) -> str:
    spec = job.get("spec")
    if spec is None:
        return ""
    text = json.dumps(spec, indent=2, sort_keys=True, default=str)
    return (
        '<section id="spec"><details><summary>Job spec</summary>'
        f"<pre>{_esc(text)}</pre></details></section>"
    )


def _page(title: str, body: str, *, with_plotly: bool, refresh_seconds: int | None) -> str:
    refresh = (
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">' if refresh_seconds else ""
    )
    script = f'<script type="text/javascript">{_plotly_js()}</script>' if with_plotly else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>{_esc(title)}</title><style>{_CSS}</style>{script}</head>"
        f"<body>{body}{_RESIZE_ON_LOAD if with_plotly else ''}</body></html>\n"
    )


def render_dashboard(
    study: optuna.Study | _data.StudySnapshot,
    job: Mapping[str, Any],
    certificate: Mapping[str, Any] | None = None,
    *,
    max_table_rows: int = 50,
    importance_max_trials: int = 100,
    refresh_seconds: int | None = None,
    jobs_link: str | None = None,
    report: Mapping[str, Any] | None = None,
) -> str:
    """One job's dashboard as a self-contained HTML page.

    ``job`` carries ``id``, ``name``, ``status``, ``spec`` (its ``objective.metric`` names the
    axes) and ``progress``; ``certificate`` is the best trial's ``certificate.json``.
    ``max_table_rows`` caps the trial table (best first); ``importance_max_trials`` caps the
    COMPLETE trials fANOVA sees (a seeded sample). ``refresh_seconds`` makes the browser
    reload the page; ``jobs_link``, if given, is the href of a link back to the job list.
    ``report`` is the job's gain report (``GET /v1/jobs/{id}/report``), drawn in the section
    ``gain-report`` once asked for.
    The charts' containers have the ids in :data:`CHART_IDS`.
    """
    started = time.perf_counter()
    trials = _data.trials_of(study)
    # relaxtune studies have one objective; ``directions[0]`` keeps a page for any other
    # study instead of raising where ``study.direction`` would.
    direction = study.directions[0]
    metric = _metric_name(job)
    name = job.get("name") or f"job {job.get('id', '')}"

    counts = _data.state_counts(trials)
    header = (
        f"<header><h1>{_esc(name)} {_status_badge(job.get('status'))}</h1>"
        '<div class="meta">'
        f"<span>job <code>{_esc(job.get('id', '—'))}</code></span>"
        f"<span>progress {_progress_html(job.get('progress'))}</span>"
        f"<span>objective {_esc(metric)} ({_esc(direction.name.lower())}, projected model)</span>"
        + (f'<span><a href="{_esc(jobs_link)}">all jobs</a></span>' if jobs_link else "")
        + "</div>"
        + _error_html(job)
        + "</header>"
    )

    if not trials:
        body = (
            f'{header}<main><section id="no-trials"><h2>No trials yet</h2>'
            '<p class="chart-message">This job has not started any trial. The page shows the '
            "study once the first trial reports.</p></section>"
            f"{_certificate_section(certificate)}{_spec_section(job)}</main>"
        )
        return _page(f"{name}: relaxtune", body, with_plotly=False, refresh_seconds=refresh_seconds)

    best = _data.best_trial_summary(trials, direction)
    best_number = best["number"] if best else None
    cards = "".join(
        f'<div class="card"><div class="n">{n}</div><div class="l">{_esc(state.lower())}</div>'
        "</div>"
        for state, n in counts.items()
        if n or state in ("COMPLETE", "PRUNED", "RUNNING", "FAIL")
    )
    best_card = (
        f'<div class="card"><div class="n">{_fmt(best["value"])}</div>'
        f'<div class="l">best {_esc(metric)} (trial {best["number"]})</div></div>'
        if best
        else ""
    )

    # Built on first use inside a chart, so a failure there is that chart's message.
    light_study = functools.cache(lambda: _figures.light_study(trials, direction))
    n_complete = counts[TrialState.COMPLETE.name]
    # Optuna's parallel-coordinate plot only knows parameters of COMPLETE trials (a conditional
    # parameter sampled only by pruned trials would make it fail)
    complete_params = {name for t in trials if t.state == TrialState.COMPLETE for name in t.params}
    relax_all = [p for p in _data.relax_param_names(trials) if p in complete_params]
    parallel_params = relax_all or [p for p in _data.param_names(trials) if p in complete_params]
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
    if relax_all and set(relax_all) - set(importance_params):
        skipped = ", ".join(sorted(set(relax_all) - set(importance_params)))
        importance_note += f" Conditional parameters left out: {skipped}."
    parallel_note = "" if relax_all else "No relax.* parameter is searched: showing all."

    curves = _data.learning_curves(trials)
    charts = [
        _chart_section("chart-history", "Optimization history", history),
        _chart_section(
            "chart-curves",
            "Learning curves",
            lambda: _figures.draw_learning_curves(
                curves, best_number=best_number, metric_name=metric
            ),
            "Solid: complete, dotted: pruned, dashed: running, dash-dot: failed. "
            "Bold: the best trial.",
        ),
        _chart_section(
            "chart-theta",
            "Relaxation strength θ",
            lambda: _figures.draw_theta(_data.theta_curves(trials), best_number=best_number),
        ),
        _strengths.strengths_section(trials, best_number, _chart_section),  # adaptive only
        _chart_section(
            "chart-equivariance",
            "Equivariance error",
            lambda: _figures.draw_equivariance(
                _data.equivariance_curves(trials), best_number=best_number
            ),
            "Log scale; a measured 0 is drawn a decade below the smallest positive error.",
        ),
        _chart_section("chart-parallel", "Parallel coordinates", parallel, parallel_note),
        _chart_section(
            "chart-importance", "Hyperparameter importances", importance, importance_note.strip()
        ),
    ]

    table = _data.parameter_table(trials, direction, limit=max_table_rows)
    body = (
        f"{header}<main>"
        f'<div class="cards">{best_card}{cards}</div>'
        f"{_best_section(best)}{_gain_section(report)}{_certificate_section(certificate)}"
        f'<div class="grid">{"".join(charts)}</div><div style="height:18px"></div>'
        f"{_parameter_section(table)}{_spec_section(job)}</main>"
    )
    page = _page(f"{name}: relaxtune", body, with_plotly=True, refresh_seconds=refresh_seconds)
    logger.debug(
        "dashboard for job %s: %d trials in %.3f s",
        job.get("id"),
        len(trials),
        time.perf_counter() - started,
    )
    return page


def render_jobs_list(
    jobs: Iterable[Mapping[str, Any]],
    *,
    link_format: str = DEFAULT_LINK_FORMAT,
    link_suffix: str = "",
    title: str = "relaxtune jobs",
    refresh_seconds: int | None = None,
) -> str:
    """A page listing ``jobs`` (dicts with ``id``, ``name``, ``status``, ``progress`` and
    optionally ``created_at``), each linking to its dashboard.

    The link is ``link_format.format(id=<url-quoted id>) + link_suffix``: the router passes
    e.g. ``link_suffix="?token=..."`` when the page was opened with a token in the query.
    """
    rows = []
    for job in jobs:
        job_id = job.get("id", "")
        href = link_format.format(id=quote(str(job_id), safe="")) + link_suffix
        name = job.get("name") or f"job {job_id}"
        rows.append(
            "<tr>"
            f'<td><a href="{_esc(href)}">{_esc(name)}</a></td>'
            f"<td><code>{_esc(job_id)}</code></td>"
            f"<td>{_status_badge(job.get('status'))}{_error_html(job, limit=200)}</td>"
            f"<td>{_progress_html(job.get('progress'))}</td>"
            f"<td>{_fmt(job.get('created_at'))}</td>"
            "</tr>"
        )
    table = (
        "<table><thead><tr><th>name</th><th>id</th><th>status</th><th>progress</th>"
        f"<th>created</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if rows
        else '<p class="chart-message">No jobs yet.</p>'
    )
    body = (
        f"<header><h1>{_esc(title)}</h1></header>"
        f'<main><section id="jobs"><div class="scroll">{table}</div></section></main>'
    )
    return _page(title, body, with_plotly=False, refresh_seconds=refresh_seconds)
