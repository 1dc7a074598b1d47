"""The Ray Tune trainable: one relaxed training run reporting every epoch.

The only module on the worker side that imports Ray. Each epoch it reports the
:class:`~workers.training.EpochReport` keys (``val_projected`` is the objective) with a Tune
checkpoint, so Ray can retry a trial whose worker died from its last epoch, and it keeps
the same state under ``<trial_dir>/state.pt`` so a resumed job can continue a trial whose
driver died.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from workers.training import EpochReport, Trainer, TrialConfig, TrialDivergedError

log = logging.getLogger(__name__)

#: keys the driver adds to a trial's config besides the flat hyperparameters
TRIAL_NUMBER = "_trial_number"
TRIAL_DIR = "_trial_dir"
RESUME_FROM = "_resume_from"
#: file in a trial's folder holding the first line of the exception that ended it (the
#: driver records it as the trial's ``stop_reason``; Ray only hands it an error flag)
ERROR_FILE = "error.txt"


def first_line(exc: BaseException, limit: int = 500) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters)."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TuneReportHook:
    """Saves the trial state and reports the epoch's metrics (with a checkpoint) to Tune.

    Each report also carries ``first_batch_at``: the wall-clock time (``time.time()``) at
    which this attempt of the trial began its first training batch."""

    def __init__(self, trial_dir: Path) -> None:
        self.trial_dir = trial_dir
        self.first_batch_at: float | None = None

    def on_first_batch(self, trainer: Trainer) -> None:
        if self.first_batch_at is None:
            self.first_batch_at = time.time()

    def on_epoch_end(self, report: EpochReport, trainer: Trainer) -> None:
        trainer.save_state(self.trial_dir)
        metrics = {k: v for k, v in report.as_dict().items() if v is not None}
        metrics["done_epochs"] = trainer.epoch
        if self.first_batch_at is not None:
            metrics["first_batch_at"] = self.first_batch_at
        # which Ray node ran the epoch: nodes of one host share node_ip/hostname in results
        metrics["node_id"] = ray.get_runtime_context().get_node_id()
        # which GPU(s) Ray gave the trial ("" without GPUs), and what torch was shown of them
        metrics["gpu_ids"] = ",".join(str(i) for i in ray.get_gpu_ids())
        metrics["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        metrics["device"] = str(trainer.device)
        with tempfile.TemporaryDirectory(prefix="relaxtune-ckpt-") as tmp:
            shutil.copy2(self.trial_dir / "state.pt", Path(tmp) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def relax_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """Ray Tune function trainable.

    ``config``: the flat hyperparameters sampled by Optuna plus ``_trial_number`` (the
    Optuna trial number), ``_trial_dir`` (the trial's state folder, named by the driver) and
    optionally ``_resume_from`` (state folder of a trial that a dead driver left behind).
    ``base``: the job's trial configuration (constant for every trial, passed with
    ``tune.with_parameters``).
    """
    hparams = {k: v for k, v in config.items() if not k.startswith("_")}
    number = int(config[TRIAL_NUMBER])
    trial_dir = Path(config[TRIAL_DIR])
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / ERROR_FILE).unlink(missing_ok=True)  # from an attempt Ray retried
    try:
        _run_trial(config, base, hparams, number, trial_dir)
    except Exception as exc:
        (trial_dir / ERROR_FILE).write_text(first_line(exc) + "\n", encoding="utf-8")
        raise


def _run_trial(
    config: dict[str, Any],
    base: dict[str, Any],
    hparams: dict[str, Any],
    number: int,
    trial_dir: Path,
) -> None:
    trial_config = TrialConfig.from_dict({**base["trial"], "hparams": hparams})
    trainer = Trainer(trial_config)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # Ray retrying this trial after a worker failure
        with checkpoint.as_directory() as directory:
            trainer.load_state(directory)
        log.info("trial %s resumed by Ray at epoch %s", number, trainer.epoch)
    elif config.get(RESUME_FROM) and trainer.load_state(config[RESUME_FROM]):
        log.info("trial %s continues an interrupted trial at epoch %s", number, trainer.epoch)
    hook = TuneReportHook(trial_dir)
    if trainer.epoch >= trial_config.epochs and trainer.reports:
        # everything was trained before the interruption: report the last epoch again
        hook.on_epoch_end(trainer.reports[-1], trainer)
        return
    try:
        trainer.fit([hook])
    except TrialDivergedError as exc:
        # a NaN/inf loss is a property of the hyperparameters, not a crash to retry: report
        # the reason so the search records the trial FAIL with it, and go on
        log.warning("trial %s diverged: %s", number, exc)
        tune.report(
            {"diverged": str(exc), "done_epochs": trainer.epoch, "val_projected": float("nan")}
        )


#: key of a gain-report run's index (into ``base["runs"]``) in its Tune config
REPORT_RUN = "report_run"


def report_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """Ray Tune function trainable of one gain-report run (``service/report.py``).

    ``config[REPORT_RUN]``: the index of this run in ``base["runs"]``, whose entries hold
    ``hparams``, ``seed`` (the training seed) and ``dir`` (the run's folder: ``state/`` holds
    the epoch state it resumes from, ``model/`` the checkpoint folder of its final projected
    model). ``base`` also holds ``trial`` (the job's ``TrialConfig`` as a dict) and
    ``data_seed`` (the search's seed, so every run sees the search's data split).

    Trains like a search trial (one Tune report per epoch), then writes the checkpoint folder,
    whose ``metrics.json`` holds the projected model's test metric, measured once: a run
    resumed after that point reads it back instead of measuring again. The last report carries
    ``test_value`` and ``val_value``; a diverged run reports ``diverged`` instead.
    """
    from workers.training import write_checkpoint

    run = base["runs"][int(config[REPORT_RUN])]
    run_dir = Path(run["dir"])
    state_dir, model_dir = run_dir / "state", run_dir / "model"
    trial_config = TrialConfig.from_dict(
        {
            **base["trial"],
            "hparams": dict(run["hparams"]),
            "seed": int(run["seed"]),
            "data_seed": int(base["data_seed"]),
        }
    )
    trainer = Trainer(trial_config)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # Ray retrying this run after a worker failure
        with checkpoint.as_directory() as directory:
            trainer.load_state(directory)
    else:  # a run a previous driver started continues from its last epoch
        trainer.load_state(state_dir)
    if trainer.epoch < trial_config.epochs:
        try:
            trainer.fit([TuneReportHook(state_dir)])
        except TrialDivergedError as exc:
            log.warning("report run %s diverged: %s", run_dir.name, exc)
            tune.report({"diverged": str(exc), "done_epochs": trainer.epoch})
            return
    metric = trainer.task.metric
    metrics = _final_metrics(model_dir, trainer.epoch)
    if metrics is None:
        _, metrics = write_checkpoint(trainer, model_dir)
    tune.report(
        {
            "done_epochs": trainer.epoch,
            "test_value": metrics.get(f"test_{metric}"),
            "val_value": metrics.get(f"val_{metric}"),
            "checkpoint_dir": str(model_dir),
        }
    )


def _final_metrics(model_dir: Path, epoch: int) -> dict[str, Any] | None:
    """The ``metrics.json`` a previous attempt wrote for this very model, if any."""
    import json

    try:
        metrics = json.loads((model_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and metrics.get("epochs") == epoch else None
