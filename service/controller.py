"""Running one job to its end: the search, then the gain report; how the job ended.

:class:`Controller` runs claimed jobs in its own process, one at a time: ``relaxtune run`` (a
foreground search), the tests (with an injected runner), and, through :meth:`Controller.run_job`,
each job's driver process (``service/driver.py``). The service's controller,
``relaxtune controller``, is ``service.pool.DriverPool``: it runs many jobs at once, each in its
own driver process on a shared Ray cluster, as many as the cluster's resources, the tenants'
fair shares and ``max_running_jobs`` allow.

A job whose spec asks for a gain report (``report: {seeds: K}``) runs its search, then the
report (``service.report.run_report``); a job queued again for its report skips the finished
search. Several controllers may share a database: claiming is atomic. A controller restarting
under the same ``worker_id`` first puts the jobs it had left ``running`` back in the queue, and
any controller requeues jobs whose driver stopped heartbeating (``stale_after_s``); the search
driver resumes a requeued job from its Optuna study. A driver interrupted by a stop requeues
only its own job (the same worker id may hold other running jobs).

The search driver (``service.search.run_search``, which imports Ray) is imported only when the
first job runs, so importing this module stays cheap and Ray-free.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from service.errors import Conflict, RelaxtuneError, SearchFailed, StoreError
from service.settings import Settings
from service.store import Job, JobStore

__all__ = ["Controller", "JobHeartbeat", "Runner"]

logger = logging.getLogger(__name__)

#: ``service.search.run_search``'s signature: ``(spec, job_id, db_url, artifacts_dir, *,
#: on_progress, should_stop, ray_address, storage_path, owns_job) -> {"status", "best"}``;
#: raises on failure.
Runner = Callable[..., dict[str, Any]]

_MAX_ERROR_CHARS = 4000
_CANCEL_POLL_S = 1.0
_STALE_SWEEP_S = 60.0

# --- riding out database outages ---------------------------------------------------------
#: how long recording a job's end waits for the database to come back
_DB_WAIT_S = 600.0
#: how many times (per controller process) a job whose search was stopped by a database
#: error is requeued to resume, before that error counts as the job's failure
_DB_REQUEUES = 3

_T = TypeVar("_T")


def _is_database_outage(exc: BaseException | None) -> bool:
    """Whether a lost or refused database connection is somewhere in ``exc``'s chain (the
    search driver's Optuna writes wrap it in ``StorageInternalError``, the store in
    ``StoreError``); errors about the data itself (integrity, too long, ...) are not."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
            return True
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _error_text(exc: BaseException) -> str:
    # a failed search says why in its own words (the first failed trial's reason)
    text = str(exc) if isinstance(exc, SearchFailed) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


class JobHeartbeat:
    """Background thread that marks a job alive every ``period_s`` while its search runs.

    With ``worker_id``, a beat that finds the job no longer running under that worker (it was
    requeued as stale and claimed elsewhere, or its cancel was recorded) sets :attr:`lost`.
    """

    def __init__(
        self, store: JobStore, job_id: str, period_s: float, worker_id: str | None = None
    ) -> None:
        self._store, self._job_id, self._period_s = store, job_id, period_s
        self._worker_id = worker_id
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._done.wait(self._period_s):
            try:
                self._store.heartbeat(self._job_id, self._worker_id)
            except Conflict as exc:
                logger.warning("job %s: %s; stopping its search", self._job_id, exc)
                self.lost.set()
            except RelaxtuneError as exc:  # a missed beat is not fatal; the next may succeed
                logger.warning("heartbeat of job %s failed: %s", self._job_id, exc)


class Controller:
    """Runs queued jobs from ``store`` with ``runner`` (default: ``service.search.run_search``).

    ``runner`` can be replaced (tests inject a fake); ``worker_id`` identifies this controller
    across restarts (default: ``settings.worker_id`` or the host name; give controllers sharing
    a host distinct ids). A job interrupted by :meth:`stop` goes back to the queue when
    ``requeue_on_stop`` (a service controller: another run resumes it), else it is marked
    failed with a resume hint (a foreground ``relaxtune run``: nobody else would pick it up).
    """

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        *,
        runner: Runner | None = None,
        worker_id: str | None = None,
        requeue_on_stop: bool = True,
        report_runner: Runner | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        settings.export_data_locations()  # where the workers read data and cache
        self.worker_id = worker_id or settings.worker_id or socket.gethostname()
        self._runner = runner
        self._report_runner = report_runner
        self.requeue_on_stop = requeue_on_stop
        self._stopping = threading.Event()
        self._wake = threading.Event()  # set by wake() and stop(): end the idle wait now
        self._last_stale_sweep = 0.0
        self._db_requeues: Counter[str] = Counter()
        #: per job this controller drives: set once it no longer holds the job (requeued as
        #: stale and claimed by another controller, or its cancel recorded meanwhile)
        self._lost: dict[str, threading.Event] = {}

    # --- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the controller to stop: the running search is interrupted and its job requeued
        (not cancelled), and no further job is claimed. Safe to call from a signal handler."""
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """Look at the queue now instead of at the end of the idle wait (a job was just
        submitted). Safe to call from a signal handler; a no-op while a job runs."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    def recover(self) -> list[str]:
        """Requeue this worker's jobs left running by a previous run, and any worker's jobs
        whose heartbeat is stale. Returns the requeued ids."""
        ids = self.store.requeue_running(self.worker_id)
        ids += self.store.requeue_running(stale_after_s=self.settings.stale_after_s)
        self._last_stale_sweep = time.monotonic()
        return ids

    def run_forever(self, poll_s: float = 1.0) -> None:
        """Recover, then claim and run jobs until :meth:`stop` is called. While the queue is
        empty, look again every ``poll_s`` seconds, or at once after :meth:`wake`."""
        logger.info("controller %s started on %r", self.worker_id, self.store)
        self.recover()
        while not self.stopping:
            try:
                ran = self.run_once()
            except RelaxtuneError as exc:  # the database may come back; keep polling
                logger.error("controller loop: %s", exc)
                ran = None
            if ran is None:
                if time.monotonic() - self._last_stale_sweep > _STALE_SWEEP_S:
                    try:
                        self.store.requeue_running(stale_after_s=self.settings.stale_after_s)
                    except RelaxtuneError as exc:
                        logger.error("requeueing stale jobs: %s", exc)
                    self._last_stale_sweep = time.monotonic()
                self._wake.wait(poll_s)
                self._wake.clear()
        logger.info("controller %s stopped", self.worker_id)

    def drain(self) -> list[Job]:
        """Run queued jobs until the queue is empty (or :meth:`stop`); return them finished."""
        done = []
        while not self.stopping and (job := self.run_once()) is not None:
            done.append(job)
        return done

    def run_once(self) -> Job | None:
        """Claim the oldest queued job and run it; ``None`` when the queue is empty."""
        if self.stopping:
            return None
        job = self.store.claim_next(self.worker_id)
        if job is None:
            return None
        return self.run_job(job)

    # --- one job --------------------------------------------------------------------------

    def _get_runner(self) -> Runner:
        if self._runner is None:
            from service.search import run_search  # imports ray: only when a job runs

            self._runner = run_search
        return self._runner

    def _get_report_runner(self) -> Runner:
        if self._report_runner is None:
            from service.report import run_report  # imports ray: only when a report runs

            self._report_runner = run_report
        return self._report_runner

    def _search_then_report(self, job: Job, spec: Any) -> dict[str, Any]:
        """The job's search (skipped when a gain report is all that is left to do), then its
        gain report when the spec asks for one (``report: {seeds: K}``)."""
        from service.gain import search_done_before

        done = search_done_before(job, Path(self.settings.artifacts)) if spec.report else None
        if done is not None:
            result = done
        else:
            result = self._get_runner()(
                spec,
                job.id,
                self.store.url,
                Path(self.settings.artifacts),
                on_progress=self._progress_callback(job.id),
                should_stop=self._stop_callback(job.id),
                ray_address=self.settings.ray_address,
                storage_path=self.settings.ray_storage,
                owns_job=self._owns_callback(job.id),
            )
        if spec.report is None or not isinstance(result, dict):
            return result
        if result.get("status") != "succeeded" or self.stopping:
            return result
        searched = result.get("progress") or job.progress
        record = self._progress_callback(job.id)
        report = self._get_report_runner()(
            spec,
            job.id,
            self.store.url,
            Path(self.settings.artifacts),
            on_progress=lambda progress: record({**searched, "report": progress}),
            should_stop=self._stop_callback(job.id),
            ray_address=self.settings.ray_address,
            storage_path=self.settings.ray_storage,
        )
        status = "cancelled" if report.get("status") == "cancelled" else result["status"]
        return {**result, "status": status, "report": report.get("report")}

    def run_job(self, job: Job) -> Job:
        """Run a job this controller has claimed and record how it ended."""
        from search_spaces import SpecError, parse_spec

        logger.info("running job %s (%s) for tenant %s", job.id, job.name, job.tenant)
        try:
            # accepted at submission; whether its GPUs exist is the Ray cluster's to say
            # (run_search checks the placement), not this host's (the compose controller
            # has no GPU)
            spec = parse_spec(job.spec, gpu_available=lambda: True)
        except SpecError as exc:
            # Specs are validated on submission; this means the schema changed since.
            return self._finish(job, "failed", error=f"stored spec is invalid: {exc}")

        heartbeat = JobHeartbeat(self.store, job.id, self.settings.heartbeat_s, self.worker_id)
        self._lost[job.id] = heartbeat.lost
        try:
            with heartbeat:
                result = self._search_then_report(job, spec)
        except Exception as exc:
            if heartbeat.lost.is_set():
                logger.warning("job %s: stopped after losing it (%s)", job.id, exc)
                return self.store.get_job(job.id)
            if self.stopping and not self._cancel_requested(job.id):
                logger.warning("job %s interrupted by shutdown (%s)", job.id, exc)
                return self._when_db_answers(lambda: self._requeue(job))
            outage = _is_database_outage(exc)
            if outage and self.requeue_on_stop and self._db_requeues[job.id] < _DB_REQUEUES:
                # The search lost its database: once it is back, resume the job from its study
                # (finished trials kept, interrupted ones re-queued) instead of failing it.
                self._db_requeues[job.id] += 1
                logger.warning(
                    "job %s: search stopped by a database outage (%s); requeueing it to resume",
                    job.id,
                    _error_text(exc)[:300],
                )
                return self._when_db_answers(lambda: self._requeue(job))
            logger.exception("job %s failed", job.id)
            error = _error_text(exc)
            return self._when_db_answers(lambda: self._finish(job, "failed", error=error))
        finally:
            self._lost.pop(job.id, None)
        return self._when_db_answers(lambda: self._record_result(job, result))

    def _finish(self, job: Job, status: str, **fields: Any) -> Job:
        """Record the job's end, unless it is no longer this controller's to record: a job
        whose state moved on meanwhile (cancelled, taken over) keeps that state."""
        try:
            return self.store.finish(job.id, status, worker_id=self.worker_id, **fields)
        except Conflict as exc:
            logger.warning("job %s: %s", job.id, exc)
            return self.store.get_job(job.id)

    def _when_db_answers(self, operation: Callable[[], _T]) -> _T:
        """Run a store write that records how a job ended, retrying while the database is
        unreachable (up to ``_DB_WAIT_S``): giving up would leave the job ``running`` under
        this controller until its heartbeat goes stale."""
        deadline = time.monotonic() + _DB_WAIT_S
        delay = 0.5
        while True:
            try:
                return operation()
            except StoreError as exc:
                if not _is_database_outage(exc) or time.monotonic() > deadline:
                    raise
                logger.warning("%s; retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _record_result(self, job: Job, result: dict[str, Any]) -> Job:
        status = result.get("status") if isinstance(result, dict) else None
        best = result.get("best") if isinstance(result, dict) else None
        if status == "succeeded":
            logger.info("job %s succeeded", job.id)
            return self._finish(job, "succeeded", best=best)
        if status == "cancelled":
            if self.stopping and not self._cancel_requested(job.id):
                # Stopped because this controller is shutting down, not because a user asked:
                # the job goes back to the queue and resumes from its study later.
                logger.info("job %s interrupted by shutdown", job.id)
                return self._requeue(job)
            logger.info("job %s cancelled", job.id)
            return self._finish(job, "cancelled", best=best)
        if status == "timed_out":  # the spec's timeout_s passed: finished trials are kept
            logger.info("job %s timed out", job.id)
            return self._finish(job, "failed", best=best, error=result.get("error") or "timed out")
        return self._finish(
            job, "failed", error=f"the search returned an unknown status {status!r}"
        )

    def _requeue(self, job: Job) -> Job:
        if not self.requeue_on_stop:
            return self._finish(
                job, "failed", error=f"interrupted; resume with `relaxtune run --job {job.id}`"
            )
        # only this job: the same worker may be driving others (one driver process per job)
        self.store.requeue_job(job.id, self.worker_id)
        return self.store.get_job(job.id)

    def _cancel_requested(self, job_id: str) -> bool:
        try:
            return self.store.is_cancel_requested(job_id)
        except RelaxtuneError as exc:
            logger.warning("reading the cancel flag of job %s: %s", job_id, exc)
            return False

    def _progress_callback(self, job_id: str) -> Callable[[dict[str, Any]], None]:
        def on_progress(progress: dict[str, Any]) -> None:
            try:
                self.store.update_progress(job_id, progress, self.worker_id)
            except Conflict as exc:  # the job is no longer ours: stop driving it
                logger.warning("recording progress of job %s: %s", job_id, exc)
                if job_id in self._lost:
                    self._lost[job_id].set()
            except RelaxtuneError as exc:  # progress is advisory; never fail a search on it
                logger.warning("recording progress of job %s: %s", job_id, exc)

        return on_progress

    def _owns_callback(self, job_id: str) -> Callable[[], bool]:
        def owns_job() -> bool:
            lost = self._lost.get(job_id)
            return lost is None or not lost.is_set()

        return owns_job

    def _stop_callback(self, job_id: str) -> Callable[[], bool]:
        # The driver may poll this often; read the flag at most once per _CANCEL_POLL_S.
        last_check = 0.0
        cancelled = False

        def should_stop() -> bool:
            nonlocal last_check, cancelled
            if self.stopping:
                return True
            lost = self._lost.get(job_id)
            if lost is not None and lost.is_set():
                return True
            now = time.monotonic()
            if not cancelled and now - last_check >= _CANCEL_POLL_S:
                last_check = now
                cancelled = self._cancel_requested(job_id)
            return cancelled

        return should_stop
