"""Job dashboards: plain-data views of a job's Optuna study and their plotly drawings.

Plots come in pairs, one function computing plain data (``learning_curves``) and one drawing
it (``draw_learning_curves``); the page functions assemble them into Jinja2 pages whose
static files (plotly.js, stylesheet, scripts) are served from ``/static`` or, for a page saved
as a file, inlined. Nothing here imports torch, escnn or ray: the API process serves these pages.
"""

from service.dashboard._compare import (
    ComparedJob,
    compare_jobs,
    draw_compare_curves,
    draw_compare_history,
)
from service.dashboard._data import (
    StudySnapshot,
    best_trial_summary,
    certificate_table,
    epoch_records,
    equivariance_curves,
    fixed_hparams,
    learning_curves,
    param_names,
    parameter_table,
    relax_param_names,
    state_counts,
    stop_reason,
    theta_curves,
    theta_schedules,
)
from service.dashboard._figures import (
    draw_equivariance,
    draw_learning_curves,
    draw_optimization_history,
    draw_parallel_coordinate,
    draw_param_importances,
    draw_theta,
)
from service.dashboard._gain import draw_gain, gain_points
from service.dashboard._page import (
    CHART_IDS,
    DEFAULT_LINK_FORMAT,
    FRAGMENT_IDS,
    DashboardView,
    PageOptions,
    compare_payload,
    dashboard_view,
    human_time,
    progress_fraction,
    render_compare,
    render_dashboard,
    render_jobs_list,
    render_jobs_rows,
    render_sign_in,
    view_etag,
    warm_up,
)
from service.dashboard._strengths import STRENGTHS_CHART_ID, draw_strengths, strength_curves

__all__ = [
    "StudySnapshot",
    "STRENGTHS_CHART_ID",
    "CHART_IDS",
    "DEFAULT_LINK_FORMAT",
    "FRAGMENT_IDS",
    "ComparedJob",
    "DashboardView",
    "PageOptions",
    "compare_jobs",
    "compare_payload",
    "dashboard_view",
    "draw_compare_curves",
    "draw_compare_history",
    "fixed_hparams",
    "human_time",
    "render_compare",
    "render_jobs_rows",
    "render_sign_in",
    "stop_reason",
    "theta_schedules",
    "view_etag",
    "best_trial_summary",
    "certificate_table",
    "draw_equivariance",
    "draw_gain",
    "draw_learning_curves",
    "draw_optimization_history",
    "draw_parallel_coordinate",
    "draw_param_importances",
    "draw_strengths",
    "draw_theta",
    "epoch_records",
    "equivariance_curves",
    "gain_points",
    "learning_curves",
    "param_names",
    "parameter_table",
    "progress_fraction",
    "relax_param_names",
    "render_dashboard",
    "render_jobs_list",
    "state_counts",
    "strength_curves",
    "theta_curves",
    "warm_up",
]
