"""Projection of a relaxed model back to an exactly equivariant one (docs/METHOD.md §4)."""

from __future__ import annotations

import torch
from torch import nn

from ._base import (
    FreeInit,
    ProjectionMode,
    RelaxedLayer,
    check_projection_mode,
    copy_module,
    relaxed_layers,
    reset_free,
)


def _replace_relaxed(module: nn.Module, mode: ProjectionMode) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, RelaxedLayer):
            setattr(module, name, child.projected(mode))
        else:
            _replace_relaxed(child, mode)


def project_model(model: nn.Module, mode: ProjectionMode = "orthogonal") -> nn.Module:
    """A deep copy of ``model`` with every relaxed layer replaced by its projection.

    ``"orthogonal"`` keeps ``K_eq + θ·Π(K_free)`` (the closest equivariant layer);
    ``"drop"`` keeps ``K_eq`` (the paper). The result has the original equivariant
    architecture and no relaxation terms; the input model is left untouched.
    """
    check_projection_mode(mode)
    projected = copy_module(model)
    _replace_relaxed(projected, mode)
    projected.train(model.training)
    return projected


def reset_free_terms(
    model: nn.Module, init: FreeInit, init_std: float, seed: int | None = None
) -> None:
    """Re-initialise every relaxed layer's free term (``zeros`` or ``normal``), seeded."""

    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    for layer in relaxed_layers(model):
        reset_free(layer, init, init_std, generator)
