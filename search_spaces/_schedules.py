"""θ schedules: pure functions of training progress ``t ∈ [0, 1]`` (docs/METHOD.md §2).

They live here, torch-free, because two sides need the same curve: the trainer sets θ from
them every step (``workers.relax`` re-exports them), and the dashboard draws each trial's θ
from its hyperparameters without importing torch.

A schedule holds no state: θ is recomputed from progress every step, so resuming a run
continues the same curve. Every family except ``constant`` ends at exactly θ = 0 and,
built by :func:`make_schedule`, leaves a *tail* at θ = 0: the family's curve (defined on
``[0, 1]``, its timing parameters ``peak``, ``zero_at``, ``warmup``, ``hold`` being fractions
of that interval) is squeezed into ``[0, 1 − tail]``, and θ is exactly 0 from ``1 − tail`` on,
so the network trains without the free term before it is dropped. ``tail`` is
``relax.min_tail`` (default 0.1), and at least one epoch when the trainer says how many
epochs there are (two or more). ``constant`` is the exception: it never reaches 0 (it exists
to be projected at θ > 0) and gets no tail. ``adaptive`` learns its θ per layer; its
schedule is the gate of :class:`AdaptiveGate` (1, then the same θ = 0 tail).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from search_spaces._defaults import SCHEDULE_FAMILIES
from search_spaces._hparams import Hyperparameters, RelaxParams

#: re-exported: the families are declared once, with the other hyperparameters
__all__ = ["SCHEDULE_FAMILIES"]


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
    """0 → θ_max at ``peak·zero_at`` → 0 at ``zero_at``, then 0 (the paper: peak 0.5,
    θ_max 1, zero_at 1). ``peak`` is the apex's position within the triangle, so every
    ``(peak, zero_at)`` pair is a valid triangle."""

    theta_max: float = 1.0
    peak: float = 0.5
    zero_at: float = 1.0
    family: ClassVar[str] = "triangular"

    def __call__(self, t: float) -> float:
        t = _clip01(t)
        if t >= self.zero_at:
            return 0.0
        apex = self.peak * self.zero_at
        if t <= apex:
            return self.theta_max * (t / apex if apex > 0 else 1.0)
        return self.theta_max * (self.zero_at - t) / (self.zero_at - apex)


@dataclass(frozen=True)
class LinearDecaySchedule(Schedule):
    """θ_max → 0 linearly at ``zero_at``, then 0 (an equivariant fine-tuning phase)."""

    theta_max: float = 1.0
    zero_at: float = 1.0
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
    zero_at: float = 1.0
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
    zero_at: float = 1.0
    family: ClassVar[str] = "step"

    def __call__(self, t: float) -> float:
        return self.theta_max if _clip01(t) < self.zero_at else 0.0


@dataclass(frozen=True)
class WarmupHoldDecaySchedule(Schedule):
    """Rise to θ_max over ``warmup``, hold for ``hold``, decay linearly to 0 at ``zero_at``."""

    theta_max: float = 1.0
    warmup: float = 0.1
    hold: float = 0.3
    zero_at: float = 1.0
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


@dataclass(frozen=True)
class AdaptiveGate(Schedule):
    """The ``adaptive`` family's schedule: a gate, 1 while the learned strengths act and 0
    in the tail. Each layer's θ is ``gate(t) × γ_i`` with ``γ_i`` learned and driven to 0
    by its dual variable (``workers/relax/_adaptive.py``); only the end is a function of
    progress."""

    family: ClassVar[str] = "adaptive"

    def __call__(self, t: float) -> float:
        return 1.0


@dataclass(frozen=True)
class TailedSchedule(Schedule):
    """A decaying family squeezed into ``[0, 1 − tail]``, then exactly 0."""

    inner: Schedule = field(default_factory=lambda: NoneSchedule())
    tail: float = 0.1

    @property
    def family(self) -> str:  # type: ignore[override]
        return self.inner.family

    def __call__(self, t: float) -> float:
        t = _clip01(t)
        end = 1.0 - self.tail
        if t >= end - 1e-9:  # the slack absorbs rounding of step / total (1 − 1/3 ≠ 2/3)
            return 0.0
        return self.inner(t / end)

    def ends_at_zero(self) -> bool:
        return True


def tail_fraction(min_tail: float, epochs: int | None = None) -> float:
    """The share of training at θ = 0 at the end: ``min_tail``, and at least one epoch of
    ``epochs`` when there are two or more (with one epoch there would be no relaxation)."""
    tail = float(min_tail)
    if epochs is not None and int(epochs) >= 2:
        tail = max(tail, 1.0 / int(epochs))
    return tail


def make_schedule(params: RelaxParams | Mapping[str, Any], epochs: int | None = None) -> Schedule:
    """Build the schedule of a trial's :class:`RelaxParams` (``Hyperparameters.relax``).

    A plain dict is accepted too, with the flat hyperparameter keys (``relax.schedule``,
    ``relax.theta_max`` …; ``optim.*`` keys are ignored) or short ones (``{"family":
    "triangular", "theta_max": 1, "peak": 0.5}``); missing keys take their defaults and a bad
    value raises :class:`SpecError` (a ``ValueError``) naming the key, exactly as a spec would.
    Every decaying family gets the θ = 0 tail of :func:`tail_fraction` (``min_tail``, and one
    epoch of ``epochs`` at least); ``min_tail: 0`` without ``epochs`` gives the bare family
    curve.
    """
    relax = params if isinstance(params, RelaxParams) else _relax_params(params)
    base = _make_family(relax)
    if isinstance(base, (NoneSchedule, ConstantSchedule)):
        return base
    tail = tail_fraction(relax.min_tail, epochs)
    return TailedSchedule(base, tail) if tail > 0 else base


def _relax_params(params: Mapping[str, Any]) -> RelaxParams:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if key.startswith("optim."):
            continue
        name = key.removeprefix("relax.")
        flat[f"relax.{'schedule' if name == 'family' else name}"] = value
    return Hyperparameters.from_flat(flat).relax


def _make_family(relax: RelaxParams) -> Schedule:
    family = relax.schedule
    if family == "none":
        return NoneSchedule()
    if family == "triangular":
        return TriangularSchedule(relax.theta_max, relax.peak, relax.zero_at)
    if family == "constant":
        return ConstantSchedule(relax.theta)
    if family == "adaptive":
        return AdaptiveGate()
    if family in ("linear_decay", "cosine", "step"):
        cls = {"linear_decay": LinearDecaySchedule, "cosine": CosineSchedule, "step": StepSchedule}[
            family
        ]
        return cls(relax.theta_max, relax.zero_at)
    warmup, hold, zero_at = relax.warmup, relax.hold, relax.zero_at
    if warmup + hold >= zero_at:
        # keep the family usable for any sampled values: squeeze warmup/hold into [0, zero_at)
        scale = 0.999 * zero_at / (warmup + hold)
        warmup, hold = warmup * scale, hold * scale
    return WarmupHoldDecaySchedule(relax.theta_max, warmup, hold, zero_at)


def relaxation_end(schedule: Schedule) -> float:
    """Progress after which θ stays 0 (0 for ``none``, 1 for ``constant``)."""
    if isinstance(schedule, NoneSchedule):
        return 0.0
    if isinstance(schedule, TailedSchedule):
        return (1.0 - schedule.tail) * relaxation_end(schedule.inner)
    return float(getattr(schedule, "zero_at", 1.0))
