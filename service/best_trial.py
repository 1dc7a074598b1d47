"""The exported best trial of a job, as it travels: written by the export
(``service.export.export_best``), returned by the search, recorded on the job's row
(``best``), written next to the checkpoint (``best.json``) and served by the API.

On the row and on disk it is the JSON object :meth:`BestTrial.to_dict` gives; a row written
by an older release may lack the newer keys, which :meth:`BestTrial.from_dict` fills with
``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from service._json import json_safe


@dataclass(frozen=True)
class BestTrial:
    """The best COMPLETE trial of a job's search, exported and verified."""

    #: the Optuna trial number
    trial: int
    #: the full flat hyperparameters it trained with (defaults + fixed + sampled)
    params: dict[str, Any]
    #: the parameters the search sampled (the Optuna trial's params)
    searched_params: dict[str, Any] = field(default_factory=dict)
    #: 1 or 2 for a two-stage job's trial, ``None`` for a joint one
    stage: int | None = None
    #: its projected validation metric (the objective) and its relaxed one
    value: float | None = None
    val_relaxed: float | None = None
    #: ``metrics.json`` of the exported checkpoint, without the per-epoch history
    metrics: dict[str, Any] = field(default_factory=dict)
    #: ``group``, ``max_error_exact``, ``tolerance``, ``passed`` of ``certificate.json``
    certificate: dict[str, Any] = field(default_factory=dict)
    #: the checkpoint folder (``<artifacts>/jobs/<id>/best``, absolute)
    checkpoint: str | None = None
    #: the zip's id in Optuna's artifact store
    artifact_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object recorded on the job's row and in ``best.json``."""
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BestTrial:
        """Read back what :meth:`to_dict` wrote (unknown keys are ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})
