"""What the search hands Ray Tune: the searcher, its callback and its stopper.

* :func:`searcher_class` — ``RelaxOptunaSearch``, Ray's ``OptunaSearch`` writing each Tune
  trial's epochs, final metrics, state folder and outcome onto its Optuna trial;
* :func:`checkpoint_recorder` — the callback recording the epoch of each trial's last Tune
  checkpoint;
* :func:`cancel_stopper` — the stopper that ends a job's experiment once it is cancelled;
* :func:`ray_init` — the connection to Ray of a driver process.

Ray is imported only when one of these is made (the classes derive from Ray's), so importing
this module imports neither Ray nor torch. Tune pickles its callbacks and stopper with the
run configuration: they carry only a key (a run name, a job id) into this process's
:data:`SEARCHERS` and :data:`CANCEL_EVENTS`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from service._internals import (
    completed_trials_of,
    find_optuna_trial,
    optuna_study_of,
    optuna_trial_of,
    optuna_trials_of,
)
from service._json import json_safe
from service.artifacts import trial_dir
from service.study import (
    CANCELLED,
    CHECKPOINT,
    FINAL_ATTRS,
    HISTORY,
    HISTORY_BEFORE,
    RESUME_FROM,
    STOP_REASON,
    TIMED_OUT,
    history_keys,
)

log = logging.getLogger(__name__)

#: the searchers of the Tune runs this process drives, by run name
SEARCHERS: dict[str, Any] = {}
#: cancellation flags of the jobs this process drives, by job id
CANCEL_EVENTS: dict[str, threading.Event] = {}


def cancel_event(job_id: str) -> threading.Event:
    """The cancellation flag of a job this process drives (made at the first call)."""
    return CANCEL_EVENTS.setdefault(job_id, threading.Event())


def _cancel_requested(job_id: str) -> bool:
    event = CANCEL_EVENTS.get(job_id)
    return event is not None and event.is_set()


def _searcher_of(run_name: str) -> Any:
    return SEARCHERS.get(run_name)


def quiet_driver() -> None:
    """What a driver process sets before a Tune run: Optuna's per-trial log lines off,
    Ray Tune's console reporter in its plain form, no experiment-sync warnings."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def ray_init(ray_address: str | None, num_cpus: int | None) -> None:
    """Join the Ray cluster at ``ray_address`` (or ``RAY_ADDRESS``), else start a fresh local
    one; nothing when this process is already connected."""
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


def _define_searcher() -> type:
    from ray.tune.search.optuna import OptunaSearch

    from workers.trainable import RESUME_FROM as RESUME_FROM_KEY
    from workers.trainable import TRIAL_DIR, TRIAL_NUMBER

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
            folder = str(trial_dir(self.trials_dir, ot_trial.number))
            ot_trial.set_user_attr(CHECKPOINT, folder)
            config[TRIAL_NUMBER] = ot_trial.number
            config[TRIAL_DIR] = folder
            resume = ot_trial.user_attrs.get(RESUME_FROM)
            if resume:
                config[RESUME_FROM_KEY] = resume
                # the epochs trained before the interruption count for this trial too
                for entry in ot_trial.user_attrs.get(HISTORY_BEFORE, []):
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
            entry = {k: result.get(k) for k in history_keys()}
            history = self._history.setdefault(
                trial_id, list(ot_trial.user_attrs.get(HISTORY_BEFORE, []))
            )
            self._last[trial_id] = result
            if history and history[-1].get("epoch") == entry["epoch"]:
                # already recorded: Ray passes the stopping result again on completion, and a
                # trial resumed after its last epoch re-reports that epoch; the trial must
                # still carry its history
                if HISTORY not in ot_trial.user_attrs:
                    ot_trial.set_user_attr(HISTORY, history)
                return
            history.append(json_safe(entry))
            if result.get("first_batch_at") and "first_batch_at" not in ot_trial.user_attrs:
                # when the trial began training (its first attempt's first batch)
                ot_trial.set_user_attr("first_batch_at", float(result["first_batch_at"]))
            value = result.get(self.metric)
            if value is not None and math.isfinite(value):
                ot_trial.report(float(value), epoch)
            ot_trial.set_user_attr(HISTORY, history)

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            if trial_id in completed_trials_of(self):
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
                ot_trial.set_user_attr(STOP_REASON, f"diverged: {last['diverged']}")
                state, value = TrialState.FAIL, None
            elif error:
                ot_trial.set_user_attr(STOP_REASON, trial_error(ot_trial, self.trials_dir))
                state, value = TrialState.FAIL, None
            elif value is None or not math.isfinite(value):
                ot_trial.set_user_attr(STOP_REASON, "no finite metric")
                state, value = TrialState.FAIL, None
            elif self.cancelled and done < self.epochs:
                ot_trial.set_user_attr(STOP_REASON, self.cancel_reason)
                state, value = TrialState.FAIL, None
            elif done < self.epochs:
                ot_trial.set_user_attr(STOP_REASON, f"pruned by the scheduler after epoch {done}")
                state, value = TrialState.PRUNED, None
            else:
                state = TrialState.COMPLETE
            try:
                optuna_study_of(self).tell(ot_trial, value, state=state)
            except Exception as exc:  # a trial already finished elsewhere must not stop the search
                log.warning("could not record trial %s: %s", ot_trial.number, exc)
            completed_trials_of(self).add(trial_id)

        def close_timed_out(self) -> None:
            """Trials still running when the timeout ended the experiment: Tune stops them
            without telling the searcher, so record them here (FAIL ``job timed out``, or
            COMPLETE when their last epoch had been reported). A cancel or a shutdown leaves
            them RUNNING: a resume re-queues them to continue."""
            if self.cancel_reason != TIMED_OUT:
                return
            for trial_id, ot_trial in optuna_trials_of(self).items():
                if trial_id in completed_trials_of(self):
                    continue
                last = self._last.get(trial_id)
                if last and "epoch" in last:
                    self.on_trial_complete(trial_id, last)
                    continue
                ot_trial.set_user_attr(STOP_REASON, TIMED_OUT)
                try:
                    optuna_study_of(self).tell(ot_trial, None, state=TrialState.FAIL)
                except Exception as exc:
                    log.warning("could not record trial %s: %s", ot_trial.number, exc)
                completed_trials_of(self).add(trial_id)

    return RelaxOptunaSearch


def trial_error(ot_trial: optuna.trial.Trial, trials_dir: str) -> str:
    """``error: <first line of the exception>`` for a trial Ray reports as errored: the
    trainable leaves that line in its folder (``workers.trainable.ERROR_FILE``); a trial
    whose process died without raising has none."""
    folder = Path(ot_trial.user_attrs.get(CHECKPOINT) or trial_dir(trials_dir, ot_trial.number))
    try:
        text = (folder / "error.txt").read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    if not text:
        return "error: the trial's process died without an exception (killed? out of memory?)"
    return f"error: {text.splitlines()[0]}"


def _define_checkpoint_recorder() -> type:
    from ray.tune import Callback

    class CheckpointRecorder(Callback):
        """Records on the Optuna trial the epoch of the last checkpoint Tune has registered
        for it (``checkpoint_epoch``): the epoch a retry after a worker failure starts from."""

        def __init__(self, run_name: str) -> None:
            self.run_name = run_name

        def on_trial_save(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            searcher = _searcher_of(self.run_name)
            ot_trial = find_optuna_trial(searcher, trial.trial_id) if searcher else None
            epoch = (trial.last_result or {}).get("done_epochs")
            if ot_trial is None or not epoch:
                return
            try:
                ot_trial.set_user_attr("checkpoint_epoch", int(epoch))
            except Exception as exc:  # a bookkeeping write must not stop the search
                log.warning("could not record the checkpoint of trial %s: %s", ot_trial.number, exc)

    return CheckpointRecorder


def checkpoint_recorder(run_name: str) -> Any:
    """The Tune callback recording checkpoint epochs of the searcher in ``SEARCHERS[run_name]``."""
    return _lazy_class("CheckpointRecorder")(run_name)


def _define_cancel_stopper() -> type:
    from ray.tune import Stopper

    class CancelStopper(Stopper):
        """Tune stopper that ends the whole experiment once the job is cancelled."""

        def __init__(self, job_id: str) -> None:
            self.job_id = job_id

        def __call__(self, trial_id: str, result: dict) -> bool:
            return _cancel_requested(self.job_id)

        def stop_all(self) -> bool:
            return _cancel_requested(self.job_id)

    return CancelStopper


def cancel_stopper(job_id: str) -> Any:
    """The Tune stopper of a job: it stops everything once :func:`cancel_event` is set."""
    return _lazy_class("CancelStopper")(job_id)


def searcher_class() -> type:
    """``RelaxOptunaSearch``, Ray's ``OptunaSearch`` with the states a user of Optuna expects."""
    return _lazy_class("RelaxOptunaSearch")


#: the classes deriving from Ray's, each defined (importing Ray) when first asked for
_LAZY_CLASSES: dict[str, Callable[[], type]] = {
    "RelaxOptunaSearch": _define_searcher,
    "CheckpointRecorder": _define_checkpoint_recorder,
    "CancelStopper": _define_cancel_stopper,
}


def _lazy_class(name: str) -> type:
    return lazy_class(__name__, name, _LAZY_CLASSES[name])


def lazy_class(module_name: str, name: str, define: Callable[[], type]) -> type:
    """The class ``define()`` makes (one deriving from a Ray class, so Ray is imported only
    now), defined once and then kept as the attribute ``name`` of module ``module_name``: Tune
    pickles its instances by reference (their state is a run name, a job id or a key, never
    this process's searchers or events), and the module's ``__getattr__`` defines it again
    in a process that loads one."""
    module = sys.modules[module_name]
    cls = module.__dict__.get(name)
    if cls is None:
        cls = define()
        cls.__module__, cls.__qualname__ = module_name, name
        setattr(module, name, cls)
    return cls


def __getattr__(name: str) -> Any:
    # how pickle finds a lazily defined class when it loads one of its instances
    if name in _LAZY_CLASSES:
        return _lazy_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
