"""The search driver of one job: Ray Tune over an Optuna study in the job's database.

    spec ──> study "job-<id>" (Optuna RDB storage, TPE with constant_liar, seeded)
         ──> Ray Tune: RelaxOptunaSearch (define-by-run over the spec's search space),
             RelaxationAwareASHA on the projected validation metric, trials =
             workers.trainable.relax_trial with the spec's resources
         ──> best COMPLETE trial (projected metric) ──> exported, verified checkpoint
             <artifacts>/jobs/<id>/best, attached to its Optuna trial as an artifact.

Resuming: running the same job again keeps every finished trial in the study; trials a
dead driver left RUNNING are marked FAIL and their parameters re-queued (with the path of
their last epoch state, so they continue where they stopped); the new Tune run only
launches the trials still missing from the budget.

A ``two_stage`` job runs one Tune run per stage, each planned from the study by
``service.strategy.next_stage`` (a ``joint`` job is a single stage).

This module imports Ray and torch: only the controller and ``relaxtune run`` load it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search_spaces import STAGE_ATTR, JobSpec, SpecError, space_for_stage
from service._internals import (
    fail_left_running,
    find_optuna_trial,
    optuna_study_of,
    optuna_trial_of,
    optuna_trials_of,
)
from service._json import json_safe
from service.errors import ExportFailed, SearchFailed
from service.progress import Progress
from service.strategy import (
    REQUEUED,
    Stage,
    current_stage,
    next_stage,
    stage_summary,
    uses_budget,
)

log = logging.getLogger(__name__)

OBJECTIVE = "val_projected"
#: ``stop_reason`` of the trials a cancel stopped
CANCELLED = "job cancelled"
#: ``stop_reason`` of the trials the spec's ``timeout_s`` stopped
TIMED_OUT = "job timed out"
#: reasons that say why the search stopped a trial, not what went wrong with it
_NOT_THE_TRIALS_FAULT = (REQUEUED, CANCELLED, TIMED_OUT)
#: study user attribute: seconds the search has run, summed over every driver run of the job
SEARCH_SECONDS = "search_seconds"


def _history_keys() -> tuple[str, ...]:
    """The per-epoch report's keys (``workers.training.EpochReport``): one history entry."""
    from dataclasses import fields

    from workers.training import EpochReport

    return tuple(f.name for f in fields(EpochReport))


HISTORY_KEYS = _history_keys()
FINAL_ATTRS = (
    "val_projected",
    "val_relaxed",
    "equivariance_error_relaxed",
    "equivariance_error_projected",
)


def study_name(job_id: str) -> str:
    return f"job-{job_id}"


def job_dir(artifacts_dir: str | Path, job_id: str) -> Path:
    return Path(artifacts_dir) / "jobs" / job_id


def optuna_storage(db_url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on the job database (pre-ping: survives server restarts).

    On a server database the pool is bounded like the job store's: a driver uses few
    connections at once (Tune's callbacks, the progress watcher, the export), and every
    controller holding up to ``pool_size + max_overflow`` of them must fit under the server's
    ``max_connections``; connections are recycled before proxies and firewalls that drop idle
    ones after half an hour or more do.
    """
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if db_url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=5, max_overflow=10, pool_recycle=1800)
    return optuna.storages.RDBStorage(db_url, engine_kwargs=kwargs, heartbeat_interval=None)


def check_objective(spec: JobSpec) -> None:
    """The objective must be the task's metric, in the task's direction."""
    from workers.tasks import get_task_class

    task_cls: Any = get_task_class(spec.task)  # a Task subclass (workers.tasks)
    expected = f"val_{task_cls.metric}"
    if spec.objective.metric != expected:
        raise SpecError(
            "objective.metric",
            f"task {spec.task} reports {expected!r}, got {spec.objective.metric!r}",
        )
    if spec.objective.mode != task_cls.mode:
        raise SpecError(
            "objective.mode",
            f"{expected} must be {'maximised' if task_cls.mode == 'max' else 'minimised'}: use {task_cls.mode!r}",
        )


# ---- the searcher ----------------------------------------------------------------------
def _make_searcher_class():
    from ray.tune.search.optuna import OptunaSearch

    class RelaxOptunaSearch(OptunaSearch):
        """Ray's OptunaSearch, with the states a user of Optuna expects.

        Stock OptunaSearch records trials stopped by the scheduler as COMPLETE with a
        truncated value; here they are PRUNED (their intermediate values stay). Each epoch
        also stores the full report in the trial's ``history`` user attribute, and a
        finished trial gets its final metrics as user attributes.
        """

        def __init__(
            self, *args, epochs: int, trials_dir: str, trial_attrs: dict | None = None, **kwargs
        ) -> None:
            super().__init__(*args, **kwargs)
            self.epochs = epochs
            self.trials_dir = trials_dir
            self.trial_attrs = dict(trial_attrs or {})  # e.g. the stage of a two-stage job
            self.cancelled = False
            self.cancel_reason = CANCELLED  # the stop_reason of trials a stop cuts short
            self._history: dict[str, list[dict[str, Any]]] = {}
            self._last: dict[str, dict[str, Any]] = {}

        def suggest(self, trial_id: str):
            config = super().suggest(trial_id)
            if config is None:
                return None
            ot_trial = optuna_trial_of(self, trial_id)
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            for key, value in self.trial_attrs.items():
                ot_trial.set_user_attr(key, value)
            # where the trial keeps its last epoch state (the exported best goes to <job>/best)
            ot_trial.set_user_attr(
                "checkpoint", str(Path(self.trials_dir) / f"{ot_trial.number:05d}")
            )
            config["_trial_number"] = ot_trial.number
            resume = ot_trial.user_attrs.get("resume_from")
            if resume:
                config["_resume_from"] = resume
                # the epochs trained before the interruption count for this trial too
                for entry in ot_trial.user_attrs.get("history_before", []):
                    value = entry.get("val_projected")
                    if entry.get("epoch") and value is not None and math.isfinite(value):
                        ot_trial.report(float(value), int(entry["epoch"]))
            return config

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            ot_trial = optuna_trial_of(self, trial_id)
            if "diverged" in result:  # the trial's last word: why it stopped, not an epoch
                self._last[trial_id] = {**self._last.get(trial_id, {}), **result}
                return
            epoch = int(result.get("done_epochs", result.get("training_iteration", 0)))
            entry = {k: result.get(k) for k in HISTORY_KEYS}
            history = self._history.setdefault(
                trial_id, list(ot_trial.user_attrs.get("history_before", []))
            )
            self._last[trial_id] = result
            if history and history[-1].get("epoch") == entry["epoch"]:
                # already recorded: Ray passes the stopping result again on completion, and a
                # trial resumed after its last epoch re-reports that epoch; the trial must
                # still carry its history
                if "history" not in ot_trial.user_attrs:
                    ot_trial.set_user_attr("history", history)
                return
            history.append(json_safe(entry))
            if result.get("first_batch_at") and "first_batch_at" not in ot_trial.user_attrs:
                # when the trial began training (its first attempt's first batch)
                ot_trial.set_user_attr("first_batch_at", float(result["first_batch_at"]))
            value = result.get(self.metric)
            if value is not None and math.isfinite(value):
                ot_trial.report(float(value), epoch)
            ot_trial.set_user_attr("history", history)

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            if trial_id in self._completed_trials:
                return
            ot_trial = optuna_trial_of(self, trial_id)
            if result and not error and "epoch" in result and "diverged" not in result:
                # a result the scheduler stopped on reaches the searcher only here
                self.on_trial_result(trial_id, result)
            last = result or self._last.get(trial_id) or {}
            done = int(last.get("done_epochs", 0))
            value = last.get(self.metric)
            for key in FINAL_ATTRS:
                if last.get(key) is not None:
                    ot_trial.set_user_attr(key, json_safe(last[key]))
            if "theta" in last:
                ot_trial.set_user_attr("final_theta", float(last["theta"]))
            if last.get("diverged"):
                ot_trial.set_user_attr("stop_reason", f"diverged: {last['diverged']}")
                state, value = TrialState.FAIL, None
            elif error:
                ot_trial.set_user_attr("stop_reason", _trial_error(ot_trial, self.trials_dir))
                state, value = TrialState.FAIL, None
            elif value is None or not math.isfinite(value):
                ot_trial.set_user_attr("stop_reason", "no finite metric")
                state, value = TrialState.FAIL, None
            elif self.cancelled and done < self.epochs:
                ot_trial.set_user_attr("stop_reason", self.cancel_reason)
                state, value = TrialState.FAIL, None
            elif done < self.epochs:
                ot_trial.set_user_attr("stop_reason", f"pruned by the scheduler after epoch {done}")
                state, value = TrialState.PRUNED, None
            else:
                state = TrialState.COMPLETE
            try:
                optuna_study_of(self).tell(ot_trial, value, state=state)
            except Exception as exc:  # a trial already finished elsewhere must not stop the search
                log.warning("could not record trial %s: %s", ot_trial.number, exc)
            self._completed_trials.add(trial_id)

        def close_timed_out(self) -> None:
            """Trials still running when the timeout ended the experiment: Tune stops them
            without telling the searcher, so record them here (FAIL ``job timed out``, or
            COMPLETE when their last epoch had been reported). A cancel or a shutdown leaves
            them RUNNING: a resume re-queues them to continue."""
            if self.cancel_reason != TIMED_OUT:
                return
            for trial_id, ot_trial in optuna_trials_of(self).items():
                if trial_id in self._completed_trials:
                    continue
                last = self._last.get(trial_id)
                if last and "epoch" in last:
                    self.on_trial_complete(trial_id, last)
                    continue
                ot_trial.set_user_attr("stop_reason", TIMED_OUT)
                try:
                    optuna_study_of(self).tell(ot_trial, None, state=TrialState.FAIL)
                except Exception as exc:
                    log.warning("could not record trial %s: %s", ot_trial.number, exc)
                self._completed_trials.add(trial_id)

    return RelaxOptunaSearch


def _trial_error(ot_trial: optuna.trial.Trial, trials_dir: str) -> str:
    """``error: <first line of the exception>`` for a trial Ray reports as errored: the
    trainable leaves that line in its folder (``workers.trainable.ERROR_FILE``); a trial
    whose process died without raising has none."""
    folder = Path(
        ot_trial.user_attrs.get("checkpoint") or Path(trials_dir) / f"{ot_trial.number:05d}"
    )
    try:
        text = (folder / "error.txt").read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    if not text:
        return "error: the trial's process died without an exception (killed? out of memory?)"
    return f"error: {text.splitlines()[0]}"


def failure_reason(study: optuna.Study) -> str | None:
    """``trial N: <reason>`` of the first trial that failed on its own (not re-queued, not
    stopped by a cancel or a timeout): what a job that found nothing says about why."""
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        reason = trial.user_attrs.get("stop_reason")
        if trial.state != TrialState.FAIL or not reason or reason in _NOT_THE_TRIALS_FAULT:
            continue
        return f"trial {trial.number}: {reason.removeprefix('error: ')}"
    return None


# ---- resume: reconcile what a dead driver left behind ----------------------------------
def reconcile_study(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a dead driver FAIL and re-queue their parameters (with
    their epoch history and last state folder so they continue). Returns how many."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if trial.state == TrialState.WAITING:
            continue
        fail_left_running(study, trial, "stop_reason", REQUEUED)
        attrs: dict[str, Any] = {"requeued_from": trial.number}
        if STAGE_ATTR in trial.user_attrs:  # a two-stage trial stays in its stage
            attrs[STAGE_ATTR] = trial.user_attrs[STAGE_ATTR]
        trial_dir = trial.user_attrs.get("checkpoint")
        if trial_dir is None:
            # the driver may have died before the trial finished: its state folder is by number
            trial_dir = str(Path(study.user_attrs.get("trials_dir", ".")) / f"{trial.number:05d}")
        if (Path(trial_dir) / "state.pt").exists():
            attrs["resume_from"] = trial_dir
            # the saved state is the truth about what was trained (Optuna may have missed
            # the last epoch's write if the driver or the database went away)
            attrs["history_before"] = _saved_history(Path(trial_dir)) or trial.user_attrs.get(
                "history", []
            )
        study.enqueue_trial(trial.params, user_attrs=attrs)
        count += 1
    return count


def _saved_history(trial_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch reports stored in a trial's ``state.pt`` (loaded without pickle)."""
    import torch

    try:
        state = torch.load(trial_dir / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # an unreadable state: fall back to what Optuna recorded
        log.warning("cannot read %s/state.pt: %s", trial_dir, exc)
        return []
    return [json_safe(dict(r)) for r in state.get("reports", [])]


def finished_count(study: optuna.Study) -> int:
    """Trials that used up budget: COMPLETE, PRUNED, and FAIL that were not re-queued."""
    return sum(uses_budget(t) for t in study.get_trials(deepcopy=False))


def progress_of(study: optuna.Study, total: int, mode: str) -> dict[str, Any]:
    """Counts by state and the best projected value so far (from the study: the truth);
    for a two-stage job also ``stage``, the latest stage that has trials. The shape is
    :class:`service.progress.Progress`, which the store, the API and the pages read."""
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    best = None
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
            if t.value is not None and (
                best is None or (t.value > best if mode == "max" else t.value < best)
            ):
                best = t.value
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == TrialState.FAIL:
            if t.user_attrs.get("stop_reason") != REQUEUED:
                counts["failed"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
    stage = current_stage(trials)
    return Progress(**counts, total=total, best_value=best, stage=stage or None).to_dict()


# ---- the run ---------------------------------------------------------------------------
class _SearchClock:
    """The search's wall-clock time against the spec's ``timeout_s``, summed over every
    driver run of the job (a resumed job does not get a fresh budget): the seconds of earlier
    runs are kept in the study's ``search_seconds`` user attribute."""

    SAVE_EVERY_S = 5.0

    def __init__(self, study: optuna.Study, timeout_s: float | None) -> None:
        self.study, self.timeout_s = study, timeout_s
        self.before = float(study.user_attrs.get(SEARCH_SECONDS) or 0.0)
        self.started = self._saved = time.monotonic()
        self.expired = threading.Event()

    def seconds(self) -> float:
        return self.before + time.monotonic() - self.started

    def check(self) -> bool:
        """Whether the timeout has passed (it stays passed)."""
        if self.timeout_s is not None and self.seconds() >= self.timeout_s:
            self.expired.set()
        return self.expired.is_set()

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._saved >= self.SAVE_EVERY_S:
            self.study.set_user_attr(SEARCH_SECONDS, round(self.seconds(), 3))
            self._saved = now

    def message(self) -> str:
        return f"timed out after {self.timeout_s:g} s"


class _Watcher(threading.Thread):
    """Polls the study for progress, and the caller for cancellation and the clock for the
    timeout, while Tune runs."""

    def __init__(
        self,
        study,
        total,
        mode,
        on_progress,
        should_stop,
        stop_event,
        searcher,
        bar,
        clock,
        period=1.0,
    ):
        super().__init__(daemon=True)
        self.study, self.total, self.mode = study, total, mode
        self.on_progress, self.should_stop = on_progress, should_stop
        self.stop_event, self.searcher, self.bar = stop_event, searcher, bar
        self.clock = clock
        self.period = period
        self.finished = threading.Event()

    def poll(self) -> dict[str, Any]:
        progress = progress_of(self.study, self.total, self.mode)
        if self.on_progress is not None:
            self.on_progress(progress)
        if self.bar is not None:
            self.bar.update(progress)
        return progress

    def run(self) -> None:
        while not self.finished.wait(self.period):
            if not self.stop_event.is_set() and self.clock.check():
                self.searcher.cancel_reason = TIMED_OUT
                self.searcher.cancelled = True
                self.stop_event.set()
            try:
                self.poll()
                self.clock.save()
                if self.should_stop is not None and self.should_stop():
                    self.searcher.cancelled = True
                    self.stop_event.set()
            except Exception as exc:  # a DB hiccup must not kill the search
                log.warning("progress poll failed: %s", exc)


def _ray_init(ray_address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": True,
        "logging_level": logging.WARNING,
    }
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local": always a fresh local instance, never a cluster someone else started here
        ray.init(address="local", num_cpus=num_cpus, **kwargs)


def _check_placement(spec: JobSpec) -> None:
    """Fail at once, saying why, when no node of the Ray cluster could ever run one trial
    (Ray would queue it forever and the job would show ``running``)."""
    import ray

    from service._placement import placement_problem

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    problem = placement_problem(spec.resources.cpu, spec.resources.gpu, nodes, "the Ray cluster")
    if problem is not None:
        raise SearchFailed(f"{problem[0]}: {problem[1]}")


def trial_base(spec: Any, trials_dir: Path) -> dict[str, Any]:
    """What every trial of ``spec`` shares: the ``base`` argument of
    ``workers.trainable.relax_trial`` (``trial``: the job's :class:`TrialConfig` as a dict,
    without hyperparameters; ``trials_dir``: the folder of the trials' folders)."""
    from workers.training import TrialConfig

    return {
        "trial": TrialConfig.from_spec(spec, {}).to_dict(),
        "trials_dir": str(trials_dir),
    }


def run_search(
    spec: JobSpec,
    job_id: str,
    db_url: str,
    artifacts_dir: str | Path,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    ray_address: str | None = None,
    storage_path: str | None = None,
    show_progress: bool = False,
    num_cpus: int | None = None,
    owns_job: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the search of one job; export its best trial.

    ``owns_job`` says whether this driver still holds the job: one that lost it (another
    controller took it over) stops like a cancel but exports nothing, leaving the job's
    folder to its new driver.

    Returns ``{"status": "succeeded"|"cancelled"|"timed_out", "best": {...}|None,
    "progress": {...}}`` (``timed_out`` also carries ``error``: the spec's ``timeout_s`` passed,
    counted over every driver run of the job; the trials finished so far are kept and the best
    of them exported).
    Raises ``SpecError`` for a spec the task cannot honour and :class:`SearchFailed` when no
    trial completed (its message starts with the first failed trial's reason).
    """
    check_objective(spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    jdir = job_dir(artifacts_dir, job_id).resolve()
    trials_dir = jdir / "trials"
    trials_dir.mkdir(parents=True, exist_ok=True)
    storage = optuna_storage(db_url)
    mode = spec.objective.mode
    # each stage samples with its own sampler (service.strategy); this handle reads and
    # reconciles the study
    study = optuna.create_study(
        storage=storage,
        study_name=study_name(job_id),
        load_if_exists=True,
        direction="maximize" if mode == "max" else "minimize",
    )
    study.set_user_attr("job_id", job_id)
    study.set_user_attr("spec", json.loads(spec.to_json()))
    study.set_user_attr("trials_dir", str(trials_dir))
    requeued = reconcile_study(study)
    if requeued:
        log.warning(
            "job %s: %d trial(s) left running by a previous driver were re-queued", job_id, requeued
        )
    total = spec.budget.trials
    bar = _ProgressBar(total, mode) if show_progress else None
    stop_event = _CANCEL_EVENTS.setdefault(job_id, threading.Event())
    stop_event.clear()
    started = time.perf_counter()
    clock = _SearchClock(study, spec.timeout_s)
    ran: list[int | None] = []
    # one Tune run per stage; a stage whose run ended short (a trial the searcher could not
    # record) waits for the next resume rather than being run twice here
    try:
        while (stage := _next_stage(spec, study)) is not None and stage.number not in ran:
            if ran and should_stop is not None and should_stop():
                stop_event.set()  # cancelled between two stages
            if clock.check():  # (also: a resumed job whose time was already spent)
                stop_event.set()
            if stop_event.is_set():
                break
            if not ran:
                _ray_init(ray_address, num_cpus)
                _check_placement(spec)
            ran.append(stage.number)
            _run_stage(
                spec,
                job_id,
                stage,
                storage,
                jdir,
                storage_path,
                lambda searcher: _Watcher(
                    study, total, mode, on_progress, should_stop, stop_event, searcher, bar, clock
                ),
            )
    finally:
        try:
            clock.save(force=True)
        except Exception as exc:  # the database may be what stopped the search
            log.warning("job %s: recording the search time: %s", job_id, exc)
    final = progress_of(study, total, mode)
    if on_progress is not None:
        on_progress(final)
    if bar is not None:
        bar.update(final)
        bar.close()
    # (a timeout that passed as the last trial finished stopped nothing)
    timed_out = clock.expired.is_set() and finished_count(study) < total
    cancelled = stop_event.is_set() and not timed_out
    best = None
    completed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    counts = f"no trial completed ({final['failed']} failed, {final['pruned']} pruned)"
    if cancelled and owns_job is not None and not owns_job():
        return {"status": "cancelled", "best": None, "progress": final, "job_id": job_id}
    if completed:
        best = export_best(job_id, db_url, artifacts_dir, study=study)
    elif timed_out:
        raise SearchFailed(f"{clock.message()}: {counts}")
    elif not cancelled:
        reason = failure_reason(study)
        raise SearchFailed(f"{reason} — {counts}" if reason else counts)
    result = {
        "status": "timed_out" if timed_out else "cancelled" if cancelled else "succeeded",
        "best": best,
        "progress": final,
        "seconds": time.perf_counter() - started,
        "job_id": job_id,
    }
    if timed_out:
        assert best is not None  # a search that completed no trial raised above
        finished = final["complete"] + final["pruned"] + final["failed"]
        result["error"] = (
            f"{clock.message()}: {finished} of {total} trials finished; the best so far "
            f"(trial {best['trial']}) is exported"
        )
    if show_progress:
        print_summary(result, study)
    return result


def _next_stage(spec: JobSpec, study: optuna.Study) -> Stage | None:
    """:func:`service.strategy.next_stage`; a second stage that cannot start (the first
    completed no trial) fails the search with the first failed trial's reason."""
    try:
        return next_stage(spec, study)
    except SearchFailed as exc:
        reason = failure_reason(study)
        raise SearchFailed(f"{reason} — {exc}" if reason else str(exc)) from exc


def _run_stage(
    spec: JobSpec,
    job_id: str,
    stage: Stage,
    storage: optuna.storages.RDBStorage,
    jdir: Path,
    storage_path: str | None,
    watcher_for: Callable[[Any], _Watcher],
) -> None:
    """One Tune run: ``stage.trials`` trials sampled by the stage's sampler and space,
    watched (progress, cancellation) by ``watcher_for(searcher)``."""
    from ray import tune

    from service._scheduler import RelaxationAwareASHA
    from workers.trainable import relax_trial

    mode = spec.objective.mode
    trials_dir = jdir / "trials"
    searcher = _make_searcher_class()(
        space=stage.suggest,
        metric=OBJECTIVE,
        mode=mode,
        sampler=stage.sampler,
        storage=storage,
        study_name=study_name(job_id),
        epochs=spec.budget.epochs,
        trials_dir=str(trials_dir),
        trial_attrs=stage.attrs,
    )
    if spec.scheduler == "asha":
        # a fresh scheduler per stage: a trial is only compared with trials of its stage
        asha = spec.asha
        scheduler = RelaxationAwareASHA(
            metric=OBJECTIVE,
            mode=mode,
            max_t=spec.budget.epochs,
            grace_period=asha.grace_period if asha else 1,
            reduction_factor=asha.reduction_factor if asha else 2.0,
        )
    else:
        scheduler = None
    trainable = tune.with_resources(
        tune.with_parameters(relax_trial, base=trial_base(spec, trials_dir)),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    # one experiment per driver run and stage; the job id keeps jobs apart on a shared
    # storage path
    suffix = str(int(time.time())) + ("" if stage.number is None else f"-stage{stage.number}")
    run_name = f"run-{job_id}-{suffix}" if storage_path else f"run-{suffix}"
    # Ray wants an absolute path or a URI (s3://, gs://, ...) for its storage
    ray_storage = str(storage_path or (jdir / "ray"))
    if "://" not in ray_storage:
        ray_storage = str(Path(ray_storage).expanduser().resolve())
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=stage.trials,
            max_concurrent_trials=min(spec.budget.max_concurrent, stage.trials),
            # keep trial actors (and their torch/escnn imports) warm between trials
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=ray_storage,
            stop=_CancelStopper(job_id),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=spec.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[_make_checkpoint_recorder()(run_name)],
        ),
    )
    watcher = watcher_for(searcher)
    watcher.start()
    _SEARCHERS[run_name] = searcher
    try:
        tuner.fit()
    finally:
        _SEARCHERS.pop(run_name, None)
        watcher.finished.set()
        watcher.join(timeout=5)
    searcher.close_timed_out()


#: the searchers of the Tune runs this process drives, by run name (Tune pickles its
#: callbacks with the run config, so the callback carries only the name)
_SEARCHERS: dict[str, Any] = {}


def _make_checkpoint_recorder():
    from ray.tune import Callback

    class CheckpointRecorder(Callback):
        """Records on the Optuna trial the epoch of the last checkpoint Tune has registered
        for it (``checkpoint_epoch``): the epoch a retry after a worker failure starts from."""

        def __init__(self, run_name: str) -> None:
            self.run_name = run_name

        def on_trial_save(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            searcher = _SEARCHERS.get(self.run_name)
            ot_trial = find_optuna_trial(searcher, trial.trial_id) if searcher else None
            epoch = (trial.last_result or {}).get("done_epochs")
            if ot_trial is None or not epoch:
                return
            try:
                ot_trial.set_user_attr("checkpoint_epoch", int(epoch))
            except Exception as exc:  # a bookkeeping write must not stop the search
                log.warning("could not record the checkpoint of trial %s: %s", ot_trial.number, exc)

    return CheckpointRecorder


#: cancellation flags of the jobs this process drives (Tune pickles its stopper, so the
#: stopper carries only the job id and looks its flag up here)
_CANCEL_EVENTS: dict[str, threading.Event] = {}


def _stopper_base():
    from ray.tune import Stopper

    return Stopper


class _CancelStopper(_stopper_base()):  # type: ignore[misc]  # Ray's Stopper, imported lazily
    """Tune stopper that ends the whole experiment once the job is cancelled."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def _set(self) -> bool:
        event = _CANCEL_EVENTS.get(self.job_id)
        return event is not None and event.is_set()

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self._set()

    def stop_all(self) -> bool:
        return self._set()


# ---- export of the best trial ----------------------------------------------------------
def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The COMPLETE trial with the best projected validation metric (never Ray's latest)."""
    completed = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None
    ]
    if not completed:
        raise ExportFailed("no completed trial to export")
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return (max if maximize else min)(completed, key=lambda t: float(t.value))  # type: ignore[arg-type]


def export_best(
    job_id: str, db_url: str, artifacts_dir: str | Path, *, study: optuna.Study | None = None
) -> dict[str, Any]:
    """Project, export, verify and store the best trial's model; attach it to its trial.

    Writes ``<artifacts>/jobs/<id>/best`` atomically (a failure leaves the trials intact and
    the export can be retried with ``relaxtune export JOB``).
    """
    from workers.training import CheckpointError, TrialConfig, export_trial

    storage = optuna_storage(db_url)
    study = study or optuna.load_study(study_name=study_name(job_id), storage=storage)
    spec = study.user_attrs["spec"]
    trial = best_trial(study)
    trial_dir = Path(
        trial.user_attrs.get("checkpoint")
        or Path(study.user_attrs["trials_dir"]) / f"{trial.number:05d}"
    )
    from search_spaces import check_hparams, parse_spec

    # the stored spec of an accepted job: its GPUs were the cluster's, the export runs on CPU
    job_spec = parse_spec(spec, gpu_available=lambda: True)
    # fixed parameters of the space are not Optuna params: rebuild the full dict
    hparams = check_hparams(_trial_hparams(job_spec, trial))
    out = job_dir(artifacts_dir, job_id) / "best"
    try:
        metrics = export_trial(
            TrialConfig.from_spec(job_spec, hparams, device="cpu"), trial_dir, out
        )
    except CheckpointError as exc:
        raise ExportFailed(f"trial {trial.number}: {exc}") from exc
    certificate = json.loads((out / "certificate.json").read_text())
    artifact_id = _attach_artifact(study, trial, out, artifacts_dir)
    # Optuna refuses edits to finished trials, so the link lives on the study
    study.set_user_attr("best_trial", trial.number)
    study.set_user_attr("best_checkpoint", str(out.resolve()))
    study.set_user_attr("best_artifact_id", artifact_id)
    best = {
        "trial": trial.number,
        "params": hparams,
        "searched_params": dict(trial.params),
        "stage": trial.user_attrs.get(STAGE_ATTR),
        "value": trial.value,
        "val_relaxed": trial.user_attrs.get("val_relaxed"),
        "metrics": {k: v for k, v in metrics.items() if k != "history"},
        "certificate": {
            k: certificate[k] for k in ("group", "max_error_exact", "tolerance", "passed")
        },
        "checkpoint": str(out.resolve()),
        "artifact_id": artifact_id,
    }
    (out.parent / "best.json").write_text(json.dumps(json_safe(best), indent=2, default=str) + "\n")
    return best


def _trial_hparams(job_spec: JobSpec, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The full flat hyperparameters a trial trained with (defaults + fixed + sampled)."""
    from search_spaces import FixedParam

    space = space_for_stage(job_spec.resolved_space(), trial.user_attrs.get(STAGE_ATTR))
    values: dict[str, Any] = {}
    for key, param in space.params.items():
        if key in trial.params:
            values[key] = trial.params[key]
        elif isinstance(param, FixedParam) and space.is_active(key, values):
            values[key] = param.value
    return values


def _attach_artifact(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, folder: Path, artifacts_dir: str | Path
) -> str | None:
    """Zip the checkpoint folder into Optuna's file-system artifact store.

    The artifact is attached to the study (Optuna does not allow attaching anything to a
    trial once it has finished); the study's ``best_trial`` / ``best_artifact_id`` user
    attributes link it to the trial it came from.
    """
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    store_dir = Path(artifacts_dir) / "optuna"
    store_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = shutil.make_archive(
            str(Path(tmp) / f"job-checkpoint-trial{trial.number}"), "zip", folder
        )
        return upload_artifact(
            artifact_store=FileSystemArtifactStore(str(store_dir)),
            file_path=archive,
            study_or_trial=study,
            mimetype="application/zip",
        )


# ---- console output --------------------------------------------------------------------
class _ProgressBar:
    """A rich progress bar: trials done/total, best projected metric, running trials."""

    def __init__(self, total: int, mode: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
        )
        self.task = self.progress.add_task("search", total=total, info="starting Ray")
        self.progress.start()
        self.mode = mode
        self._lock = threading.Lock()

    def update(self, p: dict[str, Any]) -> None:
        best = "-" if p["best_value"] is None else f"{p['best_value']:.4f}"
        info = (
            f"best {best} · running {p['running']} · "
            f"complete {p['complete']} pruned {p['pruned']} failed {p['failed']}"
        )
        if p.get("stage"):
            info = f"stage {p['stage']} · {info}"
        with self._lock:
            self.progress.update(
                self.task, completed=p["complete"] + p["pruned"] + p["failed"], info=info
            )

    def close(self) -> None:
        self.progress.stop()


def print_summary(result: dict[str, Any], study: optuna.Study) -> None:
    """The final summary table: best parameters, projected vs relaxed, certificate, path."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    p = result["progress"]
    console.print(
        f"job {result['job_id']}: {result['status']} in {result['seconds']:.0f}s — "
        f"{p['complete']} complete, {p['pruned']} pruned, {p['failed']} failed of {p['total']}"
    )
    for stage in stage_summary(study):
        best_value = "-" if stage["best_value"] is None else f"{stage['best_value']:.4f}"
        console.print(
            f"stage {stage['stage']} ({stage['searches']}): {stage['finished']} trials, "
            f"best {best_value} (#{stage['best_trial']})"
        )
    best = result.get("best")
    if not best:
        return
    table = Table(title=f"best trial #{best['trial']}")
    table.add_column("what")
    table.add_column("value")
    if best.get("stage") is not None:
        table.add_row("stage", str(best["stage"]))
    for key, value in sorted(best["searched_params"].items()):
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    metric = best["metrics"].get("metric", "metric")
    table.add_row(f"val_{metric} (projected)", f"{best['value']:.4f}")
    if best.get("val_relaxed") is not None:
        table.add_row(f"val_{metric} (relaxed)", f"{best['val_relaxed']:.4f}")
    test = best["metrics"].get(f"test_{metric}")
    if test is not None:
        table.add_row(f"test_{metric} (projected)", f"{test:.4f}")
    cert = best["certificate"]
    table.add_row(
        "equivariance error",
        f"{cert['max_error_exact']:.2e} (tol {cert['tolerance']:.0e}, "
        f"{'PASS' if cert['passed'] else 'FAIL'}, {cert['group']})",
    )
    table.add_row("checkpoint", best["checkpoint"])
    console.print(table)
