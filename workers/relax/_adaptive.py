"""The ``adaptive`` family: learned per-layer strengths driven to 0 by dual variables
(docs/METHOD.md §2).

Every relaxed layer ``i`` gets a learnable strength ``γ_i`` in place of a scheduled θ, and
the constraint ``γ_i = 0``. Training seeks a saddle point of the Lagrangian

    L(w, γ, λ) = task loss(w, γ) + Σ_i λ_i · γ_i

by primal descent and dual ascent, once per step each: the weights ``w`` take the trainer's
AdamW step, the strengths a plain gradient step on the Lagrangian (step size ``α``,
``relax.strength_lr``), then the multipliers ascend:

    γ_i ← γ_i − α · (∂task/∂γ_i + λ_i)
    λ_i ← λ_i + η · γ_i + κ · (γ_i − γ_i^prev),        κ = ω · 2·sqrt(η / α)

with ``η`` the dual step (``relax.dual_lr``) and ``ω`` the optimism (``relax.dual_optimism``).
``ω = 0`` is plain gradient ascent; ``ω > 0`` the optimistic (PI) form, whose proportional
term ``κ`` damps the oscillation of plain descent–ascent: without the task's pull the two
steps make ``Δ²γ + α·κ·Δγ + α·η·γ = 0``, a discrete oscillator that ``κ = 2·sqrt(η/α)``
damps critically, so ``ω = 1`` is critical damping whatever the step sizes.

The strengths take plain gradient steps, not Adam's: Adam divides each step by the
gradient's running magnitude, so ``γ_i`` would fall at about ``α`` per step whatever the size
of ``λ_i`` and of the task's pull, and the rate would no longer be set by the data.

``γ_i = 0`` is an *equality* constraint, so ``λ_i`` has no sign constraint (the ``max(0, ·)``
projection of an inequality's multiplier does not apply): a layer whose task gradient pulls
``γ_i`` up meets a growing ``λ_i`` until ``λ_i`` balances that gradient, at ``γ_i = 0``. A constant multiplier balancing the task's pull on ``γ_i`` at 0 is
exactly the KKT condition ``∂task/∂γ_i + λ_i = 0``.

Nothing here is a function of progress, so resuming needs :meth:`DualStrengths.state_dict`
(``γ``, ``λ`` and the previous violation; the plain step keeps no other state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ._base import RelaxedLayer, relaxed_layers


class DualStrengths(nn.Module):
    """Learnable strengths ``γ`` (a parameter) and dual variables ``λ`` (a buffer), one of
    each per relaxed layer of a model, in module order."""

    dual: torch.Tensor
    previous: torch.Tensor

    def __init__(
        self,
        layers: int,
        gamma_init: float = 1.0,
        dual_lr: float = 1e-3,
        optimism: float = 0.0,
        scales: Sequence[float] | None = None,
        lr: float = 1e-2,
    ) -> None:
        super().__init__()
        scale = torch.ones(layers) if scales is None else torch.tensor(list(scales))
        if scale.shape != (layers,):
            raise ValueError(f"{len(scale)} strength scales for {layers} relaxed layers")
        self.gamma = nn.Parameter(float(gamma_init) * scale.float())
        self.register_buffer("dual", torch.zeros(layers))
        self.register_buffer("previous", self.gamma.detach().clone())
        self.dual_lr = float(dual_lr)
        self.optimism = float(optimism)
        self.lr = float(lr)
        #: κ, the proportional gain of the optimistic dual step (ω × critical damping)
        self.damping = self.optimism * 2.0 * math.sqrt(self.dual_lr / self.lr)

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        gamma_init: float,
        dual_lr: float,
        optimism: float = 0.0,
        lr: float = 1e-2,
    ) -> DualStrengths:
        """One strength per relaxed layer of ``model``, ``γ_i = gamma_init × layer.strength``
        (``relax.layer_decay`` sets those; 1 by default)."""
        layers = relaxed_layers(model)
        return cls(
            len(layers),
            gamma_init,
            dual_lr,
            optimism,
            scales=[layer.strength for layer in layers],
            lr=lr,
        )

    def lagrangian(self) -> torch.Tensor:
        """``Σ_i λ_i · γ_i``: its gradient on ``γ`` is ``λ`` (``λ`` is not differentiated)."""
        return (self.dual.detach() * self.gamma).sum()

    def attach(self, model: nn.Module) -> None:
        """Make every relaxed layer's θ the (differentiable) ``γ_i`` for the next forward."""
        layers = self._layers(model)
        for index, layer in enumerate(layers):
            layer.theta = self.gamma[index]

    def settle(self, model: nn.Module, gate: float = 1.0) -> None:
        """Give every relaxed layer a plain θ buffer again, ``gate × γ_i`` (detached): what
        the model holds between steps, for measuring, projecting and saving."""
        layers = self._layers(model)
        with torch.no_grad():
            for index, layer in enumerate(layers):
                layer.theta = (self.gamma[index].detach() * float(gate)).clone()

    @torch.no_grad()
    def primal_step(self) -> None:
        """``γ ← γ − α · ∂L/∂γ`` from the gradient of the last backward pass (the task's pull
        plus ``λ``), then clear that gradient. No gradient (γ not used) leaves γ as it is."""
        if self.gamma.grad is not None:
            self.gamma.sub_(self.lr * self.gamma.grad)
            self.gamma.grad = None

    @torch.no_grad()
    def dual_step(self) -> None:
        """One (optimistic) gradient-ascent step of ``λ`` on the violation ``γ``."""
        violation = self.gamma.detach()
        self.dual.add_(self.dual_lr * violation + self.damping * (violation - self.previous))
        self.previous.copy_(violation)

    @torch.no_grad()
    def release(self) -> None:
        """End the relaxation: ``γ = 0`` exactly (the θ = 0 tail); ``λ`` is kept as it was."""
        self.gamma.zero_()
        self.previous.zero_()

    def strengths(self) -> list[float]:
        return [float(g) for g in self.gamma.detach()]

    def duals(self) -> list[float]:
        return [float(v) for v in self.dual]

    def largest(self) -> float:
        """``max_i |γ_i|``: the one θ a report shows for the whole model."""
        return float(self.gamma.detach().abs().max()) if self.gamma.numel() else 0.0

    def _layers(self, model: nn.Module) -> list[RelaxedLayer]:
        layers = relaxed_layers(model)
        if len(layers) != self.gamma.numel():
            raise ValueError(
                f"{self.gamma.numel()} adaptive strengths for {len(layers)} relaxed layers"
            )
        return layers
