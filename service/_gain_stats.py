"""The statistics of a relaxation gain report: per-arm summaries, the paired difference with
its 95 % paired t interval, and the plain-words verdict. Pure functions on lists of numbers
(no torch, no Optuna): the API, the CLI and the report driver all call them.

The two arms are the best configuration *as found* and the same configuration with the
relaxation switched off, trained on the same seeds. Each seed gives one pair, and the
compared quantity is one where lower is better or higher is better (``better``). The
interval is the classic paired t interval on the per-seed differences
``d_i = as_found_i − relaxation_off_i``:

    mean(d) ± t(0.975, n − 1) · sd(d) / √n

with ``sd`` the sample standard deviation (n − 1 in the denominator) and ``t`` Student's t
quantile (``scipy.stats.t``). The relative change divides the mean difference and the
interval's ends by the mean of the relaxation-off arm.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Better = Literal["lower", "higher"]

#: What the report says about its interval, in the JSON and on the dashboard.
METHOD = (
    "paired t interval: mean of the per-seed differences (as found − relaxation off) "
    "± t(0.975, n−1) · sd / √n, sd the sample standard deviation"
)
CONFIDENCE = 0.95
_MINUS = "\u2212"


@dataclass(frozen=True)
class ArmSummary:
    """Mean, median and sample standard deviation of one arm's values (std ``None`` for n < 2)."""

    n: int
    mean: float | None
    median: float | None
    std: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference:
    """The paired difference ``as_found − relaxation_off`` and its t interval.

    ``relative`` and ``relative_ci`` are the mean and the interval divided by the mean of the
    relaxation-off arm (``None`` when that mean is 0). ``better_seeds`` counts the pairs in
    which the as-found arm is strictly better.
    """

    n: int
    mean: float
    std: float
    standard_error: float
    t_quantile: float
    ci: tuple[float, float]
    reference_mean: float
    relative: float | None
    relative_ci: tuple[float, float] | None
    better_seeds: int
    confidence: float = CONFIDENCE
    method: str = METHOD

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci)
        out["relative_ci"] = None if self.relative_ci is None else list(self.relative_ci)
        return out


def summarize(values: Sequence[float]) -> ArmSummary:
    """Mean, median and sample standard deviation (n − 1) of ``values``."""
    n = len(values)
    if n == 0:
        return ArmSummary(0, None, None, None)
    return ArmSummary(
        n=n,
        mean=statistics.fmean(values),
        median=float(statistics.median(values)),
        std=statistics.stdev(values) if n >= 2 else None,
    )


def t_quantile(probability: float, df: int) -> float:
    """Student's t quantile: ``P(T <= q) = probability`` for ``df`` degrees of freedom."""
    from scipy.stats import t  # scipy is light next to Optuna and torch-free

    if df < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, got {df}")
    return float(t.ppf(probability, df))


def paired_difference(
    as_found: Sequence[float],
    relaxation_off: Sequence[float],
    better: Better,
    confidence: float = CONFIDENCE,
) -> PairedDifference:
    """The paired t interval of ``as_found − relaxation_off`` (pairs in the same order, one per
    seed; at least two pairs)."""
    if len(as_found) != len(relaxation_off):
        raise ValueError(f"{len(as_found)} as-found values but {len(relaxation_off)} to pair")
    n = len(as_found)
    if n < 2:
        raise ValueError(f"a paired interval needs at least 2 pairs, got {n}")
    differences = [a - b for a, b in zip(as_found, relaxation_off, strict=True)]
    mean = statistics.fmean(differences)
    std = statistics.stdev(differences)
    standard_error = std / math.sqrt(n)
    quantile = t_quantile(0.5 + confidence / 2, n - 1)
    ci = (mean - quantile * standard_error, mean + quantile * standard_error)
    reference = statistics.fmean(relaxation_off)
    relative = relative_ci = None
    if reference != 0:
        relative = mean / abs(reference)
        relative_ci = (ci[0] / abs(reference), ci[1] / abs(reference))
    if better == "lower":
        better_seeds = sum(d < 0 for d in differences)
    else:
        better_seeds = sum(d > 0 for d in differences)
    return PairedDifference(
        n=n,
        mean=mean,
        std=std,
        standard_error=standard_error,
        t_quantile=quantile,
        ci=ci,
        reference_mean=reference,
        relative=relative,
        relative_ci=relative_ci,
        better_seeds=better_seeds,
        confidence=confidence,
    )


def _signed(value: float, percent: bool) -> str:
    text = f"{abs(value) * 100:.1f} %" if percent else f"{abs(value):.4g}"
    if value > 0:
        return "+" + text
    if value < 0:
        return _MINUS + text
    return text


def verdict(difference: PairedDifference, better: Better, quantity: str) -> str:
    """One line: does relaxation help, hurt, or is there no measurable gain at this many seeds.

    The gain is measurable when the interval excludes 0; its sign, read with ``better``, says
    whether the as-found (relaxed) arm is the better one. Figures are relative (%) when the
    relaxation-off arm's mean is not 0, else absolute.
    """
    percent = difference.relative is not None and difference.relative_ci is not None
    mean = difference.relative if percent else difference.mean
    low, high = difference.relative_ci if percent else difference.ci  # type: ignore[misc]
    figures = (
        f"{_signed(mean, percent)} {quantity}, "  # type: ignore[arg-type]
        f"{int(difference.confidence * 100)} % CI [{_signed(low, percent)}, "
        f"{_signed(high, percent)}], "
        f"{difference.better_seeds} of {difference.n} seeds better"
    )
    lower_is_better = better == "lower"
    if difference.ci[1] < 0 or difference.ci[0] > 0:
        helps = (difference.ci[1] < 0) == lower_is_better
        return f"relaxation {'helps' if helps else 'hurts'}: {figures}"
    return f"no measurable gain at {difference.n} seeds ({figures})"
