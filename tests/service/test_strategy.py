"""The stages of a search: planned from a study (fast, no Ray), and two-stage searches for
real (tiny N-body, local Ray): both stages in one study, the optimiser of stage 1's best
carried into stage 2, the job's best never below the tuned baseline, resume inside stage 2,
cancellation between the stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState

from search_spaces import parse_spec
from service.api import create_app
from service.artifacts import study_name
from service.cli._views import progress_text
from service.search import run_search
from service.settings import Settings
from service.store import JobStore
from service.strategy import next_stage, stage1_best
from service.study import REQUEUED, progress_of, trial_hparams

OPTIM = {"optim.lr", "optim.weight_decay", "optim.batch_size"}

TWO_STAGE: dict[str, Any] = {
    "name": "two-stage",
    "task": "nbody",
    "model": {"hidden": 16, "layers": 2},
    "data": {"train_size": 100, "val_size": 50, "test_size": 50},
    "search_space": "relax",
    "budget": {"trials": 6, "epochs": 2, "max_concurrent": 2},
    "objective": {"metric": "val_mse", "mode": "min"},
    "scheduler": "asha",
    "asha": {"grace_period": 1, "reduction_factor": 2},
    "strategy": {"name": "two_stage", "stage1_fraction": 0.5},
    "seed": 0,
}


@pytest.fixture(scope="module")
def local_ray() -> Any:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


# -- planning from the study (no Ray) -----------------------------------------------------


def _study() -> tuple[optuna.Study, optuna.storages.InMemoryStorage]:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="plan", direction="minimize")
    return study, storage


def _add(study: optuna.Study, stage: int | None, value: float | None, **params: Any) -> None:
    space = parse_spec(TWO_STAGE).resolved_space()
    distributions = {k: space.params[k].distribution() for k in params}
    attrs = {} if stage is None else {"stage": stage}
    state = TrialState.COMPLETE if value is not None else TrialState.FAIL
    study.add_trial(
        optuna.trial.create_trial(
            params=params, distributions=distributions, value=value, state=state, user_attrs=attrs
        )
    )


def _ask(storage: optuna.storages.BaseStorage, stage: Any) -> optuna.Trial:
    """A new trial of ``stage`` (with its attributes, as the searcher sets them)."""
    trial = optuna.load_study(study_name="plan", storage=storage, sampler=stage.sampler).ask()
    for key, value in stage.attrs.items():
        trial.set_user_attr(key, value)
    return trial


def _optim(lr: float) -> dict[str, Any]:
    return {"optim.lr": lr, "optim.weight_decay": 1e-4, "optim.batch_size": 64}


def test_plan_runs_stage_1_then_stage_2_with_the_best_optimiser() -> None:
    spec = parse_spec(TWO_STAGE)  # 6 trials: 3 + 3
    study, storage = _study()
    stage = next_stage(spec, study)
    assert stage is not None and (stage.number, stage.trials) == (1, 3)
    assert stage.attrs == {"stage": 1}
    trial = _ask(storage, stage)
    values = stage.suggest(trial)
    assert values["relax.schedule"] == "none" and set(trial.params) == OPTIM

    study.tell(trial, state=TrialState.FAIL)  # a failed trial uses up budget too
    _add(study, 1, 0.5, **_optim(1e-3))
    stage = next_stage(spec, study)
    assert stage is not None and (stage.number, stage.trials) == (1, 1)

    _add(study, 1, 0.2, **_optim(3e-3))  # stage 1's best
    stage = next_stage(spec, study)
    assert stage is not None and (stage.number, stage.trials) == (2, 3)
    assert stage.attrs == {"stage": 2, "optimiser_from": 2}
    for _ in range(3):  # random start-up and TPE alike keep the optimiser
        trial = _ask(storage, stage)
        values = stage.suggest(trial)
        assert {k: trial.params[k] for k in OPTIM} == _optim(3e-3)
        assert values["relax.schedule"] != "none"
        study.tell(trial, 0.3)
    assert next_stage(spec, study) is None
    progress = progress_of(study, 6, "min")
    assert progress["stage"] == 2 and progress["best_value"] == 0.2
    assert progress_text(progress) == "6/6 trials (0 running), stage 2 of 2, best 0.2"


def test_plan_refuses_stage_2_without_a_completed_stage_1_trial() -> None:
    spec = parse_spec({**TWO_STAGE, "budget": {"trials": 2, "epochs": 2}})
    study, _ = _study()
    _add(study, 1, None, **_optim(1e-3))
    with pytest.raises(RuntimeError, match="stage 1 .* completed no trial"):
        next_stage(spec, study)


def test_a_study_started_without_stages_continues_as_one() -> None:
    spec = parse_spec(TWO_STAGE)
    study, _ = _study()
    _add(study, None, 0.5, **_optim(1e-3))  # a job begun before it had a strategy
    stage = next_stage(spec, study)
    assert stage is not None and (stage.number, stage.trials, stage.attrs) == (None, 5, {})
    assert "stage" not in progress_of(study, 6, "min")  # joint: no stages to show


# -- real searches ------------------------------------------------------------------------


def _stage(trials: list[optuna.trial.FrozenTrial], number: int) -> list:
    return [t for t in trials if t.user_attrs.get("stage") == number]


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_two_stage_search_tunes_the_optimiser_then_the_relaxation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.upgrade()
    spec = parse_spec(TWO_STAGE)
    job = store.create_job("alice", spec.to_dict(), spec.name)
    result = run_search(spec, job.id, store.url, tmp_path / "art", show_progress=True)
    assert result["status"] == "succeeded" and result["progress"]["stage"] == 2
    study = optuna.load_study(study_name=study_name(job.id), storage=store.url)
    trials = study.get_trials()
    first, second = _stage(trials, 1), _stage(trials, 2)
    assert (len(first), len(second), len(trials)) == (3, 3, 6)
    assert max(t.number for t in first) < min(t.number for t in second)  # stage 1 ran first
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]

    # stage 1: only the optimiser is searched, and the relaxation is off in every epoch
    for t in first:
        assert set(t.params) == OPTIM
        assert all(h["theta"] == 0 for h in t.user_attrs["history"])
        assert trial_hparams(spec, t)["relax.schedule"] == "none"
    baseline = stage1_best(study)
    assert baseline is not None and baseline.state == TrialState.COMPLETE

    # stage 2: the relaxation is searched with stage 1's best optimiser, unchanged
    for t in second:
        assert {k: t.params[k] for k in OPTIM} == {k: baseline.params[k] for k in OPTIM}
        assert set(t.params) - OPTIM, "stage 2 samples relaxation parameters"
        assert t.user_attrs["optimiser_from"] == baseline.number
    # with 2 epochs the last one trains at θ = 0 (the schedule's tail), so θ is 0 at every
    # epoch end; the norm penalty, computed only on steps with θ > 0, shows the relaxation
    relaxed = [h["penalty_norm"] for t in second for h in t.user_attrs["history"]]
    assert any(p is not None and p > 0 for p in relaxed), "stage 2 trials relax"

    # the job's best is the best of both stages: never worse than the tuned baseline
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value)
    assert result["best"]["trial"] == best.number
    assert result["best"]["value"] <= baseline.value
    assert result["best"]["stage"] == best.user_attrs["stage"]
    exported = json.loads((tmp_path / "art/jobs" / job.id / "best/config.json").read_text())
    assert exported["hparams"]["relax.schedule"] == trial_hparams(spec, best)["relax.schedule"]

    # the stage of each trial is in the trials API and in the run summary
    token = store.create_token("reader", tenant="alice")
    settings = Settings(db=store.url, artifacts=tmp_path / "art")
    with TestClient(create_app(settings, store)) as client:
        response = client.get(
            f"/v1/jobs/{job.id}/trials", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200
    stages = [row["user_attrs"].get("stage") for row in response.json()["data"]]
    assert sorted(stages) == [1, 1, 1, 2, 2, 2]
    out = capsys.readouterr().out
    assert "stage 1 (optimiser, relaxation off): 3 trials" in out
    assert "stage 2 (relaxation, optimiser fixed): 3 trials" in out


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_cancel_after_stage_1_does_not_start_stage_2(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    spec = parse_spec({**TWO_STAGE, "budget": {"trials": 2, "epochs": 1, "max_concurrent": 1}})

    def stage1_finished() -> bool:
        try:
            study = optuna.load_study(study_name=study_name("cancel"), storage=db)
        except KeyError:
            return False
        return any(t.state.is_finished() for t in study.get_trials(deepcopy=False))

    result = run_search(spec, "cancel", db, tmp_path / "art", should_stop=stage1_finished)
    assert result["status"] == "cancelled" and result["progress"]["stage"] == 1
    trials = optuna.load_study(study_name=study_name("cancel"), storage=db).get_trials()
    assert [t.user_attrs["stage"] for t in trials] == [1]
    assert result["best"]["trial"] == trials[0].number  # what finished is still exported


_DRIVER = """
import json, sys
from search_spaces import parse_spec
from service.search import run_search
run_search(parse_spec(json.loads(sys.argv[1])), "resume2", sys.argv[2], sys.argv[3], num_cpus=2)
"""


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_killed_in_stage_2_resumes_in_stage_2(tmp_path: Path) -> None:
    spec = dict(
        TWO_STAGE,
        name="resume-stage-2",
        # long enough that the kill lands while stage-2 trials are running
        data={"train_size": 400, "val_size": 50, "test_size": 50},
        budget={"trials": 6, "epochs": 3, "max_concurrent": 2},
        strategy={"name": "two_stage", "stage1_fraction": 0.34},  # 2 + 4 trials
        scheduler="none",
    )
    spec.pop("asha")
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    args = [sys.executable, "-c", _DRIVER, json.dumps(spec), db, str(tmp_path / "art")]
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 - kept open for the child
    proc = subprocess.Popen(args, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    before: list[optuna.trial.FrozenTrial] = []
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            time.sleep(0.25)
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            try:
                study = optuna.load_study(study_name=study_name("resume2"), storage=db)
            except KeyError:
                continue
            before = study.get_trials()
            second = _stage(before, 2)
            # one stage-2 trial finished and another still training
            if any(t.state == TrialState.COMPLETE for t in second) and any(
                t.state == TrialState.RUNNING and t.intermediate_values for t in second
            ):
                break
        else:
            pytest.fail("stage 2 never had a finished and a running trial at once")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray, mid-stage-2
        except ProcessLookupError:
            pass
        proc.wait()
    study = optuna.load_study(study_name=study_name("resume2"), storage=db)
    before = study.get_trials()
    first_before = {t.number: (t.state, t.value) for t in _stage(before, 1)}
    finished_before = {
        t.number: t.value for t in _stage(before, 2) if t.state == TrialState.COMPLETE
    }
    running_before = [t.number for t in _stage(before, 2) if t.state == TrialState.RUNNING]
    # a trial with a reported epoch has saved its state; one that has just started may not
    trained_before = {
        t.number
        for t in _stage(before, 2)
        if t.state == TrialState.RUNNING and t.intermediate_values
    }
    assert len(first_before) == 2 and finished_before and trained_before

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = optuna.load_study(study_name=study_name("resume2"), storage=db).get_trials()
    by_number = {t.number: t for t in trials}
    # stage 1 was not rerun: the same two trials, untouched
    assert {t.number: (t.state, t.value) for t in _stage(trials, 1)} == first_before
    # no finished stage-2 trial was lost or retrained
    for number, value in finished_before.items():
        assert by_number[number].state == TrialState.COMPLETE and by_number[number].value == value
    # the interrupted ones were re-queued in stage 2 and continued from their saved epoch
    baseline = stage1_best(optuna.load_study(study_name=study_name("resume2"), storage=db))
    for number in running_before:
        assert by_number[number].state == TrialState.FAIL
        assert by_number[number].user_attrs["stop_reason"] == REQUEUED
        (again,) = [t for t in trials if t.user_attrs.get("requeued_from") == number]
        assert again.user_attrs["stage"] == 2 and again.state == TrialState.COMPLETE
        assert again.params == by_number[number].params
        if number in trained_before:
            assert "resume_from" in again.user_attrs
    # stage 2 kept stage 1's optimiser throughout, and used exactly its budget
    second = _stage(trials, 2)
    for t in second:
        assert {k: t.params[k] for k in OPTIM} == {k: baseline.params[k] for k in OPTIM}
    assert sum(t.state == TrialState.COMPLETE for t in second) == 4
    assert (tmp_path / "art/jobs/resume2/best/model.ts").is_file()
