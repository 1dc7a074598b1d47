"""A gain report interrupted twice: its ``relaxtune controller`` SIGKILLed mid-report, then,
after a restart, the job cancelled mid-report, then the report asked for again. Runs that had
finished are kept as they were, interrupted runs continue from their last epoch state, the
search is neither redone nor re-exported, and the report ends complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from _reliability_support import kill_group, relaxtune_args, start_process, tiny_spec, wait_for
from optuna.trial import TrialState

from search_spaces import parse_spec
from service.artifacts import report_study_name
from service.store import JobStore

pytestmark = pytest.mark.slow


def _report_trials(db: str, job_id: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=report_study_name(job_id), storage=db)
    except KeyError:
        return []
    return study.get_trials()


def _key(trial: optuna.trial.FrozenTrial) -> tuple[str, int]:
    return trial.user_attrs["report_arm"], trial.user_attrs["report_seed"]


def test_report_survives_a_controller_kill_and_a_cancel(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    artifacts = tmp_path / "art"
    store = JobStore(db)
    store.upgrade()
    # runs of several seconds (4 of them, one at a time), so each interruption lands mid-run
    spec = tiny_spec(
        name="report-faults",
        search_space={"optim.lr": 1e-3, "relax.schedule": "triangular", "relax.theta_max": 0.5},
        budget={"trials": 1, "epochs": 8, "max_concurrent": 1},
        data={"train_size": 400, "val_size": 50, "test_size": 50},
        report={"seeds": 2},
    )
    job = store.create_job("alice", parse_spec(spec).to_dict(), spec["name"])
    argv = ["controller", "--db", db, "--artifacts", str(artifacts), "--worker-id", "ctl-r"]
    argv += ["--poll", "0.2", "--log-level", "warning"]
    log = tmp_path / "controller.log"

    def complete_and_running(at_least: int) -> Any:
        trials = _report_trials(db, job.id)
        complete = {_key(t): t for t in trials if t.state == TrialState.COMPLETE}
        running = [
            t
            for t in trials
            if t.state == TrialState.RUNNING
            and "run_dir" in t.user_attrs  # (attributes are written one by one)
            and (Path(t.user_attrs["run_dir"]) / "state" / "state.pt").is_file()
        ]
        return (complete, running) if len(complete) >= at_least and running else None

    proc = start_process(relaxtune_args(*argv), log)
    try:
        before, killed = wait_for(
            lambda: _alive(proc, log) and complete_and_running(1),
            420,
            "a finished report run and one running with a saved epoch",
            period=0.1,
        )
    finally:
        kill_group(proc)  # SIGKILL: the controller and its Ray, mid-report
    assert store.get_job(job.id).status == "running"
    # a run is recorded when it starts: the killed one is the only one left RUNNING
    left = [t.number for t in _report_trials(db, job.id) if t.state == TrialState.RUNNING]
    assert left == [t.number for t in killed]

    proc = start_process(relaxtune_args(*argv), log)  # restarts, resumes the report
    try:
        wait_for(
            lambda: _alive(proc, log) and complete_and_running(len(before) + 1),
            420,
            "one more finished run after the restart",
            period=0.1,
        )
        store.request_cancel(job.id)
        wait_for(lambda: store.get_job(job.id).status == "cancelled", 120, "the cancel")
        reasons = [t.user_attrs.get("stop_reason") for t in _report_trials(db, job.id)]
        assert "job cancelled" in reasons and "driver stopped; run again" in reasons
        assert store.get_job(job.id).best is not None  # the search's best is kept

        store.request_report(job.id, 2)  # ask again: the report resumes
        wait_for(lambda: store.get_job(job.id).status == "succeeded", 420, "the resumed report")
    finally:
        kill_group(proc)
    trials = _report_trials(db, job.id)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(_key(t) for t in complete) == sorted(
        (arm, seed) for arm in ("as_found", "relaxation_off") for seed in (1000, 1001)
    )
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    by_key = {_key(t): t for t in complete}
    for key, trial in before.items():  # finished before the kill: kept as they were
        assert by_key[key].number == trial.number
        assert by_key[key].user_attrs["test_value"] == trial.user_attrs["test_value"]
    for trial in killed:  # the killed run continued from its saved epoch, not from scratch
        redo = by_key[_key(trial)]
        assert redo.number != trial.number
        epochs = [h["epoch"] for h in redo.user_attrs.get("history", [])]
        assert not epochs or min(epochs) >= 2, epochs
    row = store.get_job(job.id)
    assert row.spec["report"] == {"seeds": 2}
    search = optuna.load_study(study_name=f"job-{job.id}", storage=db)
    assert len(search.get_trials()) == 1  # the search was not run again
    exported = [p for p in (artifacts / "optuna").rglob("*") if p.is_file()]
    assert len(exported) == 1, exported  # nor its best re-exported
    metrics = json.loads((artifacts / "jobs" / job.id / "best" / "metrics.json").read_text())
    assert metrics["gain"]["status"] == "complete" and metrics["gain"]["difference"]
    store.close()


def _alive(proc: Any, log: Path) -> bool:
    assert proc.poll() is None, log.read_text()[-3000:]
    return True
