"""Export one finished trial: the worker entry point a search driver calls for its best."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._checkpoint import CheckpointError, verify_checkpoint, write_checkpoint
from ._config import TrialConfig
from ._loop import Trainer


def export_trial(config: TrialConfig, state_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Rebuild the trial ``config`` describes, load the epoch state saved in ``state_dir``,
    and write its projected, exported model's checkpoint folder to ``out``; the folder is
    verified before this returns its ``metrics.json`` content.

    Raises :class:`CheckpointError` when there is no saved state or the written folder does
    not verify (the trial's own files are left as they were)."""
    trainer = Trainer(config)
    if not trainer.load_state(state_dir):
        raise CheckpointError(f"no saved state in {state_dir}")
    _, metrics = write_checkpoint(trainer, out)
    verification = verify_checkpoint(out)
    if not verification["passed"]:
        raise CheckpointError(f"exported checkpoint does not verify: {verification['problems']}")
    return metrics
