"""Penalties on the free terms (docs/METHOD.md §3).

The activation penalties (``norm``: ``‖W x‖``; ``lie``: ``‖L_A(W) x‖``) look at the whole
batch and come in two forms (``relax.penalty_form``):

* ``paper`` — the authors' ``sqrt(Σ over batch, points and layers of ‖W x‖²)``: a norm of
  everything projection removes, not a mean. It grows with the batch size (as √B), so its
  weight is tied to the batch size (the authors: λ = 0.01).
* ``per_sample`` — ``sqrt(Σ_layers Σ_batch ‖W x‖² / B)`` with ``B`` each layer's batch size:
  the same root with the sum divided by the batch size inside it, so the weight does not
  depend on the batch size (``paper`` at λ equals ``per_sample`` at λ·√B).

The projection-distance penalty ``proj`` is the mean over layers of each layer's
per-element mean of ``‖W − Π(W)‖²`` (a property of the weights, not of the batch).
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import relaxed_layers

PENALTIES = ("lie", "norm", "proj")
PENALTY_FORMS = ("per_sample", "paper")

#: below this sum of squares the root's gradient is taken as 0 (``sqrt`` has none at 0)
_ROOT_FLOOR = 1e-20


def _root(total: torch.Tensor) -> torch.Tensor:
    # clamp_min passes no gradient below the floor: W = 0 gives a 0 gradient, not NaN
    return total.clamp_min(_ROOT_FLOOR).sqrt()


def compute_penalties(
    model: nn.Module, which: tuple[str, ...] = PENALTIES, form: str = "per_sample"
) -> dict[str, torch.Tensor]:
    """``{"lie": …, "norm": …, "proj": …}`` for the requested penalties.

    ``lie`` and ``norm`` use the inputs recorded by the last forward pass (switch recording
    on with :func:`workers.relax.record_inputs`) and take ``form`` (module docstring). A
    penalty no layer defines (e.g. ``lie`` for C_N) is absent from the result.
    """
    if form not in PENALTY_FORMS:
        raise ValueError(f"relax.penalty_form: expected one of {PENALTY_FORMS}, got {form!r}")
    out: dict[str, torch.Tensor] = {}
    layers = relaxed_layers(model)
    for name in which:
        values = []
        for layer in layers:
            value = getattr(layer, f"penalty_{name}")()
            if value is None:
                continue
            if name != "proj" and form == "per_sample":
                value = value / max(layer.recorded_samples, 1)
            values.append(value)
        if not values:
            continue
        if name == "proj":
            out[name] = torch.stack(values).mean()
        else:
            out[name] = _root(torch.stack(values).sum())
    return out
