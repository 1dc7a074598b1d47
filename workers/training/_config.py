"""What one trial trains: task, model, data, flat hyperparameters, epochs, seed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search_spaces import JobSpec


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

    @classmethod
    def from_spec(
        cls,
        spec: JobSpec,
        hparams: Mapping[str, Any],
        *,
        seed: int | None = None,
        epochs: int | None = None,
        data_seed: int | None = None,
        device: str | None = None,
    ) -> TrialConfig:
        """The trial of job ``spec`` with hyperparameters ``hparams``: the spec's task, model
        and data options, its epochs and seed unless given, and its device (``cuda`` when
        the spec asks for GPUs, else ``cpu``) unless given. The one place a job's trial
        configuration is made: the search, the gain report, the export and
        ``relaxtune train`` all build theirs here."""
        return cls(
            task=spec.task,
            model=dict(spec.model),
            data=dict(spec.data),
            hparams=dict(hparams),
            epochs=int(spec.budget.epochs if epochs is None else epochs),
            seed=int(spec.seed if seed is None else seed),
            data_seed=data_seed,
            device=device or ("cuda" if spec.resources.gpu > 0 else "cpu"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"trial config: unknown keys {sorted(unknown)}")
        return cls(**data)
