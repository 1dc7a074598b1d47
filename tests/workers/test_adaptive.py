"""The ``adaptive`` family: the dual update on toy problems with a known solution, the
relaxed-layer contract with learned strengths, and a trial that trains, resumes and ends
projected and certified (docs/METHOD.md §2)."""

from __future__ import annotations

import json

import pytest
import torch

from workers.relax import (
    DualStrengths,
    RelaxedScalarVectorLinear,
    act_on_features,
    make_schedule,
    project_model,
    relaxation_end,
    reset_free_terms,
)
from workers.training import Trainer, TrialConfig, train, verify_checkpoint

# ---- the dual update on  min ½ Σ_i (γ_i − a_i)²  subject to  γ_i = 0 ----------------------
# The solution is γ* = 0 and, from ∂/∂γ_i [½(γ_i − a_i)² + λ_i γ_i] = 0 at γ = 0, the
# multipliers λ*_i = a_i: each layer's multiplier ends at the pull of its own objective.

TARGETS = torch.tensor([0.8, -0.3, 0.0])


def _descent_ascent(
    *, lr: float, dual_lr: float, optimism: float = 0.0, steps: int = 4000
) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's two steps (``primal_step``, then ``dual_step``) on the toy Lagrangian,
    ``steps`` times; trajectories of γ and λ, one row per step."""
    strengths = DualStrengths(
        len(TARGETS), gamma_init=1.0, dual_lr=dual_lr, optimism=optimism, lr=lr
    )
    gammas, duals = [], []
    for _ in range(steps):
        loss = 0.5 * (strengths.gamma - TARGETS).pow(2).sum() + strengths.lagrangian()
        loss.backward()
        strengths.primal_step()
        strengths.dual_step()
        gammas.append(strengths.gamma.detach().clone())
        duals.append(strengths.dual.clone())
    return torch.stack(gammas), torch.stack(duals)


def test_dual_ascent_reaches_the_constraint_and_the_known_multipliers():
    gammas, duals = _descent_ascent(lr=0.1, dual_lr=0.02)
    assert gammas[-1].abs().max() < 1e-4
    assert duals[-1] == pytest.approx(TARGETS, abs=1e-4)
    # an objective that does not pull (a = 0) needs no multiplier
    assert abs(float(duals[-1][2])) < 1e-4


def test_the_multiplier_is_signed_for_an_equality_constraint():
    # a negative pull needs a negative multiplier; projecting λ onto λ ≥ 0 would leave γ < 0
    _, duals = _descent_ascent(lr=0.1, dual_lr=0.02)
    assert float(duals[-1][1]) == pytest.approx(-0.3, abs=1e-4)


def _overshoot_swings_settle(gammas: torch.Tensor) -> tuple[float, int, int]:
    """For γ_0 (it starts at 1 and should settle at 0): its largest excursion below 0, the
    number of its sign changes, and the step after which it stays within 1e-3 of 0."""
    g = gammas[:, 0]
    signs = torch.sign(g[g.abs() > 1e-6])
    outside = (g.abs() > 1e-3).nonzero()
    settle = int(outside[-1]) + 1 if len(outside) else 0
    return float((-g).clamp(min=0).max()), int((signs[1:] != signs[:-1]).sum()), settle


def test_optimism_damps_the_oscillation_of_plain_ascent():
    # an under-damped setting of plain descent–ascent (dual step large against the primal):
    # measured, plain overshoots by 0.60 with 27 sign changes and settles (within 1e-3 of 0)
    # after 262 steps; ω = 1 (critical damping of the pull-free oscillator) does not
    # overshoot at all and settles after 85 steps
    plain, _ = _descent_ascent(lr=0.05, dual_lr=0.5, steps=3000)
    damped, damped_duals = _descent_ascent(lr=0.05, dual_lr=0.5, optimism=1.0, steps=3000)
    plain_overshoot, plain_swings, plain_settle = _overshoot_swings_settle(plain)
    damped_overshoot, damped_swings, damped_settle = _overshoot_swings_settle(damped)
    assert plain_swings >= 20 and plain_overshoot > 0.5
    assert damped_swings == 0 and damped_overshoot < 1e-6  # none beyond rounding
    assert damped_settle < plain_settle / 2
    # and it reaches the same solution
    assert damped[-1].abs().max() < 1e-4
    assert damped_duals[-1] == pytest.approx(TARGETS, abs=1e-4)


def test_optimism_is_no_help_where_plain_ascent_does_not_oscillate():
    # over-damped (small dual step): plain ascent already settles without overshoot, and
    # optimism only slows it (measured: 261 steps plain, 614 with ω = 1)
    plain, _ = _descent_ascent(lr=0.1, dual_lr=0.02, steps=3000)
    damped, _ = _descent_ascent(lr=0.1, dual_lr=0.02, optimism=1.0, steps=3000)
    plain_overshoot, plain_swings, plain_settle = _overshoot_swings_settle(plain)
    _, _, damped_settle = _overshoot_swings_settle(damped)
    assert plain_overshoot < 1e-6 and plain_swings == 0
    assert damped_settle > plain_settle


def test_release_ends_at_exactly_zero_and_keeps_the_multipliers():
    strengths = DualStrengths(2, gamma_init=0.5, dual_lr=0.1)
    strengths.dual_step()
    duals = strengths.duals()
    strengths.release()
    assert strengths.strengths() == [0.0, 0.0] and strengths.duals() == duals


# ---- the schedule: a gate with the θ = 0 tail --------------------------------------------


def test_adaptive_schedule_is_a_gate_with_the_common_tail():
    gate = make_schedule({"relax.schedule": "adaptive"}, epochs=5)
    assert gate.family == "adaptive"
    assert gate(0.0) == gate(0.79) == 1.0
    assert gate(0.8) == gate(1.0) == 0.0  # one epoch of five > min_tail 0.1
    assert relaxation_end(gate) == pytest.approx(0.8)
    assert relaxation_end(make_schedule({"relax.schedule": "adaptive"}, epochs=20)) == 0.9


# ---- the relaxed-layer contract with learned strengths -----------------------------------


def _layer() -> RelaxedScalarVectorLinear:
    torch.manual_seed(0)
    layer = RelaxedScalarVectorLinear(3, 2, 2, 2)
    reset_free_terms(layer, "normal", 0.5, seed=1)
    return layer


def test_learned_strength_drives_the_layer_and_gets_the_gradient():
    layer = _layer()
    x = torch.randn(7, 3 + 3 * 2)
    strengths = DualStrengths.for_model(layer, gamma_init=0.7, dual_lr=0.1)
    strengths.attach(layer)
    out = layer(x)
    out.pow(2).sum().backward()
    assert strengths.gamma.grad is not None and float(strengths.gamma.grad.abs()) > 0
    # the same output as the plain θ buffer at the same value
    strengths.settle(layer)
    assert not layer.theta.requires_grad and float(layer.theta) == pytest.approx(0.7)
    assert torch.allclose(layer(x), out.detach(), atol=1e-6)


def test_contract_holds_at_the_end_state_and_mid_training():
    layer = torch.nn.Sequential(_layer())  # project_model replaces relaxed children
    x = torch.randn(5, 3 + 3 * 2)
    strengths = DualStrengths.for_model(layer, gamma_init=0.6, dual_lr=0.1)
    # mid-training (γ applied, differentiable): projection copies a plain layer and is
    # exactly O(3)-equivariant while the relaxed layer is not
    strengths.attach(layer)
    projected = project_model(layer, "orthogonal")
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(2)))
    q = -q  # an improper rotation too
    with torch.no_grad():
        relaxed_err = (layer(act_on_features(x, 3, q)) - act_on_features(layer(x), 2, q)).norm()
        proj_err = (
            projected(act_on_features(x, 3, q)) - act_on_features(projected(x), 2, q)
        ).norm()
    assert relaxed_err > 1e-3 and proj_err < 1e-5
    # the end state (released, θ = 0): the relaxed layer equals both projections
    strengths.release()
    strengths.settle(layer, 0.0)
    with torch.no_grad():
        for mode in ("drop", "orthogonal"):
            plain = project_model(layer, mode)
            assert not isinstance(plain[0], RelaxedScalarVectorLinear)
            assert torch.allclose(layer(x), plain(x), atol=1e-6)


# ---- a whole trial ------------------------------------------------------------------------

TINY_NBODY = dict(
    model={"hidden": 16, "layers": 2},
    data={"train_size": 64, "val_size": 32, "test_size": 32},
)
ADAPTIVE = {
    "relax.schedule": "adaptive",
    "relax.gamma_init": 1.0,
    "relax.dual_lr": 0.05,
    "optim.batch_size": 16,
}


def _config(epochs: int = 3, **hparams) -> TrialConfig:
    return TrialConfig(
        task="nbody",
        hparams={**ADAPTIVE, **hparams},
        epochs=epochs,
        seed=0,
        device="cpu",
        **TINY_NBODY,
    )


def test_trial_learns_strengths_ends_at_zero_and_is_certified(tmp_path):
    result = train(_config(), out_dir=tmp_path / "ckpt")
    first, *_, last = result.reports
    assert first.strengths is not None and first.duals is not None
    assert len(first.strengths) == len(first.duals) == 2  # one per relaxed layer
    assert first.theta == pytest.approx(max(abs(g) for g in first.strengths))
    assert first.strengths != [1.0, 1.0]  # learned, not fixed
    assert any(v != 0.0 for v in first.duals)  # the multipliers moved
    # the tail (the last of 3 epochs): strengths exactly 0, θ = 0, relaxed ≡ projected
    assert last.strengths == [0.0, 0.0] and last.theta == 0.0
    assert last.val_relaxed == pytest.approx(last.val_projected, rel=1e-5)
    certificate = json.loads((tmp_path / "ckpt/certificate.json").read_text())
    assert certificate["passed"]
    assert verify_checkpoint(tmp_path / "ckpt")["passed"]
    metrics = json.loads((tmp_path / "ckpt/metrics.json").read_text())
    assert metrics["history"][0]["strengths"] == first.strengths


def test_resume_restores_strengths_and_duals_exactly(tmp_path):
    config = _config(epochs=3)
    straight = Trainer(config).fit().reports
    first = Trainer(config)
    first.fit(should_stop=lambda: first.epoch == 1)
    first.save_state(tmp_path / "state")
    state = torch.load(tmp_path / "state/state.pt", weights_only=True)
    assert set(state["strengths"]) == {"gamma", "dual", "previous"}
    resumed = Trainer(config)
    assert resumed.load_state(tmp_path / "state")
    assert resumed.strengths is not None
    assert resumed.strengths.strengths() == straight[0].strengths
    assert resumed.strengths.duals() == straight[0].duals
    rest = resumed.fit().reports
    assert [r.val_projected for r in rest] == pytest.approx(
        [r.val_projected for r in straight], rel=1e-6
    )
    for a, b in zip(rest, straight, strict=True):
        assert a.strengths == pytest.approx(b.strengths, rel=1e-6, abs=1e-9)
        assert a.duals == pytest.approx(b.duals, rel=1e-6, abs=1e-9)


def test_strengths_take_plain_gradient_steps_outside_adamw_and_baseline_has_none():
    trainer = Trainer(_config(**{"relax.strength_lr": 0.3}))
    strengths = trainer.strengths
    assert strengths is not None and strengths.lr == 0.3
    in_adamw = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(strengths.gamma) not in in_adamw
    strengths.dual.fill_(0.5)
    strengths.gamma.grad = torch.tensor([0.2, -0.1])  # the task's pull
    before = strengths.gamma.detach().clone()
    strengths.gamma.grad += strengths.dual  # what backward gives: task pull + λ
    strengths.primal_step()
    assert torch.allclose(strengths.gamma.detach(), before - 0.3 * torch.tensor([0.7, 0.4]))
    assert strengths.gamma.grad is None
    off = Trainer(_config(**{"relax.schedule": "none"}))
    assert off.strengths is None and off.free_params == []
