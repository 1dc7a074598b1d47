"""A ``relaxtune controller`` process SIGKILLed mid-job (with the local Ray it started), then
restarted under the same worker id: the job resumes from its Optuna study, every trial that
had finished is kept as it was, no trial stays RUNNING, and the best checkpoint is exported
exactly once (one artifact in the Optuna artifact store)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import optuna
import pytest
from _reliability_support import (
    kill_group,
    relaxtune_args,
    start_process,
    tiny_spec,
    wait_for,
)
from optuna.trial import TrialState

from search_spaces import parse_spec
from service.artifacts import study_name
from service.store import JobStore

pytestmark = pytest.mark.slow


def test_controller_sigkill_mid_job_then_restart_resumes_the_job(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    artifacts = tmp_path / "art"
    store = JobStore(db)
    store.upgrade()
    # trials of several seconds, so the kill reliably lands while the second one runs
    spec = tiny_spec(
        name="ctl-kill",
        budget={"trials": 2, "epochs": 12, "max_concurrent": 1},
        data={"train_size": 400, "val_size": 50, "test_size": 50},
    )
    job = store.create_job("alice", parse_spec(spec).to_dict(), spec["name"])
    controller_argv = ["controller", "--db", db, "--artifacts", str(artifacts)]
    controller_argv += ["--worker-id", "ctl-1", "--poll", "0.2", "--log-level", "warning"]
    log = tmp_path / "controller.log"
    proc = start_process(relaxtune_args(*controller_argv), log)
    finished_before: dict[int, float] = {}
    try:

        def one_done_one_running() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                study = optuna.load_study(study_name=study_name(job.id), storage=db)
            except KeyError:
                return False
            trials = study.get_trials()
            finished_before.clear()
            finished_before.update(
                {t.number: t.value for t in trials if t.state == TrialState.COMPLETE}
            )
            return bool(finished_before) and any(t.state == TrialState.RUNNING for t in trials)

        wait_for(one_done_one_running, 180, "one finished and one running trial", period=0.1)
    finally:
        kill_group(proc)  # SIGKILL: the controller and its Ray, no cleanup
    killed_at = time.time()
    row = store.get_job(job.id)
    assert row.status == "running" and row.claimed_by == "ctl-1"  # what a dead driver leaves
    study = optuna.load_study(study_name=study_name(job.id), storage=db)
    left_running = [t.number for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert left_running

    restarted = time.monotonic()
    done = subprocess.run(
        relaxtune_args(*controller_argv, "--once"),
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=240,
    )
    recovery_s = time.monotonic() - restarted
    assert done.returncode == 0, done.stderr[-3000:]
    row = store.get_job(job.id)
    assert row.status == "succeeded", row.error
    study = optuna.load_study(study_name=study_name(job.id), storage=db)
    trials = {t.number: t for t in study.get_trials()}
    for number, value in finished_before.items():
        assert trials[number].state == TrialState.COMPLETE and trials[number].value == value
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for number in left_running:  # reconciled: FAIL, re-queued into exactly one new trial
        assert trials[number].state == TrialState.FAIL
        again = [t for t in trials.values() if t.user_attrs.get("requeued_from") == number]
        assert len(again) == 1 and again[0].params == trials[number].params
    finished = [t for t in trials.values() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == spec["budget"]["trials"]
    # the job row and the study agree
    assert row.progress["complete"] == sum(t.state == TrialState.COMPLETE for t in trials.values())
    assert row.progress["running"] == 0
    # exported exactly once, from the best COMPLETE trial
    best = min((t for t in finished if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert row.best["trial"] == best.number == study.user_attrs["best_trial"]
    exported = [p for p in (artifacts / "optuna").rglob("*") if p.is_file()]
    assert len(exported) == 1, exported
    assert study.user_attrs["best_artifact_id"] in str(exported[0])
    assert (artifacts / "jobs" / job.id / "best" / "model.ts").is_file()
    store.close()
    print(
        f"\nfault controller-sigkill: {len(finished_before)} finished trial(s) kept, "
        f"{len(left_running)} re-queued; restart to job succeeded {recovery_s:.1f}s "
        f"(kill to succeeded {row.finished_at.timestamp() - killed_at:.1f}s)"
    )
