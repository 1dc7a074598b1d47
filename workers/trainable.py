"""The Ray Tune trainable: one relaxed training run reporting every epoch.

The only module on the worker side that imports Ray. Each epoch it reports the
:class:`~workers.training.EpochReport` keys (``val_projected`` is the objective) with a Tune
checkpoint, so Ray can retry a trial whose worker died from its last epoch, and it keeps
the same state under ``<trial_dir>/state.pt`` so a resumed job can continue a trial whose
driver died.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune

from workers.training import EpochReport, Trainer, TrialConfig, TrialDivergedError

log = logging.getLogger(__name__)

#: keys the driver adds to a trial's config besides the flat hyperparameters
TRIAL_NUMBER = "_trial_number"
RESUME_FROM = "_resume_from"


class TuneReportHook:
    """Saves the trial state and reports the epoch's metrics (with a checkpoint) to Tune."""

    def __init__(self, trial_dir: Path) -> None:
        self.trial_dir = trial_dir

    def on_epoch_end(self, report: EpochReport, trainer: Trainer) -> None:
        trainer.save_state(self.trial_dir)
        metrics = {k: v for k, v in report.as_dict().items() if v is not None}
        metrics["done_epochs"] = trainer.epoch
        # which Ray node ran the epoch: nodes of one host share node_ip/hostname in results
        metrics["node_id"] = ray.get_runtime_context().get_node_id()
        with tempfile.TemporaryDirectory(prefix="relaxtune-ckpt-") as tmp:
            shutil.copy2(self.trial_dir / "state.pt", Path(tmp) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def relax_trial(config: dict[str, Any], base: dict[str, Any]) -> None:
    """Ray Tune function trainable.

    ``config``: the flat hyperparameters sampled by Optuna plus ``_trial_number`` (the
    Optuna trial number) and optionally ``_resume_from`` (state folder of a trial that a
    dead driver left behind). ``base``: task, model, data, epochs, seed and the job's
    trial folder root (constant for every trial, passed with ``tune.with_parameters``).
    """
    hparams = {k: v for k, v in config.items() if not k.startswith("_")}
    number = int(config[TRIAL_NUMBER])
    trial_dir = Path(base["trials_dir"]) / f"{number:05d}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    trial_config = TrialConfig(
        task=base["task"],
        model=base["model"],
        data=base["data"],
        hparams=hparams,
        epochs=int(base["epochs"]),
        seed=int(base["seed"]),
        device=base.get("device", "auto"),
    )
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
        tune.report({"diverged": str(exc), "done_epochs": trainer.epoch, "val_projected": float("nan")})
