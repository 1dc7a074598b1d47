"""Reading a job's gain report in the API process, and checking a report's seed count."""

from __future__ import annotations

from typing import Any

from service._json import json_safe
from service.api._trials_sql import read_study_snapshot
from service.artifacts import report_study_name
from service.errors import LimitExceeded
from service.gain import build_report
from service.settings import Settings
from service.store import Job, JobStore

__all__ = ["check_report_seeds", "read_job_report"]


def read_job_report(store: JobStore, job: Job) -> dict[str, Any]:
    """The job's gain report from its report study (plain SQL, like the trials endpoint)."""
    snapshot = read_study_snapshot(store, report_study_name(job.id))
    spec = job.spec
    objective = spec.get("objective") or {}
    requested = (spec.get("report") or {}).get("seeds")
    source = (job.best or {}).get("trial")
    return json_safe(
        build_report(
            snapshot.trials if snapshot is not None else [],
            job_id=job.id,
            metric=str(objective.get("metric", "val_metric")).removeprefix("val_"),
            mode=str(objective.get("mode", "max")),
            requested_seeds=requested if isinstance(requested, int) else None,
            search_seed=int(spec.get("seed", 0)),
            source_trial=source if isinstance(source, int) else None,
        )
    )


def check_report_seeds(seeds: Any, settings: Settings, field: str) -> int:
    """A report's seed count: an integer in the spec's bounds whose 2·seeds runs fit in the
    per-job trial limit (``RELAXTUNE_MAX_TRIALS``). Raises :class:`LimitExceeded` naming
    ``field``."""
    from search_spaces import MAX_REPORT_SEEDS, MIN_REPORT_SEEDS

    if isinstance(seeds, bool) or not isinstance(seeds, int):
        raise LimitExceeded(f"seeds must be an integer, got {seeds!r}", field=field)
    if not MIN_REPORT_SEEDS <= seeds <= MAX_REPORT_SEEDS:
        raise LimitExceeded(
            f"seeds must lie in [{MIN_REPORT_SEEDS}, {MAX_REPORT_SEEDS}], got {seeds}",
            field=field,
        )
    if 2 * seeds > settings.max_trials:
        raise LimitExceeded(
            f"a report on {seeds} seeds trains {2 * seeds} models; this service allows at "
            f"most {settings.max_trials} trials per job",
            field=field,
        )
    return seeds
