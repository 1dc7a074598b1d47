"""The scheduling controller's handling of driver processes, with real processes standing in
for drivers (no Ray): a cancelled job whose driver runs on is SIGKILLed after the grace period
and ends ``cancelled`` while the other job's driver is untouched; a driver that keeps dying
gets its job requeued ``driver_restarts`` times, then the job fails saying why."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from search_spaces import example_path, parse_spec
from service.fairshare import Demand
from service.pool import DriverPool, _Driver
from service.settings import Settings
from service.store import JobStore

SPEC = parse_spec(example_path("quick_nbody").read_text()).to_dict()
WORKER = "pool-test"


def _pool(store: JobStore, tmp_path: Path, **settings: object) -> DriverPool:
    return DriverPool(
        store,
        Settings(db=store.url, artifacts=tmp_path / "artifacts", **settings),
        worker_id=WORKER,
        cancel_grace_s=0.2,
    )


def _start(pool: DriverPool, store: JobStore, tenant: str, code: str) -> str:
    """Queue and claim a job of ``tenant``; a Python process running ``code`` is its driver."""
    job = store.create_job(tenant, SPEC, f"{tenant}-job")
    claimed = store.claim(job.id, WORKER)
    proc = subprocess.Popen([sys.executable, "-c", code])
    log = open(Path(pool.settings.artifacts).parent / f"{job.id}.log", "wb")  # noqa: SIM115
    pool._drivers[job.id] = _Driver(claimed, proc, Demand(1, 1.0, 0.0), log, time.monotonic())
    return job.id


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_cancelled_job_whose_driver_runs_on_is_killed_and_ends_cancelled(
    store: JobStore, tmp_path: Path
) -> None:
    pool = _pool(store, tmp_path)
    stubborn = _start(pool, store, "alice", "import time; time.sleep(60)")  # ignores the cancel
    other = _start(pool, store, "bob", "import time; time.sleep(60)")
    other_proc = pool._drivers[other].proc
    store.request_cancel(stubborn)
    pool._enforce_cancels()  # sees the cancel, starts the grace period
    assert pool._drivers[stubborn].proc.poll() is None
    time.sleep(0.3)
    pool._enforce_cancels()  # past the grace period: SIGKILL
    _until(lambda: pool._drivers[stubborn].proc.poll() is not None)
    assert pool._drivers[stubborn].proc.returncode == -9
    pool._reap()
    assert store.get_job(stubborn).status == "cancelled"
    # the other tenant's driver and job are untouched
    assert other_proc.poll() is None and store.get_job(other).status == "running"
    assert set(pool.running_jobs()) == {other}
    other_proc.kill()
    other_proc.wait()


def test_a_driver_that_keeps_dying_fails_its_job_after_driver_restarts(
    store: JobStore, tmp_path: Path
) -> None:
    pool = _pool(store, tmp_path, driver_restarts=1)
    job_id = _start(pool, store, "alice", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    _until(lambda: pool._drivers[job_id].proc.poll() is not None)
    pool._reap()  # first death: requeued to resume from its study
    assert store.get_job(job_id).status == "queued" and not pool.running_jobs()
    # claimed again, and its new driver dies as well
    job = store.get_job(job_id)
    assert job.error is None
    claimed = store.claim(job_id, WORKER)
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    log = open(tmp_path / "second.log", "wb")  # noqa: SIM115
    pool._drivers[job_id] = _Driver(claimed, proc, Demand(1, 1.0, 0.0), log, time.monotonic())
    proc.wait()
    pool._reap()
    failed = store.get_job(job_id)
    assert failed.status == "failed"
    assert "died 2 times (last: exit status 3)" in failed.error and "driver.log" in failed.error
