"""The gain report driver: the job's best configuration retrained on the report seeds, as
found and with the relaxation off, as Ray Tune trials of the job (``service/gain.py`` says
what a report is and reads it back).

    search study "job-<id>" (best_trial, set by the export)
        ──> plan: k fixed seeds × {as_found, relaxation_off}            service.gain.plan
        ──> study "job-<id>-report": one Optuna trial per run, tagged report_arm/report_seed
        ──> Ray Tune: workers.trainable.report_trial per missing run (the spec's resources,
            retries, max_concurrent; the job's cancel flag stops them)
        ──> each run's checkpoint folder <artifacts>/jobs/<id>/report/<arm>-seed<seed>/model
            (metrics.json: the projected model's test metric, measured once)
        ──> the report (paired statistics, verdict) ──> "gain" in best/metrics.json

Resuming: runs already COMPLETE (or ended by their own outcome, e.g. a diverged loss) are
kept; runs a dead driver left RUNNING, and runs stopped by a cancel, are marked FAIL and run
again in a new trial, continuing from their last epoch state (``<run>/state``).

Ray and torch are imported when a report runs, not at import; only the controller, the
CLI's foreground commands and the benchmarks run it.
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

from search_spaces import JobSpec, SpecError, check_hparams
from service import gain
from service._internals import fail_left_running
from service._json import finite_or_none, json_safe
from service.artifacts import best_dir, ray_dir, report_dir, report_study_name, study_name
from service.errors import Conflict
from service.search import trial_base
from service.searcher import cancel_event, cancel_stopper, lazy_class, quiet_driver, ray_init
from service.study import BEST_TRIAL, CANCELLED, optuna_storage, trial_hparams

log = logging.getLogger(__name__)

#: how often the watcher reports progress and looks at the cancel flag
_POLL_S = 1.0


def _best_search_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    number = study.user_attrs.get(BEST_TRIAL)
    if number is None:
        raise Conflict(
            "the job has no exported best trial yet: a gain report retrains the best "
            "configuration of a finished search"
        )
    for trial in study.get_trials(deepcopy=False):
        if trial.number == number:
            return trial
    raise Conflict(f"the study has no trial {number} (its best_trial attribute)")


def _reconcile(study: optuna.Study) -> int:
    """Mark runs a dead driver left RUNNING as interrupted (they run again)."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        fail_left_running(study, trial, gain.ATTR_STOP, gain.RUN_AGAIN)
        count += 1
    return count


def _settled_keys(study: optuna.Study, source_trial: int) -> set[tuple[str, int]]:
    """(arm, seed) of the runs that need no new trial: COMPLETE, or ended by an outcome."""
    done: set[tuple[str, int]] = set()
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        if attrs.get(gain.ATTR_SOURCE) != source_trial or attrs.get(gain.ATTR_ARM) not in gain.ARMS:
            continue
        key = (attrs[gain.ATTR_ARM], int(attrs.get(gain.ATTR_SEED, -1)))
        if trial.state == TrialState.COMPLETE or (
            trial.state == TrialState.FAIL and not gain.is_interrupted(attrs.get(gain.ATTR_STOP))
        ):
            done.add(key)
    return done


class _Recording:
    """Records each run in its own Optuna trial (driver side): the trial is created when Tune
    starts the run (a run that never started leaves no record), then gets its epochs and its
    outcome.

    Tune pickles its callbacks with the experiment state, so the callback
    (:class:`_ReportRecorder`) carries only a key into :data:`_RECORDINGS`.
    """

    def __init__(
        self,
        attrs: list[dict[str, Any]],
        study: optuna.Study,
        cancelled: threading.Event,
        echo: Callable[[str], None] | None,
        quantity: gain.Quantity,
    ) -> None:
        self.attrs, self.study = attrs, study
        self.cancelled, self.echo, self.quantity = cancelled, echo, quantity
        self.trials: dict[int, optuna.trial.Trial] = {}
        self.history: dict[int, list[dict[str, Any]]] = {}
        self.final: dict[int, dict[str, Any]] = {}
        self.closed: set[int] = set()

    def start(self, index: int) -> None:
        if index in self.trials:  # Ray retrying the run: the same record goes on
            return
        ot = self.study.ask()
        for key, value in self.attrs[index].items():
            ot.set_user_attr(key, value)
        self.trials[index] = ot

    def result(self, index: int, result: dict[str, Any]) -> None:
        self.start(index)
        if "test_value" in result or "diverged" in result:
            self.final[index] = dict(result)
            return
        epoch = result.get("epoch")
        if epoch is None:
            return
        history = self.history.setdefault(index, [])
        if history and history[-1].get("epoch") == epoch:
            return
        keys = ("epoch", "theta", "val_projected", "val_relaxed", "train_loss")
        history.append({k: json_safe(result.get(k)) for k in keys})
        ot = self.trials[index]
        value = finite_or_none(result.get("val_projected"))
        if value is not None:
            ot.report(value, int(epoch))
        ot.set_user_attr("history", history)

    def complete(self, index: int) -> None:
        self.start(index)
        ot = self.trials[index]
        final = self.final.get(index, {})
        test, val = finite_or_none(final.get("test_value")), finite_or_none(final.get("val_value"))
        if final.get("diverged"):
            self.close(index, TrialState.FAIL, None, f"diverged: {final['diverged']}")
        elif test is not None and val is not None:
            ot.set_user_attr(gain.ATTR_TEST, test)
            ot.set_user_attr(gain.ATTR_VAL, val)
            ot.set_user_attr("checkpoint", final.get("checkpoint_dir"))
            self.close(index, TrialState.COMPLETE, val, None)
            if self.echo is not None:
                arm, seed = ot.user_attrs.get(gain.ATTR_ARM), ot.user_attrs.get(gain.ATTR_SEED)
                shown = f"{self.quantity.of(test):.4g}"
                self.echo(f"  {arm} seed {seed}: {self.quantity.label} {shown}")
        elif final:
            self.close(index, TrialState.FAIL, None, "no finite test metric")
        else:
            reason = CANCELLED if self.cancelled.is_set() else gain.STOPPED_SHORT
            self.close(index, TrialState.FAIL, None, reason)

    def close(self, index: int, state: TrialState, value: float | None, reason: str | None) -> None:
        if index in self.closed or index not in self.trials:
            return
        ot = self.trials[index]
        if reason is not None:
            ot.set_user_attr(gain.ATTR_STOP, reason)
        try:
            self.study.tell(ot.number, value, state=state)
        except Exception as exc:  # a run already closed elsewhere must not stop the rest
            log.warning("could not record report run %s: %s", ot.number, exc)
        self.closed.add(index)


#: the recordings of the reports this process drives, by key (see :class:`_Recording`)
_RECORDINGS: dict[str, _Recording] = {}


def _define_report_recorder() -> type:
    from ray.tune import Callback

    class _ReportRecorder(Callback):
        """Tune callback handing each report run's results to its :class:`_Recording` (kept as
        an attribute of this module, ``searcher.lazy_class``, so that Tune pickles it by
        reference, with nothing but its key)."""

        def __init__(self, key: str) -> None:
            self.key = key

        def _target(self, trial: Any) -> tuple[_Recording, int]:
            from workers.trainable import REPORT_RUN

            return _RECORDINGS[self.key], int(trial.config[REPORT_RUN])

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recording, index = self._target(trial)
            recording.start(index)

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            recording, index = self._target(trial)
            recording.result(index, result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recording, index = self._target(trial)
            recording.complete(index)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recording, index = self._target(trial)
            error = getattr(trial, "error_file", None) or "see the Ray logs"
            recording.close(index, TrialState.FAIL, None, f"error: {error}")

    return _ReportRecorder


def _report_recorder(key: str) -> Any:
    return lazy_class(__name__, "_ReportRecorder", _define_report_recorder)(key)


def __getattr__(name: str) -> Any:
    # how pickle finds the lazily defined callback when it loads one
    if name == "_ReportRecorder":
        return lazy_class(__name__, name, _define_report_recorder)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_report(
    spec: JobSpec, job_id: str, db_url: str, *, storage: Any = None, seeds: int | None = None
) -> dict[str, Any]:
    """The job's report as recorded in its database (``service.gain.build_report``)."""
    storage = storage or optuna_storage(db_url)
    try:
        trials = optuna.load_study(
            study_name=report_study_name(job_id), storage=storage
        ).get_trials(deepcopy=False)
    except KeyError:
        trials = []
    requested = seeds or (spec.report.seeds if spec.report else None)
    return gain.build_report(
        trials,
        job_id=job_id,
        metric=spec.objective.metric.removeprefix("val_"),
        mode=spec.objective.mode,
        requested_seeds=requested,
        search_seed=spec.seed,
    )


def write_gain(artifacts_dir: str | Path, job_id: str, report: dict[str, Any]) -> Path | None:
    """Put the report's figures under ``gain`` in the best checkpoint's ``metrics.json``
    (atomically: a reader sees the old file or the new one). ``None`` without a checkpoint."""
    path = best_dir(artifacts_dir, job_id) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    metrics["gain"] = gain.gain_for_metrics(report)
    tmp = path.with_name(".metrics.json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


#: Tune runs one driver makes over a report's unfinished runs before it records them as failed
TUNE_RUNS = 2


def _give_up(
    study: optuna.Study, source_trial: int, runs: list[gain.Run], folder: Path, attempts: int
) -> None:
    """Record ``runs`` as failed for good: a new FAIL record per run (the latest record of a
    run is the one a report reads) whose reason is not an interruption, so no later driver
    trains it again."""
    latest: dict[tuple[str, int], optuna.trial.FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        if attrs.get(gain.ATTR_SOURCE) == source_trial and attrs.get(gain.ATTR_ARM) in gain.ARMS:
            latest[(attrs[gain.ATTR_ARM], int(attrs.get(gain.ATTR_SEED, -1)))] = trial
    for run in runs:
        record = latest.get(run.key)
        if record is None:
            reason = f"never started: Tune ended {attempts} runs before it"
        else:
            last = record.user_attrs.get(gain.ATTR_STOP) or "no reason recorded"
            reason = f"failed in {attempts} Tune runs: {last}"
        ot = study.ask()
        for key, value in {
            gain.ATTR_ARM: run.arm,
            gain.ATTR_SEED: run.seed,
            gain.ATTR_SOURCE: source_trial,
            gain.ATTR_HPARAMS: run.hparams,
            gain.ATTR_DIR: str(folder / run.folder),
            gain.ATTR_STOP: reason,
        }.items():
            ot.set_user_attr(key, value)
        study.tell(ot.number, None, state=TrialState.FAIL)


def run_report(
    spec: JobSpec,
    job_id: str,
    db_url: str,
    artifacts_dir: str | Path,
    *,
    seeds: int | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    ray_address: str | None = None,
    storage_path: str | None = None,
    show_progress: bool = False,
    num_cpus: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) the gain report of a job whose search has finished and exported its
    best trial, on ``seeds`` seeds (default: the spec's ``report.seeds``).

    Returns ``{"status": <the report's status> | "cancelled", "report": {...}}``; the report
    is also written into the best checkpoint's ``metrics.json`` once every run has ended.
    """
    k = seeds or (spec.report.seeds if spec.report else None)
    if not k:
        raise SpecError(
            "report.seeds", "no report seeds: give seeds or set report.seeds in the spec"
        )
    quiet_driver()
    storage = optuna_storage(db_url)
    try:
        search = optuna.load_study(study_name=study_name(job_id), storage=storage)
    except KeyError as exc:
        raise Conflict(f"job {job_id} has no search study: search first") from exc
    best = _best_search_trial(search)
    hparams = check_hparams(trial_hparams(spec, best))
    runs = gain.plan(hparams, k, spec.seed)
    quantity = gain.quantity_for(spec.objective.metric.removeprefix("val_"), spec.objective.mode)
    study = optuna.create_study(
        storage=storage,
        study_name=report_study_name(job_id),
        sampler=optuna.samplers.RandomSampler(seed=spec.seed),
        direction="maximize" if spec.objective.mode == "max" else "minimize",
        load_if_exists=True,
    )
    study.set_user_attr("job_id", job_id)
    study.set_user_attr(gain.ATTR_SOURCE, best.number)
    if _reconcile(study):
        log.warning("job %s: report runs left running by a previous driver run again", job_id)
    settled = _settled_keys(study, best.number)
    todo = [run for run in runs if run.key not in settled]
    echo = print if show_progress else None
    stop_event = cancel_event(job_id)
    stop_event.clear()
    folder = report_dir(artifacts_dir, job_id).resolve()

    def progress() -> dict[str, Any]:
        return read_report(spec, job_id, db_url, storage=storage, seeds=k)

    if echo is not None:
        echo(
            f"gain report of job {job_id}: best trial #{best.number} on seeds "
            f"{gain.report_seeds(k, spec.seed)}; {len(todo)} of {len(runs)} runs to train"
        )
    if should_stop is not None and should_stop():
        stop_event.set()  # cancelled (or shutting down) before the first run
    attempts = 0
    while todo and not stop_event.is_set():
        _train(
            spec,
            job_id,
            todo,
            study=study,
            source_trial=best.number,
            folder=folder,
            storage_path=storage_path,
            ray_storage_path=storage_path or ray_dir(artifacts_dir, job_id),
            ray_address=ray_address,
            num_cpus=num_cpus,
            stop_event=stop_event,
            should_stop=should_stop,
            on_progress=on_progress,
            progress=progress,
            echo=echo,
            quantity=quantity,
        )
        attempts += 1
        todo = [run for run in runs if run.key not in _settled_keys(study, best.number)]
        if todo and attempts >= TUNE_RUNS and not stop_event.is_set():
            # Tune ended the same runs unfinished twice (an error after the spec's retries,
            # or never started): record that as their outcome, so the report ends
            _give_up(study, best.number, todo, folder, attempts)
            break
    report = progress()
    if on_progress is not None:
        on_progress(report["progress"])
    if report["status"] in ("complete", "incomplete", "nothing_to_compare"):
        write_gain(artifacts_dir, job_id, report)
    if echo is not None and report["verdict"]:
        echo(report["verdict"])
    status = "cancelled" if stop_event.is_set() else report["status"]
    return {"status": status, "report": report}


def _train(
    spec: JobSpec,
    job_id: str,
    todo: list[gain.Run],
    *,
    study: optuna.Study,
    source_trial: int,
    folder: Path,
    storage_path: str | None,
    ray_storage_path: str | Path,
    ray_address: str | None,
    num_cpus: int | None,
    stop_event: threading.Event,
    should_stop: Callable[[], bool] | None,
    on_progress: Callable[[dict[str, Any]], None] | None,
    progress: Callable[[], dict[str, Any]],
    echo: Callable[[str], None] | None,
    quantity: gain.Quantity,
) -> None:
    """One Tune run over the missing report runs, each recorded in a new trial of ``study``."""
    from ray import tune

    from workers.trainable import REPORT_RUN, report_trial

    ray_init(ray_address, num_cpus)
    attrs = [
        {
            gain.ATTR_ARM: run.arm,
            gain.ATTR_SEED: run.seed,
            gain.ATTR_SOURCE: source_trial,
            gain.ATTR_HPARAMS: run.hparams,
            gain.ATTR_DIR: str(folder / run.folder),
        }
        for run in todo
    ]
    base = {
        **trial_base(spec),
        "data_seed": spec.seed,  # the search's data split for every run
        "runs": [
            {"hparams": run.hparams, "seed": run.seed, "dir": str(folder / run.folder)}
            for run in todo
        ],
    }
    trainable = tune.with_resources(
        tune.with_parameters(report_trial, base=base),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    key = f"{job_id}-{time.monotonic_ns()}"
    recording = _RECORDINGS[key] = _Recording(attrs, study, stop_event, echo, quantity)
    ray_storage = str(ray_storage_path)
    if "://" not in ray_storage:
        ray_storage = str(Path(ray_storage).expanduser().resolve())
    stamp = int(time.time())
    tuner = tune.Tuner(
        trainable,
        param_space={REPORT_RUN: tune.grid_search(list(range(len(todo))))},
        tune_config=tune.TuneConfig(
            num_samples=1,
            max_concurrent_trials=min(spec.budget.max_concurrent, len(todo)),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"report-{job_id}-{stamp}" if storage_path else f"report-{stamp}",
            storage_path=ray_storage,
            stop=cancel_stopper(job_id),
            callbacks=[_report_recorder(key)],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=spec.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(_POLL_S):
            try:
                if should_stop is not None and should_stop():
                    stop_event.set()
                if on_progress is not None:
                    on_progress(progress()["progress"])
            except Exception as exc:  # a database hiccup must not stop the report
                log.warning("report progress poll failed: %s", exc)

    watcher = threading.Thread(target=watch, name=f"report-watch-{job_id}", daemon=True)
    watcher.start()
    try:
        tuner.fit()
    finally:
        finished.set()
        watcher.join(timeout=5)
        reason = CANCELLED if stop_event.is_set() else gain.STOPPED_SHORT
        for index in range(len(todo)):  # anything Tune ended without telling the recording
            recording.close(index, TrialState.FAIL, None, reason)
        del _RECORDINGS[key]
