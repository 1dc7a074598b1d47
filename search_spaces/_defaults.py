"""The flat hyperparameter keys of a trial, their defaults, and value coercion.

The table in ``docs/ARCHITECTURE.md`` is the source; :func:`default_hparams` must match it
exactly. Every other part of the package (search spaces, ``--set`` overrides) checks keys and
values against the tables here, so a typo fails when the spec is read, not inside a worker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from search_spaces._errors import SpecError
from search_spaces._suggest import did_you_mean

#: Schedule families of docs/METHOD.md §2, in the order of that table.
SCHEDULE_FAMILIES: tuple[str, ...] = (
    "none",
    "triangular",
    "linear_decay",
    "cosine",
    "step",
    "warmup_hold_decay",
    "constant",
    "adaptive",
)

#: The hyperparameters each schedule family reads (the others are ignored by that family).
SCHEDULE_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "triangular": ("relax.theta_max", "relax.peak", "relax.zero_at"),
    "linear_decay": ("relax.theta_max", "relax.zero_at"),
    "cosine": ("relax.theta_max", "relax.zero_at"),
    "step": ("relax.theta_max", "relax.zero_at"),
    "warmup_hold_decay": ("relax.theta_max", "relax.warmup", "relax.hold", "relax.zero_at"),
    "constant": ("relax.theta",),
    "adaptive": (
        "relax.gamma_init",
        "relax.strength_lr",
        "relax.dual_lr",
        "relax.dual_optimism",
    ),
}

#: How a relaxed model is made exactly equivariant again (docs/METHOD.md §4).
PROJECTIONS: tuple[str, ...] = ("orthogonal", "drop")

#: Initialisations of the free term ``W``.
INITS: tuple[str, ...] = ("zeros", "normal")

#: Shapes of the activation penalties (norm, Lie): the authors' ``sqrt(Σ_batch,layers ‖W x‖²)``
#: or the same divided by the batch size inside the root (batch-size independent).
PENALTY_FORMS: tuple[str, ...] = ("per_sample", "paper")

#: How θ scales the free term: ``θ·W`` or ``θ·rms(K_eq)·W`` (scale-aware).
FREE_SCALES: tuple[str, ...] = ("plain", "rms")

#: Keys whose value must come from a closed set.
CHOICES: dict[str, tuple[str, ...]] = {
    "relax.schedule": SCHEDULE_FAMILIES,
    "relax.penalty_form": PENALTY_FORMS,
    "relax.projection": PROJECTIONS,
    "relax.init": INITS,
    "relax.free_scale": FREE_SCALES,
}

_DEFAULTS: dict[str, Any] = {
    "optim.lr": 1e-3,
    "optim.weight_decay": 0.0,
    "optim.batch_size": 64,
    "optim.grad_clip": 1.0,
    "relax.schedule": "none",
    "relax.theta_max": 1.0,
    "relax.peak": 0.5,
    "relax.zero_at": 1.0,
    "relax.min_tail": 0.1,
    "relax.warmup": 0.1,
    "relax.hold": 0.3,
    "relax.theta": 0.1,
    "relax.gamma_init": 1.0,
    "relax.strength_lr": 1e-2,
    "relax.dual_lr": 1e-3,
    "relax.dual_optimism": 0.0,
    "relax.layer_decay": 1.0,
    "relax.lambda_lie": 0.0,
    "relax.lambda_norm": 0.0,
    "relax.lambda_proj": 0.0,
    "relax.penalty_form": "per_sample",
    "relax.projection": "orthogonal",
    "relax.init": "normal",
    "relax.init_std": 0.01,
    "relax.free_scale": "plain",
    "relax.free_lr_mult": 1.0,
    "relax.free_weight_decay": 0.0,
}

# Admissible numeric values: (low, high, low inclusive, high inclusive). A search range or a
# fixed value outside these is refused, because the training loop would fail or silently
# misbehave on it (a negative learning rate, a triangle peaking after the end of training).
_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "optim.lr": (0.0, math.inf, False, False),
    "optim.weight_decay": (0.0, math.inf, True, False),
    "optim.batch_size": (1, 1_000_000, True, True),
    "optim.grad_clip": (0.0, math.inf, True, False),
    "relax.theta_max": (0.0, math.inf, True, False),
    "relax.peak": (0.0, 1.0, True, True),
    "relax.zero_at": (0.0, 1.0, False, True),
    "relax.min_tail": (0.0, 1.0, True, False),
    "relax.warmup": (0.0, 1.0, True, True),
    "relax.hold": (0.0, 1.0, True, True),
    "relax.theta": (0.0, math.inf, True, False),
    "relax.gamma_init": (0.0, math.inf, True, False),
    "relax.strength_lr": (0.0, math.inf, False, False),
    "relax.dual_lr": (0.0, math.inf, True, False),
    "relax.dual_optimism": (0.0, math.inf, True, False),
    "relax.layer_decay": (0.0, math.inf, False, False),
    "relax.lambda_lie": (0.0, math.inf, True, False),
    "relax.lambda_norm": (0.0, math.inf, True, False),
    "relax.lambda_proj": (0.0, math.inf, True, False),
    "relax.init_std": (0.0, math.inf, True, False),
    "relax.free_lr_mult": (0.0, math.inf, False, False),
    "relax.free_weight_decay": (0.0, math.inf, True, False),
}

_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT_TEXT = re.compile(r"[+-]?\d+")


def default_hparams() -> dict[str, Any]:
    """Return every hyperparameter key with its default (a fresh dict each call).

    A trial's hyperparameters are this dict updated with a search space's fixed values and
    samples; the keys are exactly those of the table in ``docs/ARCHITECTURE.md``.
    """
    return dict(_DEFAULTS)


def hparam_keys() -> tuple[str, ...]:
    """Return the allowed hyperparameter keys, in table order."""
    return tuple(_DEFAULTS)


def check_key(key: Any, field: str) -> str:
    """Return ``key`` if it is a hyperparameter key, else raise :class:`SpecError` at ``field``."""
    if not isinstance(key, str) or key not in _DEFAULTS:
        raise SpecError(
            field,
            f"unknown hyperparameter {key!r}{did_you_mean(key, _DEFAULTS)} "
            f"(allowed keys: {', '.join(_DEFAULTS)})",
        )
    return key


def coerce_value(key: str, value: Any, field: str) -> Any:
    """Coerce ``value`` to the type of ``key``'s default and check it is admissible.

    Floats accept ints and numeric text (YAML 1.1 reads ``1e-3`` as a string, a common trap);
    ints accept ints and integral text, never ``True``/``False`` or ``6.5``; closed-set keys
    accept only their listed values. Raises :class:`SpecError` at ``field`` otherwise.
    """
    default = _DEFAULTS[key]
    if isinstance(default, str):
        allowed = CHOICES.get(key)
        if not isinstance(value, str) or (allowed is not None and value not in allowed):
            options = f"; allowed values: {', '.join(allowed)}" if allowed else ""
            raise SpecError(field, f"invalid value {value!r} for {key}{options}")
        return value
    if isinstance(default, bool):  # no boolean keys today; keep the check explicit
        if not isinstance(value, bool):
            raise SpecError(field, f"{key} takes true or false, got {value!r}")
        return value
    result: int | float | None
    if isinstance(default, int):
        result = _as_int(value)
        if result is None:
            raise SpecError(field, f"{key} takes an integer, got {value!r}")
    else:
        result = _as_float(value)
        if result is None:
            raise SpecError(field, f"{key} takes a finite number, got {value!r}")
    _check_bounds(key, result, field)
    return result


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        result = float(value.strip())
    else:
        return None
    return result if math.isfinite(result) else None


def _check_bounds(key: str, value: float, field: str) -> None:
    bounds = _BOUNDS.get(key)
    if bounds is None:
        return
    low, high, low_closed, high_closed = bounds
    above = value >= low if low_closed else value > low
    below = value <= high if high_closed else value < high
    if not (above and below):
        interval = (
            f"{'[' if low_closed else '('}{_fmt(low)}, {_fmt(high)}{']' if high_closed else ')'}"
        )
        raise SpecError(field, f"{key} must lie in {interval}, got {value!r}")


def _fmt(number: float) -> str:
    return "inf" if number == math.inf else f"{number:g}"


def is_integer_key(key: str) -> bool:
    """Whether ``key`` takes integer values (so its ranges are integer ranges)."""
    default = _DEFAULTS[key]
    return isinstance(default, int) and not isinstance(default, bool)


def is_choice_key(key: str) -> bool:
    """Whether ``key`` takes text values (it can only be categorical or fixed)."""
    return isinstance(_DEFAULTS[key], str)


def check_hparams(values: Mapping[str, Any], field: str = "hparams") -> dict[str, Any]:
    """Return a complete, coerced hyperparameter dict from a partial one.

    Missing keys take their defaults; unknown keys and bad values raise :class:`SpecError`
    naming ``<field>.<key>``. Workers use this to validate the config a trial receives.
    """
    result = default_hparams()
    for key, value in values.items():
        check_key(key, f"{field}.{key}")
        result[key] = coerce_value(key, value, f"{field}.{key}")
    return result


def is_relaxing(hparams: Mapping[str, Any]) -> bool:
    """Whether a trial with these hyperparameters trains with a free term at all."""
    return hparams.get("relax.schedule", _DEFAULTS["relax.schedule"]) != "none"


def relaxation_off(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The same trial with the relaxation switched off: θ = 0 throughout (schedule
    ``none``), every other hyperparameter (the optimiser above all) unchanged.

    This is the paired "baseline arm" of a configuration: the two-stage search enqueues it
    and the gain report retrains it next to the configuration as found.
    """
    result = dict(hparams)
    result["relax.schedule"] = "none"
    return result


def parse_set_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` strings into a dict of coerced hyperparameter values.

    >>> parse_set_overrides(["optim.lr=1e-3", "relax.schedule=triangular"])
    {'optim.lr': 0.001, 'relax.schedule': 'triangular'}

    Each value is coerced to the type of the key's default (see :func:`coerce_value`). Errors
    name the key (``field`` is the key, or ``set`` when the item has no ``=``) and list the
    allowed keys or values. A key given twice is refused rather than silently overwritten.
    """
    result: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise SpecError("set", f"expected KEY=VALUE, got {item!r}")
        key, _, text = item.partition("=")
        key = key.strip()
        check_key(key, key or "set")
        if key in result:
            raise SpecError(key, f"{key} is set more than once")
        result[key] = coerce_value(key, text.strip(), key)
    return result
