"""θ schedules: pure functions of training progress ``t ∈ [0, 1]`` (METHOD.md §2).

A schedule holds no state: θ is recomputed from progress every step, so resuming a run
continues the same curve. Every family except ``constant`` ends at exactly θ = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

SCHEDULE_FAMILIES = (
    "none",
    "triangular",
    "linear_decay",
    "cosine",
    "step",
    "warmup_hold_decay",
    "constant",
)


def _clip01(t: float) -> float:
    return min(max(float(t), 0.0), 1.0)


@dataclass(frozen=True)
class Schedule:
    """Base class: ``schedule(t)`` returns θ at progress ``t``."""

    family: ClassVar[str] = ""

    def __call__(self, t: float) -> float:
        raise NotImplementedError

    def ends_at_zero(self) -> bool:
        return True


@dataclass(frozen=True)
class NoneSchedule(Schedule):
    """θ = 0 always: standard equivariant training (the baseline)."""

    family: ClassVar[str] = "none"

    def __call__(self, t: float) -> float:
        return 0.0


@dataclass(frozen=True)
class TriangularSchedule(Schedule):
    """0 → θ_max at ``peak`` → 0 at t = 1 (the paper: peak 0.5, θ_max 1)."""

    theta_max: float = 1.0
    peak: float = 0.5
    family: ClassVar[str] = "triangular"

    def __call__(self, t: float) -> float:
        t = _clip01(t)
        if t >= 1.0:
            return 0.0
        if t <= self.peak:
            return self.theta_max * (t / self.peak if self.peak > 0 else 1.0)
        return self.theta_max * (1.0 - t) / (1.0 - self.peak)


@dataclass(frozen=True)
class LinearDecaySchedule(Schedule):
    """θ_max → 0 linearly at ``zero_at``, then 0 (an equivariant fine-tuning phase)."""

    theta_max: float = 1.0
    zero_at: float = 0.75
    family: ClassVar[str] = "linear_decay"

    def __call__(self, t: float) -> float:
        t = _clip01(t)
        if t >= self.zero_at:
            return 0.0
        return self.theta_max * (1.0 - t / self.zero_at)


@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """Cosine decay from θ_max to 0 at ``zero_at``."""

    theta_max: float = 1.0
    zero_at: float = 0.75
    family: ClassVar[str] = "cosine"

    def __call__(self, t: float) -> float:
        t = _clip01(t)
        if t >= self.zero_at:
            return 0.0
        return self.theta_max * 0.5 * (1.0 + math.cos(math.pi * t / self.zero_at))


@dataclass(frozen=True)
class StepSchedule(Schedule):
    """Constant θ_max, then 0 from ``zero_at`` on."""

    theta_max: float = 1.0
    zero_at: float = 0.75
    family: ClassVar[str] = "step"

    def __call__(self, t: float) -> float:
        return self.theta_max if _clip01(t) < self.zero_at else 0.0


@dataclass(frozen=True)
class WarmupHoldDecaySchedule(Schedule):
    """Rise to θ_max over ``warmup``, hold for ``hold``, decay linearly to 0 at ``zero_at``."""

    theta_max: float = 1.0
    warmup: float = 0.1
    hold: float = 0.3
    zero_at: float = 0.75
    family: ClassVar[str] = "warmup_hold_decay"

    def __call__(self, t: float) -> float:
        t = _clip01(t)
        hold_end = self.warmup + self.hold
        if t >= self.zero_at:
            return 0.0
        if t < self.warmup:
            return self.theta_max * t / self.warmup
        if t < hold_end:
            return self.theta_max
        return self.theta_max * (self.zero_at - t) / (self.zero_at - hold_end)


@dataclass(frozen=True)
class ConstantSchedule(Schedule):
    """Constant θ (the paper's non-cyclic variant): only meaningful with projection."""

    theta: float = 0.1
    family: ClassVar[str] = "constant"

    def __call__(self, t: float) -> float:
        return self.theta

    def ends_at_zero(self) -> bool:
        return self.theta == 0.0


def make_schedule(params: dict[str, Any]) -> Schedule:
    """Build a schedule from a plain dict.

    Accepts either short keys (``{"family": "triangular", "theta_max": 1, "peak": 0.5}``)
    or the flat hyperparameter keys (``relax.schedule``, ``relax.theta_max`` …); unused
    keys of other families are ignored, invalid values raise ``ValueError`` naming the key.
    """
    p = {k.removeprefix("relax."): v for k, v in params.items()}
    family = p.get("family", p.get("schedule", "none"))
    if family not in SCHEDULE_FAMILIES:
        raise ValueError(f"relax.schedule: unknown family {family!r}; expected one of {SCHEDULE_FAMILIES}")

    def num(key: str, default: float, lo: float = 0.0, hi: float = math.inf) -> float:
        value = float(p.get(key, default))
        if not (lo <= value <= hi) or math.isnan(value):
            raise ValueError(f"relax.{key}: {value} outside [{lo}, {hi}]")
        return value

    if family == "none":
        return NoneSchedule()
    if family == "triangular":
        return TriangularSchedule(num("theta_max", 1.0), num("peak", 0.5, 0.0, 1.0))
    if family == "constant":
        return ConstantSchedule(num("theta", 0.1))
    if family in ("linear_decay", "cosine", "step"):
        cls = {"linear_decay": LinearDecaySchedule, "cosine": CosineSchedule, "step": StepSchedule}[family]
        return cls(num("theta_max", 1.0), num("zero_at", 0.75, 1e-6, 1.0))
    warmup, hold, zero_at = num("warmup", 0.1, 0.0, 1.0), num("hold", 0.3, 0.0, 1.0), num("zero_at", 0.75, 1e-6, 1.0)
    if warmup + hold >= zero_at:
        # keep the family usable for any sampled values: squeeze warmup/hold into [0, zero_at)
        scale = 0.999 * zero_at / (warmup + hold)
        warmup, hold = warmup * scale, hold * scale
    return WarmupHoldDecaySchedule(num("theta_max", 1.0), warmup, hold, zero_at)


def relaxation_end(schedule: Schedule) -> float:
    """Progress after which θ stays 0 (1.0 for ``constant``/``triangular``)."""
    if isinstance(schedule, NoneSchedule):
        return 0.0
    return float(getattr(schedule, "zero_at", 1.0))
