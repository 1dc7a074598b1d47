"""Controller logic (claiming, progress, cancellation, failure, shutdown, resume) with an
injected fake search runner in place of ``service.search.run_search``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.controller import Controller
from service.settings import Settings
from service.store import JobStore

SPEC = {
    "name": "tiny",
    "task": "rotated_mnist",
    "model": {"group": "C4"},
    "search_space": "relax",
    "budget": {"trials": 2, "epochs": 1},
    "objective": {"metric": "val_accuracy", "mode": "max"},
}


@pytest.fixture
def settings(store: JobStore, tmp_path: Path) -> Settings:
    return Settings(
        db=store.url,
        artifacts=tmp_path / "artifacts",
        ray_address="ray://head:10001",
        ray_storage="/shared/ray",
        heartbeat_s=0.05,
    )


class FakeRunner:
    """Records its calls; ``behaviour(kwargs)`` decides what a run does."""

    def __init__(self, behaviour: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.behaviour = behaviour
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self, spec: Any, job_id: str, db_url: str, artifacts_dir: Path, **kwargs: Any
    ) -> dict[str, Any]:
        call = {"spec": spec, "job_id": job_id, "db_url": db_url, "artifacts": artifacts_dir}
        call.update(kwargs)
        self.calls.append(call)
        return self.behaviour(call)


def succeed(call: dict[str, Any]) -> dict[str, Any]:
    call["on_progress"](
        {"complete": 2, "pruned": 0, "failed": 0, "running": 0, "total": 2, "best_value": 0.9}
    )
    return {"status": "succeeded", "best": {"number": 1, "value": 0.9, "params": {"a": 1}}}


def wait_until_stopped(call: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not call["should_stop"]():
        if time.monotonic() > deadline:
            raise AssertionError("should_stop never turned true")
        time.sleep(0.02)
    return {"status": "cancelled", "best": None}


def test_controller_logic_runs_a_job_to_success(store: JobStore, settings: Settings) -> None:
    runner = FakeRunner(succeed)
    controller = Controller(store, settings, runner=runner, worker_id="w1")
    job = store.create_job("alice", SPEC, "tiny")
    finished = controller.run_once()
    assert finished is not None and finished.id == job.id
    assert finished.status == "succeeded"
    assert finished.best == {"number": 1, "value": 0.9, "params": {"a": 1}}
    assert finished.progress["best_value"] == 0.9
    (call,) = runner.calls
    assert call["job_id"] == job.id and call["db_url"] == store.url
    assert call["artifacts"] == settings.artifacts
    assert call["spec"].budget.trials == 2 and call["spec"].name == "tiny"  # a parsed JobSpec
    assert call["ray_address"] == "ray://head:10001" and call["storage_path"] == "/shared/ray"
    assert controller.run_once() is None  # queue empty


def test_controller_logic_wake_claims_a_new_job_without_waiting_for_the_poll(
    store: JobStore, settings: Settings
) -> None:
    controller = Controller(store, settings, runner=FakeRunner(succeed), worker_id="w1")
    loop = threading.Thread(target=controller.run_forever, kwargs={"poll_s": 60.0}, daemon=True)
    loop.start()
    try:
        time.sleep(0.5)  # the loop found the queue empty and waits for up to 60 s
        job = store.create_job("alice", SPEC, "tiny")
        controller.wake()
        deadline = time.monotonic() + 10
        while store.get_job(job.id).status != "succeeded":
            assert time.monotonic() < deadline, "the woken controller did not run the job"
            time.sleep(0.05)
    finally:
        controller.stop()
        loop.join(10)
    assert not loop.is_alive()


def test_controller_logic_records_failures(store: JobStore, settings: Settings) -> None:
    def explode(_: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("CUDA out of memory")

    job = store.create_job("alice", SPEC)
    finished = Controller(store, settings, runner=FakeRunner(explode)).run_once()
    assert finished is not None and finished.status == "failed"
    assert finished.error == "RuntimeError: CUDA out of memory"
    assert store.get_job(job.id).finished_at is not None


def test_controller_logic_unknown_result_is_a_failure(store: JobStore, settings: Settings) -> None:
    store.create_job("alice", SPEC)
    finished = Controller(store, settings, runner=FakeRunner(lambda _: {"status": "??"})).run_once()
    assert finished is not None and finished.status == "failed" and "'??'" in finished.error


def test_controller_logic_invalid_stored_spec_fails_without_running(
    store: JobStore, settings: Settings
) -> None:
    runner = FakeRunner(succeed)
    store.create_job("alice", {**SPEC, "task": "no_such_task"})
    finished = Controller(store, settings, runner=runner).run_once()
    assert finished is not None and finished.status == "failed"
    assert "stored spec is invalid" in finished.error and "task" in finished.error
    assert runner.calls == []


def test_controller_logic_runs_a_gpu_job_on_a_host_without_gpus(
    store: JobStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored GPU spec was accepted at submission: the controller (no GPU, no nvidia-smi,
    no RAY_ADDRESS, as in the compose deployment) runs it; the Ray cluster places it."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi
    runner = FakeRunner(succeed)
    store.create_job("alice", {**SPEC, "resources": {"cpu": 1, "gpu": 0.25}})
    finished = Controller(store, settings, runner=runner).run_once()
    assert finished is not None and finished.status == "succeeded", finished.error
    (call,) = runner.calls
    assert call["spec"].resources.gpu == 0.25


def test_controller_logic_user_cancel_stops_the_search(store: JobStore, settings: Settings) -> None:
    job = store.create_job("alice", SPEC)

    def cancel_then_wait(call: dict[str, Any]) -> dict[str, Any]:
        assert not call["should_stop"]()
        store.request_cancel(job.id, "alice")
        return wait_until_stopped(call)

    finished = Controller(store, settings, runner=FakeRunner(cancel_then_wait)).run_once()
    assert finished is not None and finished.status == "cancelled"


def test_controller_logic_shutdown_requeues_instead_of_cancelling(
    store: JobStore, settings: Settings
) -> None:
    job = store.create_job("alice", SPEC)
    controller: Controller

    def stop_controller(call: dict[str, Any]) -> dict[str, Any]:
        controller.stop()
        return wait_until_stopped(call)

    controller = Controller(store, settings, runner=FakeRunner(stop_controller), worker_id="w1")
    result = controller.run_once()
    assert result is not None and result.status == "queued" and result.claimed_by is None
    assert store.get_job(job.id).status == "queued"
    assert controller.run_once() is None  # a stopping controller claims nothing


def test_controller_logic_shutdown_error_requeues(store: JobStore, settings: Settings) -> None:
    store.create_job("alice", SPEC)
    controller: Controller

    def interrupted(_: dict[str, Any]) -> dict[str, Any]:
        controller.stop()
        raise RuntimeError("ray shut down")

    controller = Controller(store, settings, runner=FakeRunner(interrupted))
    result = controller.run_once()
    assert result is not None and result.status == "queued"


def test_controller_logic_heartbeats_while_running(store: JobStore, settings: Settings) -> None:
    job = store.create_job("alice", SPEC)
    beats: list[Any] = []

    def slow(_: dict[str, Any]) -> dict[str, Any]:
        for _ in range(3):
            time.sleep(0.12)
            beats.append(store.get_job(job.id).heartbeat_at)
        return {"status": "succeeded", "best": None}

    Controller(store, settings, runner=FakeRunner(slow)).run_once()
    assert beats[0] < beats[1] < beats[2]


def test_controller_logic_resumes_its_own_running_jobs(store: JobStore, settings: Settings) -> None:
    mine = store.create_job("alice", SPEC)
    store.claim_next("w1")  # left running by a previous life of controller w1
    other = store.create_job("alice", SPEC)
    store.claim_next("w2")  # another live controller's job, heartbeating
    runner = FakeRunner(succeed)
    controller = Controller(store, settings, runner=runner, worker_id="w1")
    assert controller.recover() == [mine.id]
    done = controller.drain()
    assert [j.id for j in done] == [mine.id] and done[0].status == "succeeded"
    assert store.get_job(other.id).status == "running"


def test_controller_logic_run_forever_until_stopped(store: JobStore, settings: Settings) -> None:
    ids = [store.create_job("alice", SPEC).id for _ in range(2)]
    controller = Controller(store, settings, runner=FakeRunner(succeed))
    thread = threading.Thread(target=controller.run_forever, kwargs={"poll_s": 0.05})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while any(store.get_job(i).status != "succeeded" for i in ids):
            assert time.monotonic() < deadline, "jobs did not finish"
            time.sleep(0.05)
        late = store.create_job("alice", SPEC).id  # picked up by polling
        while store.get_job(late).status != "succeeded":
            assert time.monotonic() < deadline, "late job did not finish"
            time.sleep(0.05)
    finally:
        controller.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_controller_logic_concurrent_controllers_share_the_queue(
    store: JobStore, settings: Settings
) -> None:
    ids = {store.create_job("alice", SPEC).id for _ in range(6)}
    runner = FakeRunner(succeed)
    controllers = [Controller(store, settings, runner=runner, worker_id=f"w{i}") for i in range(3)]
    threads = [threading.Thread(target=c.drain) for c in controllers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(c["job_id"] for c in runner.calls) == sorted(ids)  # each job ran once


def test_controller_logic_timeout_fails_the_job_keeping_its_best(
    store: JobStore, settings: Settings
) -> None:
    best = {"trial": 1, "value": 0.8, "checkpoint": "/a/jobs/x/best"}
    error = "timed out after 60 s: 3 of 8 trials finished; the best so far (trial 1) is exported"
    store.create_job("alice", SPEC)
    runner = FakeRunner(lambda _: {"status": "timed_out", "best": best, "error": error})
    finished = Controller(store, settings, runner=runner).run_once()
    assert finished is not None and finished.status == "failed"
    assert finished.error == error and finished.best == best


def test_controller_logic_failed_search_error_is_its_reason(
    store: JobStore, settings: Settings
) -> None:
    from service.errors import SearchFailed

    def nothing_found(_: dict[str, Any]) -> dict[str, Any]:
        raise SearchFailed("trial 3: diverged: loss became nan at epoch 2 — no trial completed")

    store.create_job("alice", SPEC)
    finished = Controller(store, settings, runner=FakeRunner(nothing_found)).run_once()
    assert finished is not None and finished.status == "failed"
    assert finished.error == "trial 3: diverged: loss became nan at epoch 2 — no trial completed"


def test_controller_logic_a_taken_over_job_stops_and_keeps_its_new_state(
    store: JobStore, settings: Settings
) -> None:
    """A controller that froze past ``stale_after_s`` lost its job to another controller: its
    search is told to stop at the next heartbeat, and what it found is not recorded."""
    job = store.create_job("alice", SPEC)

    def taken_over(call: dict[str, Any]) -> dict[str, Any]:
        assert store.requeue_running(stale_after_s=0) == [job.id]
        assert store.claim_next("other").id == job.id  # type: ignore[union-attr]
        wait_until_stopped(call)
        assert not call["owns_job"]()  # the search exports nothing
        return {"status": "succeeded", "best": {"trial": 9}}  # too late: not recorded

    finished = Controller(store, settings, runner=FakeRunner(taken_over), worker_id="w1").run_once()
    assert finished is not None and finished.status == "running"
    assert finished.claimed_by == "other" and finished.best is None


@pytest.mark.parametrize("ending", ["succeeded", "failed"])
def test_controller_logic_a_cancel_recorded_meanwhile_is_not_overwritten(
    store: JobStore, settings: Settings, ending: str
) -> None:
    """The cancel of a job whose driver looked dead (stale heartbeat) is recorded by another
    controller's sweep; the driver coming back cannot turn it into anything else."""
    job = store.create_job("alice", SPEC)

    def cancelled_meanwhile(_: dict[str, Any]) -> dict[str, Any]:
        store.request_cancel(job.id, "alice")
        store.requeue_running(stale_after_s=0)  # a cancel-requested stale job: cancelled
        assert store.get_job(job.id).status == "cancelled"
        if ending == "failed":
            raise RuntimeError("boom")
        return {"status": "succeeded", "best": {"trial": 1}}

    runner = FakeRunner(cancelled_meanwhile)
    finished = Controller(store, settings, runner=runner, worker_id="w1").run_once()
    assert finished is not None and finished.status == "cancelled"
    assert finished.best is None and finished.error is None
