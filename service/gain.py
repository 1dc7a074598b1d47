"""The relaxation gain report as data: its plan (arms × seeds), where its runs are recorded,
and the report assembled from those records. No torch, escnn or Ray: the API, the CLI, the
dashboard and the report driver (``service/report.py``) share it.

A report retrains the job's best configuration (the exported best trial) on ``k`` fixed
seeds, twice per seed: **as found** and with the **relaxation off** (the same hyperparameters
with ``relax.schedule: none``, :func:`search_spaces.relaxation_off`). Each run is one trial of
the Optuna study ``job-<id>-report`` in the job's database, tagged with the user attributes
``report_arm`` and ``report_seed``; its projected model's test metric (measured once, when
its checkpoint folder is written) is the attribute ``test_value``. Keeping the runs in their
own study leaves the search's study, its best trial and its budget untouched, and the study
is the record a restarted driver resumes from.

A best configuration that does not relax has nothing to compare: only its as-found arm is
trained (its seed spread is still worth knowing), and the verdict says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces import is_relaxing, relaxation_off
from service import _gain_stats
from service._json import finite_or_none
from service.study import CANCELLED

AS_FOUND = "as_found"
RELAXATION_OFF = "relaxation_off"
ARMS: tuple[str, ...] = (AS_FOUND, RELAXATION_OFF)

#: The first report seed; a job's report seeds are the first ``k`` integers from here that
#: differ from the search seed, the same for every job (reports of two jobs are comparable).
FIRST_REPORT_SEED = 1000

#: Why a run stopped that a later driver run must redo (anything else, e.g. a diverged loss,
#: is the run's outcome and stays).
#: ``stop_reason`` of a run a dead driver left running, and of one Tune ended short otherwise
#: (a run a cancel stopped has ``service.study.CANCELLED``): each is redone
RUN_AGAIN = "driver stopped; run again"
STOPPED_SHORT = "stopped before its end"
INTERRUPTED_REASONS = ("driver stopped", CANCELLED, STOPPED_SHORT, "error")

# user attributes of a report run
ATTR_ARM = "report_arm"
ATTR_SEED = "report_seed"
ATTR_SOURCE = "source_trial"
ATTR_HPARAMS = "hparams"
ATTR_TEST = "test_value"
ATTR_VAL = "val_value"
ATTR_STOP = "stop_reason"
ATTR_DIR = "run_dir"


def report_seeds(k: int, search_seed: int) -> list[int]:
    """The ``k`` fixed report seeds: from :data:`FIRST_REPORT_SEED` up, never the search seed."""
    seeds: list[int] = []
    candidate = FIRST_REPORT_SEED
    while len(seeds) < k:
        if candidate != search_seed:
            seeds.append(candidate)
        candidate += 1
    return seeds


@dataclass(frozen=True)
class Run:
    """One planned report run: an arm of the best configuration on one seed."""

    arm: str
    seed: int
    hparams: dict[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        return (self.arm, self.seed)

    @property
    def folder(self) -> str:
        """Folder name under ``<artifacts>/jobs/<id>/report/`` (state and checkpoint)."""
        return f"{self.arm}-seed{self.seed}"


def plan(hparams: Mapping[str, Any], k: int, search_seed: int) -> list[Run]:
    """The runs of a report on ``k`` seeds: both arms per seed (seed-major), or only the
    as-found arm when the configuration does not relax."""
    arms = ARMS if is_relaxing(hparams) else (AS_FOUND,)
    off = relaxation_off(hparams)
    return [
        Run(arm, seed, dict(hparams) if arm == AS_FOUND else dict(off))
        for seed in report_seeds(k, search_seed)
        for arm in arms
    ]


@dataclass(frozen=True)
class Quantity:
    """What the report compares: the test metric, or the test error ``1 − accuracy``."""

    metric: str
    label: str
    better: _gain_stats.Better

    def of(self, test_metric: float) -> float:
        return 1.0 - test_metric if self.metric == "accuracy" else test_metric


_ACRONYMS = frozenset({"mse", "mae", "rmse", "nll"})


def quantity_for(metric: str, mode: str) -> Quantity:
    """Accuracy is reported as test error (lower is better); other metrics as they are, in
    their objective's direction (MSE: lower is better)."""
    if metric == "accuracy":
        return Quantity(metric, "test error", "lower")
    name = metric.upper() if metric in _ACRONYMS else metric
    return Quantity(metric, f"test {name}", "lower" if mode == "min" else "higher")


def is_interrupted(reason: Any) -> bool:
    """Whether a FAIL run's ``stop_reason`` means "not finished" (redo) rather than an outcome."""
    return isinstance(reason, str) and reason.startswith(INTERRUPTED_REASONS)


def _state_name(trial: Any) -> str:
    state = getattr(trial, "state", None)
    return getattr(state, "name", str(state))


def build_report(
    trials: Iterable[Any],
    *,
    job_id: str,
    metric: str,
    mode: str,
    requested_seeds: int | None,
    search_seed: int,
    source_trial: int | None = None,
) -> dict[str, Any]:
    """The report of a job from its report study's trials (``FrozenTrial``-like objects with
    ``state``, ``number`` and ``user_attrs``), as the JSON ``GET /v1/jobs/{id}/report`` returns.

    ``requested_seeds`` is the spec's ``report.seeds`` (``None``: no report asked for).
    ``source_trial`` picks the runs of that best trial (default: the latest one recorded).
    ``status`` is ``not_requested``, ``pending`` (asked for, no run recorded yet),
    ``running`` (some runs missing or running), ``incomplete`` (every run ended but some failed,
    so fewer than 2 pairs, or an arm is missing), ``complete`` or ``nothing_to_compare``.
    """
    quantity = quantity_for(metric, mode)
    runs = [t for t in trials if t.user_attrs.get(ATTR_ARM) in ARMS]
    if source_trial is None and runs:
        source_trial = max(int(t.user_attrs.get(ATTR_SOURCE, -1)) for t in runs)
    runs = [t for t in runs if t.user_attrs.get(ATTR_SOURCE) == source_trial]
    seeds = report_seeds(requested_seeds, search_seed) if requested_seeds else []
    out: dict[str, Any] = {
        "job_id": job_id,
        "status": "not_requested" if not requested_seeds else "pending",
        "requested_seeds": requested_seeds,
        "seeds": seeds,
        "search_seed": search_seed,
        "source_trial": source_trial,
        "metric": metric,
        "quantity": quantity.label,
        "better": quantity.better,
        "hparams": None,
        "relaxing": None,
        "runs": [],
        "arms": {},
        "difference": None,
        "verdict": None,
        "failures": [],
        "progress": {"done": 0, "running": 0, "failed": 0, "total": 0},
    }
    if not requested_seeds:
        return out
    # latest record per (arm, seed): a run redone after an interruption supersedes its FAIL
    latest: dict[tuple[str, int], Any] = {}
    for trial in sorted(runs, key=lambda t: t.number):
        latest[(trial.user_attrs[ATTR_ARM], int(trial.user_attrs.get(ATTR_SEED, -1)))] = trial
    hparams = next(
        (t.user_attrs.get(ATTR_HPARAMS) for t in runs if t.user_attrs[ATTR_ARM] == AS_FOUND),
        None,
    )
    relaxing = is_relaxing(hparams) if isinstance(hparams, Mapping) else None
    out["hparams"], out["relaxing"] = hparams, relaxing
    arms = ARMS if relaxing is not False else (AS_FOUND,)
    values: dict[str, dict[int, float]] = {arm: {} for arm in arms}
    progress = {"done": 0, "running": 0, "failed": 0, "total": len(seeds) * len(arms)}
    for seed in seeds:
        for arm in arms:
            trial = latest.get((arm, seed))
            if trial is None:
                continue
            state = _state_name(trial)
            test = finite_or_none(trial.user_attrs.get(ATTR_TEST))
            if state == "COMPLETE" and test is not None:
                values[arm][seed] = quantity.of(test)
                progress["done"] += 1
            elif state in ("RUNNING", "WAITING"):
                progress["running"] += 1
            elif state == "FAIL":
                reason = trial.user_attrs.get(ATTR_STOP) or "failed"
                if not is_interrupted(reason):
                    progress["failed"] += 1
                    out["failures"].append({"arm": arm, "seed": seed, "reason": str(reason)})
    out["progress"] = progress
    for seed in seeds:
        row: dict[str, Any] = {"seed": seed}
        for arm in ARMS:
            row[arm] = values.get(arm, {}).get(seed)
        both = row[AS_FOUND] is not None and row[RELAXATION_OFF] is not None
        row["difference"] = row[AS_FOUND] - row[RELAXATION_OFF] if both else None
        out["runs"].append(row)
    for arm in arms:
        summary = _gain_stats.summarize([values[arm][s] for s in seeds if s in values[arm]])
        out["arms"][arm] = summary.as_dict()
    settled = progress["done"] + progress["failed"] == progress["total"]
    if not runs:
        return out  # pending
    if relaxing is False:
        out["status"] = "nothing_to_compare" if settled else "running"
        spread = out["arms"][AS_FOUND]
        if spread["n"]:
            shown = f"{spread['mean']:.4g}"
            if spread["std"] is not None:
                shown += f" ± {spread['std']:.2g}"
            out["verdict"] = (
                "nothing to compare: the best configuration trains without relaxation "
                f"(relax.schedule: none); as found, {quantity.label} {shown} over "
                f"{spread['n']} seeds"
            )
        else:
            out["verdict"] = (
                "nothing to compare: the best configuration trains without relaxation "
                "(relax.schedule: none)"
            )
        return out
    pairs = [r for r in out["runs"] if r["difference"] is not None]
    if not settled:
        out["status"] = "running"
        return out
    if len(pairs) < 2:
        out["status"] = "incomplete"
        out["verdict"] = (
            f"no verdict: {len(pairs)} complete pair(s) of {len(seeds)} seeds "
            f"({len(out['failures'])} run(s) failed)"
        )
        return out
    difference = _gain_stats.paired_difference(
        [r[AS_FOUND] for r in pairs], [r[RELAXATION_OFF] for r in pairs], quantity.better
    )
    out["difference"] = difference.as_dict()
    out["verdict"] = _gain_stats.verdict(difference, quantity.better, quantity.label)
    out["status"] = "complete" if len(pairs) == len(seeds) else "incomplete"
    if out["status"] == "incomplete":
        out["verdict"] += f" [{len(seeds) - len(pairs)} seed(s) without a pair: see failures]"
    return out


def gain_for_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    """The figures that travel with the model in the best checkpoint's ``metrics.json``."""
    keys = ("status", "verdict", "quantity", "better", "seeds", "search_seed", "source_trial")
    out = {k: report.get(k) for k in keys}
    out.update(
        runs=list(report.get("runs") or []),
        arms=dict(report.get("arms") or {}),
        difference=report.get("difference"),
    )
    return out


def search_done_before(job: Any, artifacts: Path) -> dict[str, Any] | None:
    """The search's result when a previous run of ``job`` already finished its search and
    exported the best trial (the job succeeded before and came back for a report, or it was
    interrupted during its report), so that only the report is left to run; else ``None``.

    Read from the job row and ``<artifacts>/jobs/<id>/best.json`` (written by the export).
    """
    if job.best is None and "report" not in (job.progress or {}):
        return None
    try:
        best = json.loads((Path(artifacts) / "jobs" / job.id / "best.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(best, dict):
        return None
    return {"status": "succeeded", "best": best, "progress": dict(job.progress or {})}
