"""Faults injected into real (tiny) searches run by a real controller on a local Ray:

- a trial's Ray worker process SIGKILLed after its first reported epoch: with ``retries: 1``
  the trial is resumed from its last Tune checkpoint; with ``retries: 0`` it is FAIL; either
  way the job completes and its row agrees with the Optuna study;
- a trial whose loss turns NaN (``optim.lr`` 1e6): FAIL, and the search goes on;
- the artifact disk full at export (a 4 KiB tmpfs under the job's folder): the job fails with
  the OS error, keeps its trials, and ``relaxtune export JOB`` works once there is space.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from _reliability_support import ray_trial_workers, tiny_spec, wait_for
from optuna.trial import TrialState

from search_spaces import parse_spec
from service import cli
from service.artifacts import study_name
from service.controller import Controller
from service.settings import Settings
from service.store import Job, JobStore
from service.study import progress_of

pytestmark = pytest.mark.slow

#: batch size 2 on 120 systems: 60 steps, so an epoch lasts long enough to be interrupted
SLOW_EPOCHS = {
    "data": {"train_size": 600, "val_size": 50, "test_size": 50},
    "search_space": {
        "optim.lr": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True},
        "optim.batch_size": 2,
        "relax.schedule": "none",
    },
}


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Any:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def run_job(
    tmp_path: Path, spec: dict[str, Any], injector: Any = None, **settings: Any
) -> tuple[JobStore, Job, Settings]:
    """Queue ``spec`` and run it with a real controller; ``injector(job_id)`` runs alongside."""
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.upgrade()
    job = store.create_job("alice", parse_spec(spec).to_dict(), spec["name"])
    config = Settings(db=store.url, artifacts=tmp_path / "art", heartbeat_s=1, **settings)
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            injector(job.id)
        except BaseException as exc:  # surfaced after the run
            errors.append(exc)

    thread = threading.Thread(target=guarded, daemon=True) if injector else None
    if thread:
        thread.start()
    finished = Controller(store, config, worker_id="faults").run_once()
    if thread:
        thread.join(timeout=30)
    if errors:
        raise errors[0]
    assert finished is not None and finished.id == job.id
    return store, store.get_job(job.id), config


def load(store: JobStore, job_id: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name(job_id), storage=store.url)


def assert_row_agrees_with_study(store: JobStore, job: Job) -> optuna.Study:
    study = load(store, job.id)
    truth = progress_of(study, job.spec["budget"]["trials"], job.spec["objective"]["mode"])
    assert {k: job.progress[k] for k in truth} == truth, (job.progress, truth)
    assert not [
        t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)
    ]
    return study


def kill_worker_mid_trial(store_url: str, job_id: str, epochs: int, killed: list) -> None:
    """SIGKILL the Ray worker of the first trial once Tune has registered the checkpoint of
    one of its epochs (not its last): the trial's ``checkpoint_epoch`` attribute, written
    after the registration. (The searcher sees an epoch's result before Tune has registered
    the checkpoint that came with it; a kill in between rightly restarts the trial from
    scratch.)"""

    def checkpointed() -> Any:
        try:
            study = optuna.load_study(study_name=study_name(job_id), storage=store_url)
        except KeyError:
            return None
        for trial in study.get_trials(deepcopy=False):
            epoch = trial.user_attrs.get("checkpoint_epoch", 0)
            if trial.state == TrialState.RUNNING and 1 <= epoch < epochs:
                return trial.number, epoch
        return None

    number, steps = wait_for(
        checkpointed, 120, "Tune to register a trial's first checkpoint", period=0.05
    )
    pids = ray_trial_workers()
    assert pids, "no ray::ImplicitFunc worker found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed.append((number, steps, pids, time.time()))


def ray_results(artifacts: Path, job_id: str) -> list[dict[str, Any]]:
    lines = []
    for path in (artifacts / "jobs" / job_id / "ray").glob("run-*/relax_trial_*/result.json"):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def test_killed_trial_worker_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    spec = tiny_spec(
        name="retry",
        retries=1,
        budget={"trials": 1, "epochs": 3, "max_concurrent": 1},
        **SLOW_EPOCHS,
    )
    epochs = spec["budget"]["epochs"]
    killed: list[Any] = []
    store, job, settings = run_job(
        tmp_path,
        spec,
        lambda job_id: kill_worker_mid_trial(store_url(tmp_path), job_id, epochs, killed),
    )
    assert killed, "the fault was not injected"
    number, steps_before, _, killed_at = killed[0]
    assert job.status == "succeeded", job.error
    study = assert_row_agrees_with_study(store, job)
    trial = study.trials[number]
    assert trial.state == TrialState.COMPLETE
    # every epoch recorded once, in order, across the kill
    assert [h["epoch"] for h in trial.user_attrs["history"]] == list(range(1, epochs + 1))
    assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
    # Ray restored it from the checkpoint: after the restart the first result is an epoch
    # after the one reported before the kill, not epoch 1 again
    results = [
        r
        for r in ray_results(settings.artifacts, job.id)
        if r["trial_id"] == trial.user_attrs["ray_trial_id"]
    ]
    restored = [r for r in results if r.get("iterations_since_restore") == 1 and r["epoch"] > 1]
    assert restored, [(r["epoch"], r.get("iterations_since_restore")) for r in results]
    assert restored[0]["epoch"] >= steps_before + 1
    assert [r["epoch"] for r in results].count(1) == 1, "the trial restarted from scratch"
    best = job.best
    assert best and Path(best["checkpoint"], "model.ts").is_file()
    took = job.finished_at.timestamp() - job.started_at.timestamp()
    after = job.finished_at.timestamp() - killed_at
    print(
        f"\nfault trial-worker-kill retries=1: killed after epoch {steps_before}; "
        f"job took {took:.1f}s, finished {after:.1f}s after the kill"
    )


def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


def test_killed_trial_worker_without_retries_is_fail_and_the_job_completes(
    tmp_path: Path,
) -> None:
    spec = tiny_spec(name="noretry", retries=0, **SLOW_EPOCHS)
    epochs = spec["budget"]["epochs"]
    killed: list[Any] = []
    store, job, _ = run_job(
        tmp_path,
        spec,
        lambda job_id: kill_worker_mid_trial(store_url(tmp_path), job_id, epochs, killed),
    )
    assert killed, "the fault was not injected"
    number = killed[0][0]
    assert job.status == "succeeded", job.error
    study = assert_row_agrees_with_study(store, job)
    trial = study.trials[number]
    assert trial.state == TrialState.FAIL and trial.user_attrs["stop_reason"]
    assert job.progress["failed"] == 1 and job.progress["complete"] == 1
    others = [t for t in study.trials if t.number != number]
    assert [t.state for t in others] == [TrialState.COMPLETE]
    assert job.best["trial"] == others[0].number


def test_nan_loss_trial_is_fail_with_its_reason_and_the_search_goes_on(tmp_path: Path) -> None:
    spec = tiny_spec(
        name="nan",
        search_space={
            "optim.lr": {"type": "categorical", "choices": [1e6, 3e-3]},
            "relax.schedule": "none",
        },
        budget={"trials": 2, "epochs": 2, "max_concurrent": 1},
        seed=11,  # TPE's seeded start samples 1e6 first, then 3e-3
    )
    store, job, _ = run_job(tmp_path, spec)
    assert job.status == "succeeded", job.error
    study = assert_row_agrees_with_study(store, job)
    diverged = [t for t in study.trials if t.params["optim.lr"] == 1e6]
    healthy = [t for t in study.trials if t.params["optim.lr"] == 3e-3]
    assert diverged and healthy, "seed 11 should sample both learning rates"
    assert all(t.state in (TrialState.FAIL, TrialState.PRUNED) for t in diverged)
    assert all(t.state == TrialState.COMPLETE for t in healthy)
    assert job.best["params"]["optim.lr"] == 3e-3
    assert diverged[0].number < healthy[0].number  # the search went on after the divergence
    reasons = {t.user_attrs.get("stop_reason") for t in diverged}
    assert all(str(r).startswith("diverged: ") and "became" in str(r) for r in reasons), reasons


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def test_disk_full_at_export_fails_clearly_keeps_trials_and_reexports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: Any
) -> None:
    artifacts = tmp_path / "art"
    store = JobStore(store_url(tmp_path))
    store.upgrade()
    spec = tiny_spec(name="diskfull", budget={"trials": 2, "epochs": 2, "max_concurrent": 1})
    job = store.create_job("alice", parse_spec(spec).to_dict(), spec["name"])
    job_folder = artifacts / "jobs" / job.id
    # the job's folder is a 4 KiB disk; its trial states live on a roomy one mounted inside
    if not _mount_tmpfs(job_folder, "4k"):
        missing("TMPFS", "mounting a tmpfs needs root with CAP_SYS_ADMIN")
    try:
        assert _mount_tmpfs(job_folder / "trials", "64m")
        config = Settings(db=store.url, artifacts=artifacts, ray_storage=str(tmp_path / "ray"))
        finished = Controller(store, config, worker_id="faults").run_once()
        assert finished is not None
        job = store.get_job(job.id)
        assert job.status == "failed"
        assert "No space left on device" in job.error or "StorageFull" in job.error, job.error
        # the trials are kept, and no half-written checkpoint is left behind
        study = load(store, job.id)
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert len(complete) == 2
        assert all((Path(t.user_attrs["checkpoint"]) / "state.pt").is_file() for t in complete)
        assert not [p.name for p in job_folder.iterdir() if p.name != "trials"]
        # still full: `relaxtune export` refuses in one line
        argv = ["export", job.id, "--db", store.url, "--artifacts", str(artifacts)]
        with pytest.raises(SystemExit) as err:
            cli.main(argv)
        assert err.value.code == 1
        message = capsys.readouterr().err
        assert "export failed" in message and "Traceback" not in message, message
        # free space (grow the disk, keeping its content), then export again
        grown = subprocess.run(
            ["mount", "-o", "remount,size=64m", str(job_folder)], capture_output=True
        )
        assert grown.returncode == 0, grown.stderr
        assert cli.main(argv) == 0
        best = json.loads(capsys.readouterr().out)
        assert (job_folder / "best" / "model.ts").is_file()
        expected = min(complete, key=lambda t: t.value)
        assert best["trial"] == expected.number
        # the job row now says so
        job = store.get_job(job.id)
        assert (
            job.status == "succeeded" and job.error is None and job.best["trial"] == expected.number
        )
    finally:
        subprocess.run(["umount", "-l", str(job_folder / "trials")], capture_output=True)
        subprocess.run(["umount", "-l", str(job_folder)], capture_output=True)
        store.close()
