"""The training loop of one trial, its hooks, and the checkpoint folder it writes."""

from ._checkpoint import VERIFY_TOLERANCE, CheckpointError, verify_checkpoint, write_checkpoint
from ._cli import cli_train, trial_config_from_spec
from ._config import TrialConfig
from ._export_trial import export_trial
from ._hooks import ConsoleHook
from ._loop import (
    DEVICE_ENV,
    EpochReport,
    Trainer,
    TrainingHook,
    TrainResult,
    TrialDivergedError,
    pick_device,
)
from ._train import train

__all__ = [
    "CheckpointError",
    "DEVICE_ENV",
    "ConsoleHook",
    "EpochReport",
    "TrainResult",
    "Trainer",
    "TrainingHook",
    "TrialConfig",
    "TrialDivergedError",
    "cli_train",
    "export_trial",
    "pick_device",
    "train",
    "trial_config_from_spec",
    "VERIFY_TOLERANCE",
    "verify_checkpoint",
    "write_checkpoint",
]
