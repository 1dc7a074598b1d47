"""``relaxtune train``: one relaxed training run from a job spec and ``--set`` overrides."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ._config import TrialConfig


def _load_spec(spec: Any):
    from search_spaces import JobSpec, parse_spec

    if isinstance(spec, JobSpec):
        return spec
    if isinstance(spec, (str, Path)) and Path(spec).is_file():
        return parse_spec(Path(spec).read_bytes())
    return parse_spec(spec)


def trial_config_from_spec(
    spec: Any,
    sets: list[str] | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    device: str = "auto",
) -> TrialConfig:
    """The trial a spec describes with its search space's default point, overridden by
    ``--set key=value`` items. Raises ``SpecError`` naming the field before any training."""
    from search_spaces import check_hparams, parse_set_overrides

    job = _load_spec(spec)
    hparams = job.resolved_space().sample_defaults()
    hparams.update(parse_set_overrides(sets or []))
    hparams = check_hparams(hparams, field="set")
    return TrialConfig.from_spec(job, hparams, seed=seed, epochs=epochs, device=device)


def cli_train(
    spec: Any,
    sets: list[str] | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Train one model and write its checkpoint folder; prints one line per epoch.

    Returns ``{"checkpoint": path, "metrics": {...}, "certificate": {...}, "seconds": s}``.
    """
    import json

    from ._hooks import ConsoleHook
    from ._train import train

    config = trial_config_from_spec(spec, sets, seed, epochs)
    out = Path(out) if out is not None else Path("runs") / f"{config.task}-seed{config.seed}"
    changed = {k: v for k, v in config.hparams.items()}
    print(f"relaxtune train: task={config.task} epochs={config.epochs} seed={config.seed}")
    print("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
    start = time.perf_counter()
    result = train(config, [ConsoleHook()], out_dir=out)
    seconds = time.perf_counter() - start
    certificate = json.loads((Path(out) / "certificate.json").read_text())
    return {
        "checkpoint": str(result.checkpoint_dir),
        "metrics": {k: v for k, v in result.metrics.items() if k != "history"},
        "certificate": certificate,
        "seconds": seconds,
    }
