"""What one trial trains: task, model, data, flat hyperparameters, epochs, seed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrialConfig:
    """Everything that determines a trial (and nothing about where it runs)."""

    task: str
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    epochs: int = 5
    seed: int = 0
    #: seed of the data split when it must not follow ``seed`` (a gain report retrains on new
    #: seeds but on the search's data); ``None``: ``seed``
    data_seed: int | None = None
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    eval_samples: int = 16  # validation inputs used to measure equivariance each epoch
    tolerance: float = 1e-4  # certificate tolerance on the exact group elements
    #: training samples the projected model's normalisation statistics are recomputed on
    #: before it is validated, tested, exported or certified (0: keep the running statistics)
    norm_samples: int = 1024

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"trial config: unknown keys {sorted(unknown)}")
        return cls(**data)
