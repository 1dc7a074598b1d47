"""The gain report's statistics against hand computations."""

from __future__ import annotations

import math

import pytest

from service import _gain_stats as stats


def test_arm_summary_by_hand() -> None:
    summary = stats.summarize([0.10, 0.12, 0.11, 0.20])
    assert summary.n == 4
    assert summary.mean == pytest.approx(0.1325)  # 0.53 / 4
    assert summary.median == pytest.approx(0.115)  # (0.11 + 0.12) / 2
    # deviations −0.0325, −0.0125, −0.0225, 0.0675; squares 0.00105625 + 0.00015625
    # + 0.00050625 + 0.00455625 = 0.006275; divided by n − 1 = 3
    assert summary.std == pytest.approx(math.sqrt(0.006275 / 3))
    assert stats.summarize([0.3]).std is None
    assert stats.summarize([]).mean is None


def test_paired_t_interval_by_hand() -> None:
    """d = (−0.03, −0.03, −0.01): mean −0.0233333, sd √(2.6667e-4 / 2) = 0.0115470,
    se = sd / √3 = 0.0066667, t(0.975, 2) = 4.302653 (tables), half-width 0.0286844."""
    d = stats.paired_difference([0.10, 0.12, 0.11], [0.13, 0.15, 0.12], "lower")
    assert d.n == 3
    assert d.mean == pytest.approx(-0.0233333, abs=1e-7)
    assert d.std == pytest.approx(0.0115470, abs=1e-7)
    assert d.standard_error == pytest.approx(0.0066667, abs=1e-7)
    assert d.t_quantile == pytest.approx(4.302653, abs=1e-6)
    assert d.ci[0] == pytest.approx(-0.0520177, abs=1e-7)
    assert d.ci[1] == pytest.approx(0.0053510, abs=1e-7)
    assert d.reference_mean == pytest.approx(0.1333333, abs=1e-7)
    assert d.relative == pytest.approx(-0.175)  # −0.0233333 / 0.1333333
    assert d.relative_ci[0] == pytest.approx(-0.0520177 / 0.1333333, abs=1e-6)
    assert d.better_seeds == 3
    assert "paired t interval" in d.method


@pytest.mark.parametrize(("df", "expected"), [(1, 12.706205), (4, 2.776445), (29, 2.045230)])
def test_t_quantiles_match_the_tables(df: int, expected: float) -> None:
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)


def test_verdicts_follow_the_direction() -> None:
    # lower is better (error, MSE): a negative difference whose interval excludes 0 helps
    helps = stats.paired_difference(
        [0.10, 0.12, 0.11, 0.10, 0.09], [0.13, 0.15, 0.12, 0.12, 0.11], "lower"
    )
    assert stats.verdict(helps, "lower", "test error") == (
        "relaxation helps: \u221217.5 % test error, 95 % CI [\u221225.7 %, \u22129.2 %], "
        "5 of 5 seeds better"
    )
    # the same numbers read as a metric where higher is better: relaxation hurts
    hurts = stats.paired_difference(
        [0.10, 0.12, 0.11, 0.10, 0.09], [0.13, 0.15, 0.12, 0.12, 0.11], "higher"
    )
    assert stats.verdict(hurts, "higher", "test score").startswith("relaxation hurts: \u221217.5 %")
    assert hurts.better_seeds == 0
    # an interval containing 0 is no measurable gain, whatever the mean
    noisy = stats.paired_difference([0.10, 0.12, 0.11], [0.13, 0.15, 0.12], "lower")
    text = stats.verdict(noisy, "lower", "test error")
    assert text.startswith("no measurable gain at 3 seeds (\u221217.5 % test error")
    assert "3 of 3 seeds better" in text


def test_identical_arms_are_no_gain_and_a_zero_reference_is_absolute() -> None:
    same = stats.paired_difference([0.2, 0.3], [0.2, 0.3], "lower")
    assert same.ci == (0.0, 0.0) and same.better_seeds == 0
    assert stats.verdict(same, "lower", "test MSE").startswith("no measurable gain at 2 seeds")
    zero = stats.paired_difference([0.01, 0.02], [0.0, 0.0], "lower")
    assert zero.relative is None
    assert "+0.015 test error" in stats.verdict(zero, "lower", "test error")


def test_refuses_what_cannot_be_paired() -> None:
    with pytest.raises(ValueError, match="at least 2 pairs"):
        stats.paired_difference([0.1], [0.2], "lower")
    with pytest.raises(ValueError, match="to pair"):
        stats.paired_difference([0.1, 0.2], [0.2], "lower")
