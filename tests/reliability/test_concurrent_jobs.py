"""Two tenants' jobs on one 2-CPU machine, each ``max_concurrent: 1`` with 1 CPU per trial:
one ``relaxtune controller`` runs both at the same time, each in its own driver process. A
third job waits, told its position and why. Then one job's driver is SIGKILLed mid-search:
that job is requeued and resumes from its study (finished trials kept, the interrupted one
re-queued exactly once), the other job's driver is untouched, and both succeed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from _reliability_support import (
    kill_group,
    relaxtune_args,
    start_process,
    tiny_spec,
    wait_for,
)
from _reliability_support import study_trials as _trials
from optuna.trial import TrialState

from search_spaces import parse_spec
from service.store import JobStore

pytestmark = pytest.mark.slow


def _driver_pid(job_id: str) -> int | None:
    """The pid of the ``python -m service.driver JOB_ID`` process, if one runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\x00")
        except OSError:
            continue
        if b"service.driver" in argv and job_id.encode() in argv:
            return int(entry.name)
    return None


def test_two_tenants_run_at_once_and_a_killed_driver_resumes_alone(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(db)
    store.upgrade()
    spec = tiny_spec(
        budget={"trials": 2, "epochs": 8, "max_concurrent": 1},
        data={"train_size": 300, "val_size": 50, "test_size": 50},
    )
    alice = store.create_job("alice", parse_spec(spec).to_dict(), "alice-job")
    bob = store.create_job("bob", parse_spec(spec).to_dict(), "bob-job")
    later = store.create_job("alice", parse_spec(spec).to_dict(), "alice-later")
    argv = ["controller", "--db", db, "--artifacts", str(tmp_path / "art"), "--worker-id", "ctl"]
    argv += ["--num-cpus", "2", "--poll", "0.2", "--log-level", "warning"]
    log = tmp_path / "controller.log"
    proc = start_process(relaxtune_args(*argv), log)
    try:

        def alive() -> None:
            assert proc.poll() is None, log.read_text()[-3000:]

        def both_training() -> bool:
            alive()
            jobs = [store.get_job(alice.id), store.get_job(bob.id)]
            if any(j.status != "running" for j in jobs):
                return False
            return all(any(t.state == TrialState.RUNNING for t in _trials(db, j.id)) for j in jobs)

        wait_for(both_training, 180, "both tenants' jobs training at once", period=0.2)
        pids = {j: _driver_pid(j) for j in (alice.id, bob.id)}
        assert all(pids.values()) and len(set(pids.values())) == 2, pids  # two drivers

        # the third job waits, and says where it stands and why
        state = store.cluster_states()["ctl"]
        assert state["capacity"]["CPU"] == 2 and state["used"]["CPU"] == 2
        assert sorted(r["tenant"] for r in state["running"]) == ["alice", "bob"]
        assert store.get_job(later.id).status == "queued"
        assert state["queue"][later.id]["position"] == 1
        assert state["queue"][later.id]["reason"].startswith(
            "waiting for 1 CPUs (0 free); cluster busy with 2 jobs"
        ), state["queue"]
        store.request_cancel(later.id)  # keeps the test short

        # SIGKILL bob's driver once one of its trials has finished and the next one runs
        kept: dict[int, float] = {}

        def bob_midway() -> bool:
            alive()
            trials = _trials(db, bob.id)
            kept.clear()
            kept.update({t.number: t.value for t in trials if t.state == TrialState.COMPLETE})
            return bool(kept) and any(t.state == TrialState.RUNNING for t in trials)

        wait_for(bob_midway, 180, "bob's job with one trial done and one running", period=0.1)
        os.kill(pids[bob.id], signal.SIGKILL)
        killed_at = time.time()

        def bob_resumed() -> bool:
            alive()
            pid = _driver_pid(bob.id)
            return pid is not None and pid != pids[bob.id]

        wait_for(bob_resumed, 60, "a new driver for bob's job")

        def both_done() -> bool:
            alive()
            return all(store.get_job(j).finished for j in (alice.id, bob.id))

        wait_for(both_done, 240, "both jobs to finish")
    finally:
        kill_group(proc, signal.SIGTERM)
    a, b = store.get_job(alice.id), store.get_job(bob.id)
    assert a.status == "succeeded", (a.error, log.read_text()[-3000:])
    assert b.status == "succeeded", (b.error, log.read_text()[-3000:])
    assert store.get_job(later.id).status == "cancelled"

    # bob: the trials finished before the kill are kept as they were; the interrupted one was
    # re-queued into exactly one new trial; the budget was used exactly once
    trials = {t.number: t for t in _trials(db, bob.id)}
    for number, value in kept.items():
        assert trials[number].state == TrialState.COMPLETE and trials[number].value == value
    requeued = [t for t in trials.values() if t.user_attrs.get("requeued_from") is not None]
    assert len(requeued) == 1
    source = trials[requeued[0].user_attrs["requeued_from"]]
    assert source.state == TrialState.FAIL and source.params == requeued[0].params
    finished = [t for t in trials.values() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == spec["budget"]["trials"]
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]

    # alice: one driver from start to end, no trial interrupted or re-queued
    alice_trials = _trials(db, alice.id)
    assert len(alice_trials) == spec["budget"]["trials"]
    assert all(t.state == TrialState.COMPLETE for t in alice_trials)
    assert not any(t.user_attrs.get("requeued_from") is not None for t in alice_trials)
    for t in alice_trials:  # every epoch reported once, in order
        epochs = [h["epoch"] for h in t.user_attrs["history"]]
        assert epochs == list(range(1, spec["budget"]["epochs"] + 1))
    assert a.started_at is not None and a.started_at < b.started_at  # bob's was claimed again
    store.close()
    print(
        f"\nconcurrent jobs: alice and bob ran at once on 2 CPUs; bob's driver SIGKILLed, "
        f"{len(kept)} finished trial(s) kept, resumed and succeeded "
        f"{b.finished_at.timestamp() - killed_at:.1f}s after the kill"
    )
