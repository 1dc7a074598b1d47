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

Who does what: this module runs the stages and watches them; ``service.searcher`` is what
Tune is handed (the searcher, its callback, the cancel stopper); ``service.study`` reads and
reconciles the study; ``service.export`` exports the best trial; ``service.console`` draws
the foreground progress. Ray and torch are imported when a search runs, not at import.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search_spaces import JobSpec, SpecError
from service.artifacts import ray_dir, study_name, trials_dir
from service.best_trial import BestTrial
from service.console import ProgressBar, print_summary
from service.errors import SearchFailed
from service.export import export_best
from service.searcher import (
    SEARCHERS,
    cancel_event,
    cancel_stopper,
    checkpoint_recorder,
    quiet_driver,
    ray_init,
    searcher_class,
)
from service.strategy import Stage, next_stage
from service.study import (
    OBJECTIVE,
    SEARCH_SECONDS,
    STUDY_JOB_ID,
    STUDY_SPEC,
    STUDY_TRIALS_DIR,
    TIMED_OUT,
    failure_reason,
    finished_count,
    optuna_storage,
    progress_of,
    reconcile_study,
)

log = logging.getLogger(__name__)


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


def _check_placement(spec: JobSpec) -> None:
    """Fail at once, saying why, when no node of the Ray cluster could ever run one trial
    (Ray would queue it forever and the job would show ``running``)."""
    import ray

    from service._placement import placement_problem

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    problem = placement_problem(spec.resources.cpu, spec.resources.gpu, nodes, "the Ray cluster")
    if problem is not None:
        raise SearchFailed(f"{problem[0]}: {problem[1]}")


def trial_base(spec: Any) -> dict[str, Any]:
    """What every trial of ``spec`` shares: the ``base`` argument of
    ``workers.trainable.relax_trial`` (``trial``: the job's :class:`TrialConfig` as a dict,
    without hyperparameters)."""
    from workers.training import TrialConfig

    return {"trial": TrialConfig.from_spec(spec, {}).to_dict()}


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
    "progress": {...}}`` (``best``: :meth:`BestTrial.to_dict` of the exported best trial;
    ``timed_out`` also carries ``error``: the spec's ``timeout_s`` passed,
    counted over every driver run of the job; the trials finished so far are kept and the best
    of them exported).
    Raises ``SpecError`` for a spec the task cannot honour and :class:`SearchFailed` when no
    trial completed (its message starts with the first failed trial's reason).
    """
    check_objective(spec)
    quiet_driver()
    trials = trials_dir(artifacts_dir, job_id).resolve()
    trials.mkdir(parents=True, exist_ok=True)
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
    study.set_user_attr(STUDY_JOB_ID, job_id)
    study.set_user_attr(STUDY_SPEC, json.loads(spec.to_json()))
    study.set_user_attr(STUDY_TRIALS_DIR, str(trials))
    requeued = reconcile_study(study)
    if requeued:
        log.warning(
            "job %s: %d trial(s) left running by a previous driver were re-queued", job_id, requeued
        )
    total = spec.budget.trials
    bar = ProgressBar(total, mode) if show_progress else None
    stop_event = cancel_event(job_id)
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
                ray_init(ray_address, num_cpus)
                _check_placement(spec)
            ran.append(stage.number)
            _run_stage(
                spec,
                job_id,
                stage,
                storage,
                trials,
                storage_path or ray_dir(artifacts_dir, job_id),
                bool(storage_path),
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
    best: dict[str, Any] | None = None  # BestTrial.to_dict(): what the job row records
    exported: BestTrial | None = None
    completed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    counts = f"no trial completed ({final['failed']} failed, {final['pruned']} pruned)"
    if cancelled and owns_job is not None and not owns_job():
        return {"status": "cancelled", "best": None, "progress": final, "job_id": job_id}
    if completed:
        exported = export_best(job_id, db_url, artifacts_dir, study=study)
        best = exported.to_dict()
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
        assert exported is not None  # a search that completed no trial raised above
        finished = final["complete"] + final["pruned"] + final["failed"]
        result["error"] = (
            f"{clock.message()}: {finished} of {total} trials finished; the best so far "
            f"(trial {exported.trial}) is exported"
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
    trials: Path,
    ray_storage_path: str | Path,
    shared_storage: bool,
    watcher_for: Callable[[Any], _Watcher],
) -> None:
    """One Tune run: ``stage.trials`` trials sampled by the stage's sampler and space,
    watched (progress, cancellation) by ``watcher_for(searcher)``."""
    from ray import tune

    from service._scheduler import RelaxationAwareASHA
    from workers.trainable import relax_trial

    mode = spec.objective.mode
    searcher = searcher_class()(
        space=stage.suggest,
        metric=OBJECTIVE,
        mode=mode,
        sampler=stage.sampler,
        storage=storage,
        study_name=study_name(job_id),
        epochs=spec.budget.epochs,
        trials_dir=str(trials),
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
        tune.with_parameters(relax_trial, base=trial_base(spec)),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    # one experiment per driver run and stage; the job id keeps jobs apart on a shared
    # storage path
    suffix = str(int(time.time())) + ("" if stage.number is None else f"-stage{stage.number}")
    run_name = f"run-{job_id}-{suffix}" if shared_storage else f"run-{suffix}"
    # Ray wants an absolute path or a URI (s3://, gs://, ...) for its storage
    ray_storage = str(ray_storage_path)
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
            stop=cancel_stopper(job_id),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=spec.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[checkpoint_recorder(run_name)],
        ),
    )
    watcher = watcher_for(searcher)
    watcher.start()
    SEARCHERS[run_name] = searcher
    try:
        tuner.fit()
    finally:
        SEARCHERS.pop(run_name, None)
        watcher.finished.set()
        watcher.join(timeout=5)
    searcher.close_timed_out()
