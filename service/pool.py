"""The scheduling controller: many jobs at once, one driver process per job.

``relaxtune controller`` runs a :class:`DriverPool`. It starts a local Ray head once (or joins
``ray_address``), then, every poll:

1. reaps the driver processes that ended: a driver that died with its job still ``running``
   (SIGKILL, out of memory, a crash) gets the job requeued, to resume from its study (after
   ``driver_restarts`` such deaths the job fails, saying so);
2. SIGKILLs a driver whose job was cancelled but which has not stopped ``cancel_grace_s``
   later (the job then ends ``cancelled``);
3. plans with ``service.fairshare.plan`` which queued jobs fit the cluster's CPUs and GPUs
   (``ray.cluster_resources()``) next to the running ones, the tenants' turns, weights and trial
   caps, and ``max_running_jobs``; claims each (atomically, by id) and starts its driver,
   ``python -m service.driver`` (``service/driver.py``), which joins the same Ray by address;
4. records what it saw (capacity, use, running jobs, each queued job's position and why it
   waits) in the store's ``relaxtune_cluster`` table, where the API reads it.

A driver's crash is its job's business only: the controller and the other drivers keep
running, and the Ray actors of a dead driver are released by Ray. The drivers die with the
controller (``PR_SET_PDEATHSIG``); a restarted controller under the same worker id requeues the
jobs they held. Stopping the controller (SIGTERM) stops every driver, each requeueing its job.

One controller schedules one Ray cluster: two controllers given the same ``ray_address`` would
each count the whole cluster as theirs.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any

from service.artifacts import driver_log
from service.errors import Conflict, NotFound, RelaxtuneError
from service.fairshare import Demand, Queued, Running, demand_of, plan
from service.settings import Settings
from service.store import Job, JobStore

__all__ = ["DriverPool"]

logger = logging.getLogger(__name__)

_STALE_SWEEP_S = 60.0
#: the cluster state is written when it changes, and at least this often
_RECORD_EVERY_S = 10.0


@dataclass
class _Driver:
    job: Job
    proc: subprocess.Popen[bytes]
    demand: Demand
    log: IO[bytes]
    started: float
    cancel_seen: float | None = None


def _driver_preexec(parent: int) -> Any:
    """Run in the child before exec: unblock signals (the controller blocks SIGUSR1) and die
    with the controller (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``)."""

    def preexec() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
        if os.getppid() != parent:  # the controller died before prctl took effect
            os._exit(1)

    return preexec


class DriverPool:
    """Runs queued jobs from ``store`` concurrently, each in its own driver process."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        *,
        worker_id: str | None = None,
        cancel_grace_s: float = 30.0,
    ) -> None:
        self.store = store
        self.settings = settings
        settings.export_data_locations()  # the drivers inherit them
        self.worker_id = worker_id or settings.worker_id or socket.gethostname()
        self.cancel_grace_s = cancel_grace_s
        self.ray_address: str | None = None
        self.capacity: dict[str, float] = {}
        self._drivers: dict[str, _Driver] = {}
        self._deaths: Counter[str] = Counter()
        self._served: dict[str, int] = {}
        self._turn = 0
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._last_stale_sweep = 0.0
        self._recorded: tuple[str, float] = ("", 0.0)

    # --- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; the loop then stops every driver (their jobs are requeued). Safe to
        call from a signal handler."""
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """Look at the queue now (a job was submitted). Safe from a signal handler."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def running_jobs(self) -> dict[str, int]:
        """``{job id: driver pid}`` of the drivers alive now."""
        return {job_id: d.proc.pid for job_id, d in self._drivers.items()}

    def start_ray(self) -> str:
        """Start the local Ray head (or join ``ray_address``) and return the address the
        drivers join."""
        import ray

        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": True,
            "logging_level": logging.WARNING,
        }
        if not ray.is_initialized():
            if self.settings.ray_address:
                ray.init(address=self.settings.ray_address, **kwargs)
            else:
                ray.init(address="local", num_cpus=self.settings.ray_num_cpus, **kwargs)
        self.ray_address = ray.get_runtime_context().gcs_address
        self.capacity = self._read_capacity()
        logger.info("Ray at %s: %s", self.ray_address, self.capacity)
        return self.ray_address

    def _read_capacity(self) -> dict[str, float]:
        import ray

        resources = ray.cluster_resources()
        return {"CPU": float(resources.get("CPU", 0.0)), "GPU": float(resources.get("GPU", 0.0))}

    def recover(self) -> list[str]:
        """Requeue this worker's jobs left running by a previous run (their drivers died with
        it), and any worker's jobs whose heartbeat is stale."""
        ids = self.store.requeue_running(self.worker_id)
        ids += self.store.requeue_running(stale_after_s=self.settings.stale_after_s)
        self._last_stale_sweep = time.monotonic()
        return ids

    def run_forever(self, poll_s: float = 1.0) -> None:
        """Recover, start Ray, then schedule until :meth:`stop`; then stop the drivers."""
        self.recover()
        self.start_ray()
        logger.info("controller %s scheduling on %r", self.worker_id, self.store)
        try:
            while not self.stopping:
                self._guarded_step()
                self._wake.wait(poll_s)
                self._wake.clear()
        finally:
            self.shutdown()

    def drain(self, poll_s: float = 0.5) -> None:
        """Recover, start Ray, and schedule until the queue is empty and every driver has
        ended (or :meth:`stop`)."""
        self.recover()
        self.start_ray()
        try:
            while not self.stopping:
                self._guarded_step()
                if not self._drivers and self._queue_empty():
                    break
                self._wake.wait(poll_s)
                self._wake.clear()
        finally:
            self.shutdown()

    def _queue_empty(self) -> bool:
        try:
            return not self.store.queued_jobs(limit=1)
        except RelaxtuneError as exc:  # unknown: keep looking
            logger.error("reading the queue: %s", exc)
            return False

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Stop every driver (SIGTERM: each requeues its job), wait for them, release Ray."""
        for d in self._drivers.values():
            with contextlib.suppress(ProcessLookupError):
                d.proc.terminate()
        deadline = time.monotonic() + timeout_s
        for d in self._drivers.values():
            try:
                d.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()
        with contextlib.suppress(RelaxtuneError):
            self._reap()
        with contextlib.suppress(RelaxtuneError):
            self.store.record_cluster(
                self.worker_id,
                {"capacity": self.capacity, "used": {}, "running": [], "queue": {}, "stopped": 1},
            )
        try:
            import ray

            ray.shutdown()
        except Exception as exc:  # leaving anyway
            logger.warning("shutting Ray down: %s", exc)

    # --- one scheduling pass --------------------------------------------------------------

    def _guarded_step(self) -> None:
        try:
            self.step()
        except RelaxtuneError as exc:  # the database may come back; keep going
            logger.error("scheduling: %s", exc)

    def step(self) -> list[str]:
        """Reap, enforce cancels, plan and start drivers; return the ids started."""
        self._reap()
        self._enforce_cancels()
        if time.monotonic() - self._last_stale_sweep > _STALE_SWEEP_S:
            self.store.requeue_running(stale_after_s=self.settings.stale_after_s)
            self._last_stale_sweep = time.monotonic()
        if self.stopping:
            return []
        with contextlib.suppress(Exception):  # nodes come and go; keep the last known
            self.capacity = self._read_capacity()
        # a job requeued while its old driver still runs (a stale heartbeat) waits for it
        queued = [j for j in self.store.queued_jobs() if j.id not in self._drivers]
        limits = self._tenant_limits({j.tenant for j in queued} | self._running_tenants())
        the_plan = plan(
            [Queued(j.id, j.tenant, demand_of(j.spec)) for j in queued],
            [Running(i, d.job.tenant, d.demand) for i, d in self._drivers.items()],
            self.capacity,
            max_jobs=self.settings.max_running_jobs,
            weight=lambda t: limits[t].share_weight,
            trial_cap=lambda t: limits[t].max_running_trials,
            last_served=self._served,
        )
        by_id = {j.id: j for j in queued}
        started = []
        for job_id in the_plan.start:
            try:
                job = self.store.claim(job_id, self.worker_id)
            except (Conflict, NotFound) as exc:  # cancelled or taken meanwhile
                logger.info("job %s not claimed: %s", job_id, exc)
                continue
            self._turn += 1
            self._served[job.tenant] = self._turn
            self._spawn(job, demand_of(by_id[job_id].spec))
            started.append(job_id)
        self._record(the_plan.queue)
        return started

    def _running_tenants(self) -> set[str]:
        return {d.job.tenant for d in self._drivers.values()}

    def _tenant_limits(self, tenants: set[str]) -> dict[str, Settings]:
        from service.quotas import effective_settings

        return {t: effective_settings(self.store, self.settings, t) for t in tenants}

    def _spawn(self, job: Job, demand: Demand) -> None:
        log_path = driver_log(self.settings.artifacts, job.id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed when reaped
        argv = [sys.executable, "-m", "service.driver", job.id, "--db", self.store.url]
        argv += ["--artifacts", str(self.settings.artifacts), "--worker-id", self.worker_id]
        argv += ["--ray-address", str(self.ray_address)]
        argv += ["--log-level", logging.getLevelName(logging.getLogger().getEffectiveLevel())]
        if self.settings.ray_storage:
            argv += ["--storage-path", self.settings.ray_storage]
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_driver_preexec(os.getpid()),
        )
        self._drivers[job.id] = _Driver(job, proc, demand, log, time.monotonic())
        logger.info(
            "job %s (tenant %s): driver %d started (%d trials, %g CPU, %g GPU)",
            job.id,
            job.tenant,
            proc.pid,
            demand.trials,
            demand.cpu,
            demand.gpu,
        )

    def _reap(self) -> None:
        for job_id, d in list(self._drivers.items()):
            code = d.proc.poll()
            if code is None:
                continue
            self._ended(d, code)  # raises on a database error: the driver is looked at again
            del self._drivers[job_id]
            d.log.close()
            self._wake.set()

    def _ended(self, d: _Driver, code: int) -> None:
        job = self.store.get_job(d.job.id)
        if job.status != "running" or job.claimed_by != self.worker_id:
            return  # it recorded its end (or requeue) itself, or the job moved on
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        if self.stopping:
            self.store.requeue_job(job.id, self.worker_id)
            return
        self._deaths[job.id] += 1
        deaths = self._deaths[job.id]
        if deaths > self.settings.driver_restarts:
            error = (
                f"its driver process died {deaths} times (last: {how}); see "
                f"{driver_log(self.settings.artifacts, job.id)}"
            )
            logger.error("job %s failed: %s", job.id, error)
            with contextlib.suppress(Conflict):
                self.store.finish(job.id, "failed", error=error, worker_id=self.worker_id)
            return
        logger.warning(
            "job %s: its driver %d died (%s); requeued to resume from its study",
            job.id,
            d.proc.pid,
            how,
        )
        self.store.requeue_job(job.id, self.worker_id)

    def _enforce_cancels(self) -> None:
        now = time.monotonic()
        for job_id, d in self._drivers.items():
            if d.cancel_seen is None:
                try:
                    if self.store.is_cancel_requested(job_id):
                        d.cancel_seen = now
                except RelaxtuneError as exc:
                    logger.warning("reading the cancel flag of job %s: %s", job_id, exc)
            elif now - d.cancel_seen > self.cancel_grace_s and d.proc.poll() is None:
                logger.warning("job %s: cancelled but its driver runs on; killing it", job_id)
                with contextlib.suppress(ProcessLookupError):
                    d.proc.kill()

    def _record(self, queue: dict[str, dict[str, Any]]) -> None:
        running = [
            {
                "job_id": job_id,
                "tenant": d.job.tenant,
                "trials": d.demand.trials,
                "cpu": d.demand.cpu,
                "gpu": d.demand.gpu,
            }
            for job_id, d in self._drivers.items()
        ]
        used = {
            "CPU": min(
                sum(d.demand.cpu for d in self._drivers.values()), self.capacity.get("CPU", 0.0)
            ),
            "GPU": min(
                sum(d.demand.gpu for d in self._drivers.values()), self.capacity.get("GPU", 0.0)
            ),
        }
        state = {
            "capacity": self.capacity,
            "used": used,
            "max_running_jobs": self.settings.max_running_jobs,
            "running": running,
            "queue": queue,
        }
        text = json.dumps(state, sort_keys=True)
        last_text, last_at = self._recorded
        if text == last_text and time.monotonic() - last_at < _RECORD_EVERY_S:
            return
        self.store.record_cluster(self.worker_id, state)
        self._recorded = (text, time.monotonic())
