"""One trial from start to checkpoint: the :class:`Trainer` of ``_loop.py`` and the checkpoint
folder of ``_checkpoint.py``, joined here so that neither of those two imports the other."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ._checkpoint import write_checkpoint
from ._config import TrialConfig
from ._loop import Trainer, TrainingHook, TrainResult


def train(
    config: TrialConfig,
    hooks: Iterable[TrainingHook] = (),
    *,
    resume_from: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> TrainResult:
    """Train one trial; resume from a state folder if given; write the checkpoint folder
    (README.md, "The checkpoint") to ``out_dir`` if given."""
    trainer = Trainer(config)
    if resume_from is not None:
        trainer.load_state(resume_from)
    result = trainer.fit(hooks)
    if out_dir is not None:
        result.checkpoint_dir, result.metrics = write_checkpoint(trainer, out_dir)
    return result
