"""θ schedules: shapes, exact zero at the end, built from plain dicts (docs/METHOD.md §2)."""

from __future__ import annotations

import math

import pytest
import torch

from workers.relax import (
    SCHEDULE_FAMILIES,
    RelaxedVectorLinear,
    make_schedule,
    relaxation_end,
    set_layer_strengths,
    set_theta,
)

GRID = [i / 1000 for i in range(1001)]


@pytest.mark.parametrize("family", [f for f in SCHEDULE_FAMILIES if f != "constant"])
def test_every_family_but_constant_ends_at_exactly_zero(family):
    schedule = make_schedule({"relax.schedule": family, "relax.theta_max": 0.7})
    assert schedule(1.0) == 0.0
    assert schedule.ends_at_zero()
    # adaptive's schedule is the gate (1, then the tail) on its learned strengths
    top = 1.0 if family == "adaptive" else 0.7
    assert all(0.0 <= schedule(t) <= top + 1e-12 for t in GRID)


def test_triangular_is_the_paper_shape():
    # min_tail 0: the bare family curve (the trainer always adds a tail)
    s = make_schedule({"family": "triangular", "theta_max": 1.0, "peak": 0.5, "min_tail": 0})
    assert (
        s(0.0) == 0.0
        and s(0.5) == 1.0
        and s(0.25) == pytest.approx(0.5)
        and s(0.75) == pytest.approx(0.5)
    )
    assert s(0.999) == pytest.approx(0.002)  # unlike the authors' code, it reaches 0 at t = 1


@pytest.mark.parametrize("family", ["linear_decay", "cosine", "step", "warmup_hold_decay"])
def test_decaying_families_are_zero_after_zero_at(family):
    s = make_schedule(
        {
            "relax.schedule": family,
            "relax.theta_max": 2.0,
            "relax.zero_at": 0.6,
            "relax.min_tail": 0,
        }
    )
    assert all(s(t) == 0.0 for t in GRID if t >= 0.6)
    assert s(0.3) > 0.0
    assert relaxation_end(s) == 0.6


def test_family_specific_shapes():
    bare = {"min_tail": 0}
    assert make_schedule({"family": "linear_decay", "theta_max": 1, "zero_at": 0.5, **bare})(
        0.25
    ) == pytest.approx(0.5)
    assert make_schedule({"family": "cosine", "theta_max": 1, "zero_at": 0.5, **bare})(
        0.25
    ) == pytest.approx(0.5)
    assert make_schedule({"family": "cosine", "theta_max": 1, "zero_at": 0.5, **bare})(0.0) == 1.0
    step = make_schedule({"family": "step", "theta_max": 0.3, "zero_at": 0.5, **bare})
    assert step(0.49) == 0.3 and step(0.5) == 0.0
    whd = make_schedule(
        {
            "family": "warmup_hold_decay",
            "theta_max": 1,
            "warmup": 0.1,
            "hold": 0.2,
            "zero_at": 0.8,
            **bare,
        }
    )
    assert whd(0.05) == pytest.approx(0.5) and whd(0.2) == 1.0 and whd(0.55) == pytest.approx(0.5)
    const = make_schedule({"family": "constant", "theta": 0.2})
    assert const(0.0) == const(1.0) == 0.2 and not const.ends_at_zero()
    assert make_schedule({"relax.schedule": "none"})(0.5) == 0.0


DECAYING = [f for f in SCHEDULE_FAMILIES if f not in ("none", "constant")]


@pytest.mark.parametrize("family", DECAYING)
@pytest.mark.parametrize(
    ("epochs", "steps_per_epoch", "min_tail"),
    [(6, 32, 0.1), (20, 7, 0.1), (3, 50, 0.25), (12, 5, 0.0)],
)
def test_theta_is_exactly_zero_in_the_tail(family, epochs, steps_per_epoch, min_tail):
    """θ is 0 on the last max(1 epoch, min_tail) of the steps the trainer takes, whatever
    the family's own zero_at (here 1: the family would only reach 0 at the very end)."""
    params = {
        "relax.schedule": family,
        "relax.theta_max": 1.0,
        "relax.zero_at": 1.0,
        "relax.warmup": 0.1,
        "relax.hold": 0.2,
        "relax.min_tail": min_tail,
    }
    s = make_schedule(params, epochs=epochs)
    total = epochs * steps_per_epoch
    thetas = [s(i / total) for i in range(total)]  # the progress of each step (Trainer.fit)
    tail_steps = max(steps_per_epoch, math.ceil(min_tail * total))
    assert all(theta == 0.0 for theta in thetas[-tail_steps:])
    # ... and the relaxation is really there before the tail, squeezed, not cut off
    assert max(thetas[: total - tail_steps]) > 0.5
    assert thetas[total - tail_steps - 1] > 0.0 or family == "step"
    assert relaxation_end(s) == pytest.approx(1.0 - max(min_tail, 1.0 / epochs))


def test_tail_squeezes_the_curve():
    s = make_schedule({"family": "triangular", "theta_max": 1.0, "peak": 0.5, "min_tail": 0.2})
    assert s(0.4) == 1.0 and s(0.2) == pytest.approx(0.5) and s(0.8) == 0.0
    # one epoch at least, but not when there is only one epoch (no relaxation at all)
    assert relaxation_end(make_schedule({"family": "cosine", "min_tail": 0.1}, epochs=4)) == 0.75
    assert relaxation_end(make_schedule({"family": "cosine", "min_tail": 0.1}, epochs=1)) == 0.9


def test_triangular_zero_at_places_the_triangle():
    s = make_schedule(
        {"family": "triangular", "theta_max": 2.0, "peak": 0.25, "zero_at": 0.5, "min_tail": 0}
    )
    assert s(0.125) == 2.0 and s(0.0625) == pytest.approx(1.0) and s(0.3125) == pytest.approx(1.0)
    assert all(s(t) == 0.0 for t in GRID if t >= 0.5)


def test_constant_gets_no_tail():
    s = make_schedule({"family": "constant", "theta": 0.3, "min_tail": 0.5}, epochs=10)
    assert s(0.99) == 0.3 and not s.ends_at_zero()


def test_schedules_are_pure_functions_of_progress():
    s = make_schedule({"family": "cosine", "theta_max": 1, "zero_at": 0.9})
    forward = [s(t) for t in GRID]
    backward = [s(t) for t in reversed(GRID)][::-1]
    assert forward == backward


def test_bad_values_name_the_key():
    with pytest.raises(ValueError, match="relax.schedule"):
        make_schedule({"relax.schedule": "zigzag"})
    with pytest.raises(ValueError, match="relax.peak"):
        make_schedule({"relax.schedule": "triangular", "relax.peak": 1.5})
    with pytest.raises(ValueError, match="relax.min_tail"):
        make_schedule({"relax.schedule": "cosine", "relax.min_tail": 1.0})


def test_per_layer_strengths_scale_theta():
    model = torch.nn.Sequential(
        RelaxedVectorLinear(2, 2), RelaxedVectorLinear(2, 2), RelaxedVectorLinear(2, 1)
    )
    set_layer_strengths(model, 0.5)  # geometric decay with depth
    set_theta(model, 0.8)
    assert [float(m.theta) for m in model] == pytest.approx([0.8, 0.4, 0.2])
    set_layer_strengths(model, [1.0, 0.0, 2.0])
    set_theta(model, 0.5)
    assert [float(m.theta) for m in model] == pytest.approx([0.5, 0.0, 1.0])
    with pytest.raises(ValueError, match="3 relaxed layers"):
        set_layer_strengths(model, [1.0])
