"""Real searches: Ray Tune over an Optuna study in the job database, on both tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search_spaces import SpecError, parse_spec
from service._scheduler import RelaxationAwareASHA
from service.artifacts import study_name
from service.errors import SearchFailed
from service.export import export_best
from service.search import run_search
from workers.training import verify_checkpoint

pytestmark = pytest.mark.slow

NBODY = {
    "name": "tiny-nbody",
    "task": "nbody",
    "model": {"hidden": 16, "layers": 2},
    "data": {"train_size": 100, "val_size": 50, "test_size": 50},
    "search_space": {
        "preset": "relax",
        "override": {"relax.lambda_lie": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
    },
    "budget": {"trials": 4, "epochs": 2, "max_concurrent": 2},
    "objective": {"metric": "val_mse", "mode": "min"},
    "resources": {"cpu": 1, "gpu": 0},
    "scheduler": "asha",
    "asha": {"grace_period": 1, "reduction_factor": 2},
    "seed": 0,
}

MNIST = {
    "name": "tiny-mnist",
    "task": "rotated_mnist",
    "model": {"group": "C4", "width": 4, "depth": 2, "head_hidden": 16},
    "data": {"train_size": 200, "val_size": 100, "test_size": 100},
    "search_space": "relax",
    "budget": {"trials": 3, "epochs": 2, "max_concurrent": 2},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "resources": {"cpu": 1, "gpu": 0},
    "scheduler": "none",
    "seed": 1,
}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _check_finished_search(tmp_path: Path, job_id: str, spec: dict, result: dict) -> optuna.Study:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    study = optuna.load_study(study_name=study_name(job_id), storage=db)
    trials = study.get_trials()
    assert len(trials) == spec["budget"]["trials"]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete, "at least one trial completes"
    for t in complete:
        assert t.user_attrs["ray_trial_id"]
        assert len(t.user_attrs["history"]) == spec["budget"]["epochs"]
        assert set(t.intermediate_values) == set(range(1, spec["budget"]["epochs"] + 1))
        assert t.value == pytest.approx(t.user_attrs["val_projected"])
        assert t.user_attrs["equivariance_error_projected"] < 1e-4
        assert "final_theta" in t.user_attrs and Path(t.user_attrs["checkpoint"]).is_dir()
        # training began after Optuna created the trial, and before it completed
        began = datetime.fromtimestamp(t.user_attrs["first_batch_at"])
        assert t.datetime_start <= began <= t.datetime_complete
    best = result["best"]
    maximize = spec["objective"]["mode"] == "max"
    expected = (max if maximize else min)(complete, key=lambda t: t.value)
    assert best["trial"] == expected.number and best["value"] == pytest.approx(expected.value)
    report = verify_checkpoint(best["checkpoint"])
    assert report["passed"], report["problems"]
    assert study.user_attrs["best_trial"] == expected.number
    assert study.user_attrs["best_artifact_id"]
    return study


def test_tiny_search_nbody(tmp_path):
    spec = parse_spec(NBODY)
    result = run_search(spec, "nbodyjob", f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path / "art")
    assert result["status"] == "succeeded"
    _check_finished_search(tmp_path, "nbodyjob", NBODY, result)
    metrics = json.loads((tmp_path / "art/jobs/nbodyjob/best/metrics.json").read_text())
    assert "test_mse" in metrics and metrics["test_mse"] > 0


def test_tiny_search_rotated_mnist(tmp_path):
    spec = parse_spec(MNIST)
    progress_seen = []
    result = run_search(
        spec,
        "mnistjob",
        f"sqlite:///{tmp_path / 'jobs.db'}",
        tmp_path / "art",
        on_progress=progress_seen.append,
    )
    assert result["status"] == "succeeded"
    _check_finished_search(tmp_path, "mnistjob", MNIST, result)
    assert progress_seen and progress_seen[-1]["complete"] + progress_seen[-1]["pruned"] == 3
    # the export can be redone later (relaxtune export JOB) and gives the same trial
    again = export_best("mnistjob", f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path / "art")
    assert again.trial == result["best"]["trial"]


def test_asha_prunes_and_records_pruned(tmp_path):
    """Six sequential trials over learning rates spanning 4 decades: ASHA stops the bad
    ones at the first rungs and Optuna records them PRUNED with their intermediate values."""
    spec = dict(
        NBODY,
        name="prune",
        budget={"trials": 6, "epochs": 4, "max_concurrent": 1},
        search_space={
            "optim.lr": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
            "relax.schedule": "none",
        },
    )
    result = run_search(
        parse_spec(spec), "prunejob", f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path / "art"
    )
    study = optuna.load_study(
        study_name=study_name("prunejob"), storage=f"sqlite:///{tmp_path / 'jobs.db'}"
    )
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    assert pruned, [(t.state, t.intermediate_values) for t in study.get_trials()]
    for t in pruned:
        assert t.intermediate_values and max(t.intermediate_values) < 4
        assert t.user_attrs["stop_reason"].startswith("pruned")
    assert result["progress"]["pruned"] == len(pruned)


def test_refused_spec_writes_nothing(tmp_path):
    db = tmp_path / "jobs.db"
    bad = dict(NBODY, objective={"metric": "val_accuracy", "mode": "max"})
    with pytest.raises(SpecError) as err:
        run_search(parse_spec(bad), "badjob", f"sqlite:///{db}", tmp_path / "art")
    assert err.value.field == "objective.metric"
    assert not db.exists() or not optuna.get_all_study_names(f"sqlite:///{db}")


def test_scheduler_compares_only_within_a_relaxation_phase():
    asha = RelaxationAwareASHA(
        metric="val_projected", mode="max", max_t=8, grace_period=1, reduction_factor=2
    )
    assert asha.rungs == [1, 2, 4]
    # a settled trial scores 0.9 at epoch 2; a trial still relaxing with 0.5 is not stopped
    assert asha.decide(2, 0.9, theta=0.0) == "CONTINUE"
    assert asha.decide(2, 0.5, theta=0.8) == "CONTINUE"
    # but it is stopped when a relaxing peer did better
    assert asha.decide(2, 0.7, theta=0.5) == "CONTINUE"
    assert asha.decide(2, 0.4, theta=0.6) == "STOP"
    # epochs off the rungs never stop anything
    assert asha.decide(3, 0.0, theta=0.0) == "CONTINUE"


_RESUME_SCRIPT = """
import sys
from search_spaces import parse_spec
from service.search import run_search
import json
spec = parse_spec(json.loads(sys.argv[1]))
run_search(spec, "resumejob", sys.argv[2], sys.argv[3], num_cpus=2)
"""


def test_killed_search_resumes_without_losing_finished_trials(tmp_path):
    spec = dict(
        NBODY,
        name="resume",
        # long enough (about a minute) for the kill to find one trial COMPLETE, one mid-way
        data={"train_size": 400, "val_size": 50, "test_size": 50},
        budget={"trials": 6, "epochs": 4, "max_concurrent": 2},
        scheduler="none",
    )
    spec.pop("asha")
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    args = [sys.executable, "-c", _RESUME_SCRIPT, json.dumps(spec), db, str(tmp_path / "art")]
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 - kept open for the child
    proc = subprocess.Popen(args, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    epochs = spec["budget"]["epochs"]
    finished_before: dict[int, float] = {}
    deadline = time.time() + 240
    try:
        # kill once a trial is COMPLETE and another is mid-way (an epoch reported, at least
        # two to go), so the kill leaves a RUNNING trial whatever the machine's speed
        while time.time() < deadline:
            time.sleep(0.1)
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            try:
                study = optuna.load_study(study_name=study_name("resumejob"), storage=db)
            except KeyError:
                continue
            trials = study.get_trials()
            finished_before = {t.number: t.value for t in trials if t.state == TrialState.COMPLETE}
            midway = [
                t
                for t in trials
                if t.state == TrialState.RUNNING and 1 <= len(t.intermediate_values) <= epochs - 2
            ]
            if finished_before and midway:
                break
        else:
            pytest.fail("no COMPLETE trial with another one mid-way before the deadline")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray, mid-search
        except ProcessLookupError:
            pass
        proc.wait()
    study = optuna.load_study(study_name=study_name("resumejob"), storage=db)
    left_running = [t.number for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert left_running, "the kill should leave trials RUNNING in the study"
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name=study_name("resumejob"), storage=db)
    trials = {t.number: t for t in study.get_trials()}
    for number, value in finished_before.items():  # every finished trial kept as it was
        assert trials[number].state == TrialState.COMPLETE and trials[number].value == value
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for number in left_running:  # reconciled: FAIL, parameters re-queued into a new trial
        assert trials[number].state == TrialState.FAIL
        requeued = [t for t in trials.values() if t.user_attrs.get("requeued_from") == number]
        assert len(requeued) == 1
        # the re-queued trial keeps every parameter the interrupted one had drawn (a trial
        # killed while its parameters were being sampled has only some of them)
        original = trials[number].params
        assert {k: requeued[0].params[k] for k in original} == original
    finished = [t for t in trials.values() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == spec["budget"]["trials"]
    assert (tmp_path / "art/jobs/resumejob/best/model.ts").is_file()


def test_diverging_trial_is_recorded_fail_with_its_reason(tmp_path):
    spec = dict(
        NBODY,
        name="nan",
        budget={"trials": 1, "epochs": 2, "max_concurrent": 1},
        search_space={"optim.lr": 1e12, "relax.schedule": "none"},
        scheduler="none",
    )
    spec.pop("asha")
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    with pytest.raises(SearchFailed) as failed:
        run_search(parse_spec(spec), "nanjob", db, tmp_path / "art")
    # the job's error says why, in one line, starting with the trial's own reason
    assert str(failed.value).startswith("trial 0: diverged: loss became nan at epoch 1")
    assert str(failed.value).endswith("no trial completed (1 failed, 0 pruned)")
    (trial,) = optuna.load_study(study_name=study_name("nanjob"), storage=db).get_trials()
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["stop_reason"].startswith("diverged: loss became nan")


def test_a_trial_exception_is_the_reason_of_the_failed_search(tmp_path):
    """A trial that raises (here a model key the task does not know, as a plugin task without
    a schema would only find out in the worker) is FAIL with the exception's first line, and
    the search that found nothing fails with it."""
    spec = parse_spec(dict(NBODY, budget={"trials": 2, "epochs": 1, "max_concurrent": 1}))
    spec = spec.model_copy(update={"model": {**spec.model, "widht": 4}})  # past validation
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    with pytest.raises(SearchFailed) as failed:
        run_search(spec, "errjob", db, tmp_path / "art")
    message = str(failed.value)
    assert message.startswith("trial 0: ValueError: nbody model config: unknown keys ['widht']")
    # (stage 2 of the default two-stage strategy cannot start after stage 1 found nothing)
    assert "\n" not in message and "stage 1 (the optimiser, relaxation off) completed no" in message
    trials = optuna.load_study(study_name=study_name("errjob"), storage=db).get_trials()
    assert trials and {t.state for t in trials} == {TrialState.FAIL}
    for t in trials:
        assert t.user_attrs["stop_reason"].startswith("error: ValueError: nbody model config")


def test_trial_resumed_after_its_last_epoch_keeps_its_history(tmp_path):
    """A trial whose driver died after its last epoch is re-queued with the history of its
    saved state; the resumed trial re-reports that epoch and must end COMPLETE with every
    epoch in `history` and in its intermediate values."""
    from service._internals import optuna_study_of
    from service.searcher import searcher_class

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'jobs.db'}")
    space = parse_spec(NBODY).resolved_space()
    searcher = searcher_class()(
        space=space.suggest,
        metric="val_projected",
        mode="min",
        storage=storage,
        study_name="job-x",
        seed=0,
        epochs=3,
        trials_dir=str(tmp_path / "trials"),
    )
    before = [{"epoch": e, "val_projected": 1.0 / e, "theta": 0.0} for e in (1, 2, 3)]
    optuna_study_of(searcher).enqueue_trial(
        {}, user_attrs={"history_before": before, "resume_from": "x"}
    )
    config = searcher.suggest("t1")
    assert config["_resume_from"] == "x"
    last = {"epoch": 3, "done_epochs": 3, "val_projected": 1.0 / 3, "theta": 0.0}
    searcher.on_trial_result("t1", last)
    searcher.on_trial_complete("t1", last)
    (trial,) = optuna.load_study(study_name="job-x", storage=storage).get_trials()
    assert trial.state == TrialState.COMPLETE
    assert [h["epoch"] for h in trial.user_attrs["history"]] == [1, 2, 3]
    assert sorted(trial.intermediate_values) == [1, 2, 3]


def test_timeout_stops_the_search_keeps_its_trials_and_exports_the_best(tmp_path):
    """``timeout_s``: the search stops within seconds of it, the trials finished so far are
    kept, the best of them is exported; running the job again does not get a fresh budget."""
    spec = parse_spec(
        dict(
            NBODY,
            name="timeout",
            search_space={"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
            strategy="joint",
            budget={"trials": 200, "epochs": 2, "max_concurrent": 2},
            timeout_s=30,
        )
    )
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    started = time.monotonic()
    result = run_search(spec, "tojob", db, tmp_path / "art")
    seconds = time.monotonic() - started
    assert result["status"] == "timed_out"
    assert seconds < 30 + 20, seconds  # the stop itself takes a poll and Tune's teardown
    study = optuna.load_study(study_name=study_name("tojob"), storage=db)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 1 <= len(complete) < 200
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    stopped = {t.user_attrs.get("stop_reason") for t in trials if t.state == TrialState.FAIL}
    assert stopped <= {"job timed out"}
    assert result["error"].startswith(f"timed out after 30 s: {len(trials)} of 200 trials finished")
    assert f"(trial {result['best']['trial']}) is exported" in result["error"]
    assert result["best"]["trial"] in {t.number for t in complete}
    assert verify_checkpoint(Path(result["best"]["checkpoint"]))["passed"]
    assert study.user_attrs["search_seconds"] >= 30
    # the job's time is spent: a resume stops at once, without a new trial
    again = run_search(spec, "tojob", db, tmp_path / "art")
    assert again["status"] == "timed_out" and again["best"]["trial"] == result["best"]["trial"]
    assert len(optuna.load_study(study_name=study_name("tojob"), storage=db).get_trials()) == len(
        trials
    )


def test_a_trial_no_node_can_place_fails_the_search_at_once(tmp_path):
    """Ray would queue the trial forever (the job ``running``, nothing happening); the driver
    compares the spec with the cluster's nodes first (this module's Ray: one node, 2 CPUs)."""
    spec = parse_spec(dict(NBODY, name="huge", resources={"cpu": 512, "gpu": 0}))
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    started = time.monotonic()
    with pytest.raises(SearchFailed) as failed:
        run_search(spec, "hugejob", db, tmp_path / "art")
    assert time.monotonic() - started < 10
    assert str(failed.value) == (
        "resources.cpu: each trial asks for 512 CPUs but the largest node of the Ray cluster "
        "has 2: no trial could ever start (use resources.cpu <= 2)"
    )
    assert optuna.load_study(study_name=study_name("hugejob"), storage=db).get_trials() == []
