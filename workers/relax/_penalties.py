"""Penalties on the free terms (METHOD.md §3), averaged so weights do not depend on batch
size, width or depth: each layer's penalty is a per-element mean, and the model's penalty
is the mean over the layers that define it."""

from __future__ import annotations

import torch
from torch import nn

from ._base import relaxed_layers

PENALTIES = ("lie", "norm", "proj")


def compute_penalties(model: nn.Module, which: tuple[str, ...] = PENALTIES) -> dict[str, torch.Tensor]:
    """``{"lie": …, "norm": …, "proj": …}`` for the requested penalties.

    ``lie`` and ``norm`` use the inputs recorded by the last forward pass (switch recording
    on with :func:`workers.relax.record_inputs`). A penalty no layer defines (e.g. ``lie``
    for C_N) is absent from the result.
    """
    out: dict[str, torch.Tensor] = {}
    layers = relaxed_layers(model)
    for name in which:
        values = []
        for layer in layers:
            value = getattr(layer, f"penalty_{name}")()
            if value is not None:
                values.append(value)
        if values:
            out[name] = torch.stack(values).mean()
    return out
