"""A gain report ends even when Tune leaves some runs unfinished: the driver gives the
unfinished runs one more Tune run, then records them as failed for good (no Ray here: the
Tune run is replaced by a stand-in that records what Tune would have)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from test_report import RELAXED, tiny

from search_spaces import parse_spec
from service import gain, report
from service.artifacts import study_name

SPEC = tiny(RELAXED)  # a relaxing best: its report has 2 arms × 2 seeds


def _searched_job(url: str) -> None:
    """A finished search whose best trial (#0) relaxes: its report has 2 arms × 2 seeds."""
    study = optuna.create_study(storage=url, study_name=study_name("j1"))
    study.add_trial(optuna.trial.create_trial(value=0.1))
    study.set_user_attr("best_trial", 0)


def _record(study: optuna.Study, run: gain.Run, source: int, outcome: str) -> None:
    ot = study.ask()
    ot.set_user_attr(gain.ATTR_ARM, run.arm)
    ot.set_user_attr(gain.ATTR_SEED, run.seed)
    ot.set_user_attr(gain.ATTR_SOURCE, source)
    if outcome == "complete":
        ot.set_user_attr(gain.ATTR_TEST, 0.5)
        ot.set_user_attr(gain.ATTR_VAL, 0.4)
        study.tell(ot.number, 0.4)
    else:  # what Tune's trial-error callback records
        ot.set_user_attr(gain.ATTR_STOP, "error: worker raised ValueError")
        study.tell(ot.number, None, state=optuna.trial.TrialState.FAIL)


def test_unfinished_runs_get_one_more_tune_run_then_fail_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    _searched_job(url)
    calls: list[list[tuple[str, int]]] = []

    def tune_run(spec: Any, job_id: str, todo: list[gain.Run], **kw: Any) -> None:
        calls.append([run.key for run in todo])
        if len(calls) == 1:  # the first run completes, the second errors, the rest never start
            _record(kw["study"], todo[0], kw["source_trial"], "complete")
            _record(kw["study"], todo[1], kw["source_trial"], "error")
        else:  # everything Tune starts now errors
            for run in todo[:-1]:
                _record(kw["study"], run, kw["source_trial"], "error")

    monkeypatch.setattr(report, "_train", tune_run)
    out = report.run_report(parse_spec(SPEC), "j1", url, tmp_path / "artifacts")
    first, second = calls  # exactly two Tune runs, the second over what the first left
    assert len(first) == 4 and second == first[1:]
    result = out["report"]
    assert out["status"] == result["status"] == "incomplete"
    reasons = {(f["arm"], f["seed"]): f["reason"] for f in result["failures"]}
    assert set(reasons) == set(first[1:])
    assert all(
        r.startswith("failed in 2 Tune runs: error:") for k, r in reasons.items() if k != first[-1]
    )
    assert reasons[first[-1]] == "never started: Tune ended 2 runs before it"
    assert result["verdict"]  # the report has an end and says so
    # a later driver (a resumed job) treats these as outcomes: nothing left to train
    calls.clear()
    again = report.run_report(parse_spec(SPEC), "j1", url, tmp_path / "artifacts")
    assert calls == [] and again["report"]["status"] == "incomplete"
