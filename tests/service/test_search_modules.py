"""The search's modules import Ray, torch and the workers only when a search runs: importing
them (what the controller, the CLI and the API's neighbours do) loads none of it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sys

    import service.console, service.export, service.report, service.search
    import service.searcher, service.study

    banned = sorted(
        m for m in sys.modules if m.split(".")[0] in {"torch", "escnn", "ray", "workers"}
    )
    print(json.dumps(banned))
    """
)


def test_importing_the_search_loads_no_ray_torch_or_workers() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_one_name_per_stop_reason() -> None:
    """The re-queue sentinel is one constant, and the budget, the progress counts and the
    failure reason all read it."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from service.study import REQUEUED, STOP_REASON, failure_reason, progress_of, uses_budget

    study = optuna.create_study()
    requeued = create_trial(state=TrialState.FAIL, user_attrs={STOP_REASON: REQUEUED})
    failed = create_trial(state=TrialState.FAIL, user_attrs={STOP_REASON: "error: boom"})
    study.add_trials([requeued, failed])
    trials = study.get_trials()
    assert [uses_budget(t) for t in trials] == [False, True]
    assert progress_of(study, 4, "max")["failed"] == 1
    assert failure_reason(study) == "trial 1: boom"
