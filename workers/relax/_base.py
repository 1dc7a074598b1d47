"""The relaxed-layer contract: ``f(x) = f_eq(x) + θ·W(x)`` (docs/METHOD.md §1)."""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from search_spaces import CHOICES, SpecError

ProjectionMode = Literal["drop", "orthogonal"]


def check_choice(key: str, value: str) -> str:
    """``value`` if it is one of ``key``'s allowed values (``search_spaces.CHOICES``, the one
    list of them), else :class:`SpecError` naming ``key``."""
    allowed = CHOICES[key]
    if value not in allowed:
        raise SpecError(key, f"expected one of {', '.join(allowed)}, got {value!r}")
    return value


def check_projection_mode(mode: str) -> ProjectionMode:
    """``mode`` if it is a projection (``relax.projection``), else :class:`SpecError`."""
    return check_choice("relax.projection", mode)  # type: ignore[return-value]


FreeInit = Literal["zeros", "normal"]


class RelaxedLayer(nn.Module):
    """Base class of every relaxed layer.

    Implementations must guarantee:

    * ``theta`` (a 0-d buffer, set from outside by :func:`set_theta`) scales the free term;
      with ``theta == 0`` the layer computes exactly its equivariant part.
    * ``projected(mode)`` returns a *new* module of the original equivariant type (no
      relaxation term) equal to ``f_eq + θ·Π(W)`` for ``"orthogonal"`` and ``f_eq`` for
      ``"drop"``; applying it twice changes nothing (idempotent).
    * ``penalty_norm`` / ``penalty_lie`` are the activation penalties' *sums of squares*
      over the whole recorded batch (``Σ ‖W x‖²``, ``Σ_A ‖L_A(W) x‖²``); how they become a
      penalty (the authors' root of the sum over batch and layers, or per sample) is decided
      by :func:`workers.relax.compute_penalties`. They use the input recorded by the last
      forward pass while ``record_inputs`` is on (detached, so only ``W`` receives their
      gradient), and ``recorded_samples`` is that input's batch size. ``penalty_lie`` returns
      ``None`` for groups without a Lie algebra (C_N).
    * ``penalty_proj`` is a mean per element of ``‖W − Π(W)‖²``.
    * ``free_scale`` (``"plain"`` or ``"rms"``) says what multiplies ``W``: ``θ`` or
      ``θ·rms(K_eq)`` (the root mean square of the equivariant kernel, detached), see
      :meth:`free_factor`; projection uses the same factor.
    """

    #: a 0-d buffer (registered in ``__init__``)
    theta: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("theta", torch.zeros(()), persistent=True)
        self.strength: float = 1.0
        self.free_scale: str = "plain"
        self.record_inputs: bool = False
        self._recorded: torch.Tensor | None = None

    # ---- to implement -------------------------------------------------------------
    def free_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def projected(self, mode: ProjectionMode = "orthogonal") -> nn.Module:
        raise NotImplementedError

    def penalty_norm(self) -> torch.Tensor | None:
        raise NotImplementedError

    def penalty_lie(self) -> torch.Tensor | None:
        raise NotImplementedError

    def penalty_proj(self) -> torch.Tensor:
        raise NotImplementedError

    # ---- shared -------------------------------------------------------------------
    def _record(self, x: torch.Tensor) -> None:
        if self.record_inputs and self.training:
            self._recorded = x.detach()

    @property
    def recorded_samples(self) -> int:
        """Batch size (leading dimension) of the recorded input; 0 when nothing is recorded."""
        x = self._recorded
        return 0 if x is None else int(x.shape[0])

    def free_factor(self, equivariant_kernel: torch.Tensor) -> torch.Tensor:
        """What multiplies ``W``: ``θ`` (``plain``) or ``θ·rms(K_eq)`` (``rms``), with
        ``K_eq`` the equivariant kernel in the same dense layout as ``W`` (detached: the
        scale follows the equivariant weights but passes them no gradient)."""
        if self.free_scale == "rms":
            rms = equivariant_kernel.detach().pow(2).mean().sqrt()
            return self.theta * rms
        if self.free_scale != "plain":
            raise ValueError(
                f"relax.free_scale: expected 'plain' or 'rms', got {self.free_scale!r}"
            )
        return self.theta

    def extra_repr(self) -> str:
        return f"theta={float(self.theta):.4g}, strength={self.strength:.4g}"


def copy_module(module: nn.Module) -> nn.Module:
    """Deep copy of ``module`` (escnn modules included, in either mode); ``module`` is not
    touched.

    In eval mode escnn's convolutions and linear maps cache their expanded filter or matrix
    (and bias) as tensors computed with autograd on, and torch refuses to deep-copy such
    non-leaf tensors. The copy memo maps each of them to a detached clone; the copy then
    rebuilds its caches from its own parameters (train, then back to the source's mode), so
    they stay differentiable as in the source.
    """
    memo: dict[int, object] = {}
    for sub in submodules(module):
        for value in (*sub._buffers.values(), *vars(sub).values()):
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    copied = copy.deepcopy(module, memo)
    copied.train()
    copied.train(module.training)
    return copied


def submodules(model: nn.Module) -> list[nn.Module]:
    """``model`` and its submodules, depth first, de-duplicated by identity (see
    :func:`relaxed_layers` for why not ``nn.Module.modules()``)."""
    found: list[nn.Module] = []
    seen: set[int] = set()
    stack = [model]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        found.append(module)
        stack.extend(reversed([m for m in module._modules.values() if m is not None]))
    return found


def relaxed_layers(model: nn.Module) -> list[RelaxedLayer]:
    """All relaxed layers of ``model`` in module order (depth first, like ``modules()``).

    Walks ``_modules`` by identity: ``nn.Module.modules()`` de-duplicates with a set, and
    escnn's basis-expansion modules hash and compare *by value* (``torch.allclose`` on their
    sampled bases), which made this lookup cost milliseconds per training step.
    """
    return [m for m in submodules(model) if isinstance(m, RelaxedLayer)]


def set_theta(model: nn.Module, theta: float) -> None:
    """Set every relaxed layer's θ to ``theta × layer.strength``."""
    for layer in relaxed_layers(model):
        layer.theta.fill_(float(theta) * layer.strength)


def set_layer_strengths(model: nn.Module, strengths: list[float] | float | None) -> None:
    """Per-layer relaxation strengths: a list (one per relaxed layer, in order), or a
    float ``d`` meaning ``d**depth`` (geometric decay with depth), or ``None`` (all 1)."""
    layers = relaxed_layers(model)
    if strengths is None:
        values = [1.0] * len(layers)
    elif isinstance(strengths, (int, float)):
        values = [float(strengths) ** i for i in range(len(layers))]
    else:
        if len(strengths) != len(layers):
            raise ValueError(
                f"layer strengths: got {len(strengths)} values for {len(layers)} relaxed layers"
            )
        values = [float(s) for s in strengths]
    for layer, s in zip(layers, values, strict=True):
        layer.strength = s


def reset_free(
    layer: RelaxedLayer, init: FreeInit, init_std: float, generator: torch.Generator | None = None
) -> None:
    """(Re-)initialise a layer's free term: zeros, or i.i.d. normal with std ``init_std``."""
    check_choice("relax.init", init)
    for p in layer.free_parameters():
        with torch.no_grad():
            if init == "zeros":
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * init_std)


def set_free_scale(model: nn.Module, mode: str) -> None:
    """``relax.free_scale`` for every relaxed layer: ``plain`` (θ·W) or ``rms`` (θ·rms(K_eq)·W)."""
    check_choice("relax.free_scale", mode)
    for layer in relaxed_layers(model):
        layer.free_scale = mode


def free_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The free-term parameters of every relaxed layer (in layer order)."""
    return [p for layer in relaxed_layers(model) for p in layer.free_parameters()]


def record_inputs(model: nn.Module, on: bool) -> None:
    """Switch input recording (needed by the activation penalties) for every relaxed layer."""
    for layer in relaxed_layers(model):
        layer.record_inputs = on
        if not on:
            layer._recorded = None
