"""One trial's hyperparameters as a frozen, typed value (torch-free).

A trial's hyperparameters travel as a flat dict of dotted keys (``optim.lr``,
``relax.schedule``; docs/ARCHITECTURE.md, "Hyperparameters"): that is what Optuna samples,
Ray ships and checkpoints record. Code that *uses* them builds a :class:`Hyperparameters`
once with :meth:`Hyperparameters.from_flat`, which fills defaults, coerces and checks every
value (:func:`search_spaces.check_hparams`, the one home of defaults and bounds), and then
reads typed attributes (``hp.optim.lr``, ``hp.relax.lambda_norm``) instead of
``hparams.get("relax.lambda_norm", 0.0)`` with a default repeated at each use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from search_spaces._defaults import check_hparams

_FROZEN = ConfigDict(frozen=True, extra="forbid", strict=True)


class OptimParams(BaseModel):
    """The ``optim.*`` keys: the AdamW optimiser and the gradient clipping."""

    model_config = _FROZEN

    lr: float
    weight_decay: float
    batch_size: int
    grad_clip: float


class RelaxParams(BaseModel):
    """The ``relax.*`` keys: θ schedule, penalties, projection, free-term options."""

    model_config = _FROZEN

    schedule: str
    theta_max: float
    peak: float
    zero_at: float
    min_tail: float
    warmup: float
    hold: float
    theta: float
    gamma_init: float
    strength_lr: float
    dual_lr: float
    dual_optimism: float
    layer_decay: float
    lambda_lie: float
    lambda_norm: float
    lambda_proj: float
    penalty_form: str
    projection: str
    init: str
    init_std: float
    free_scale: str
    free_lr_mult: float
    free_weight_decay: float

    @property
    def relaxing(self) -> bool:
        """Whether the free term acts at all (any schedule but ``none``)."""
        return self.schedule != "none"

    @property
    def penalty_weights(self) -> dict[str, float]:
        """The penalty weights by penalty name (``lie``, ``norm``, ``proj``)."""
        return {"lie": self.lambda_lie, "norm": self.lambda_norm, "proj": self.lambda_proj}


class Hyperparameters(BaseModel):
    """Every hyperparameter of one trial, checked and typed."""

    model_config = _FROZEN

    optim: OptimParams
    relax: RelaxParams

    @classmethod
    def from_flat(cls, values: Mapping[str, Any], field: str = "hparams") -> Hyperparameters:
        """Build from flat dotted keys; missing keys take their defaults, an unknown key or
        a bad value raises :class:`SpecError` naming ``<field>.<key>``."""
        sections: dict[str, dict[str, Any]] = {"optim": {}, "relax": {}}
        for key, value in check_hparams(values, field).items():
            section, name = key.split(".", 1)
            sections[section][name] = value
        return cls.model_validate(sections)

    def flat(self) -> dict[str, Any]:
        """The flat dotted-key dict (what Optuna, Ray and checkpoints carry)."""
        return {
            f"{section}.{name}": value
            for section, values in self.model_dump().items()
            for name, value in values.items()
        }
