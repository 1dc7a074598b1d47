"""Normalisation statistics of a projected model (docs/METHOD.md §4).

Batch normalisation keeps running statistics of the activations it saw in training. In a
relaxed model those activations include the free term ``θ·W(x)``; projection removes (or
changes) that term, so the projected copy would normalise with statistics of a different
network. :func:`recompute_normalisation` forgets them and measures them again on a fixed set
of training inputs, with the projected model itself: every normalisation layer is reset,
switched to a cumulative average (``momentum = None``), and the inputs are passed through
in train mode without gradient. The model's weights are untouched.

It finds torch batch norms (``BatchNorm1d/2d/3d``; escnn's ``InnerBatchNorm`` is built from
them) and escnn's own (``IIDBatchNorm``, ``NormBatchNorm``, ``GNormBatchNorm``…): every
module with ``reset_running_stats`` and ``momentum`` that tracks running statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ._base import submodules

#: training samples the statistics are measured on (a few forward batches)
DEFAULT_SAMPLES = 1024


def normalisation_layers(model: nn.Module) -> list[Any]:
    """The modules of ``model`` that keep running statistics (in module order): torch's and
    escnn's batch norms alike, used through ``reset_running_stats`` and ``momentum``."""
    return [
        m
        for m in submodules(model)
        if callable(getattr(m, "reset_running_stats", None))
        and hasattr(m, "momentum")
        and getattr(m, "track_running_stats", True)
    ]


@torch.no_grad()
def recompute_normalisation(model: nn.Module, batches: Iterable[Sequence[torch.Tensor]]) -> int:
    """Reset every normalisation layer of ``model`` and measure its statistics again on
    ``batches`` (each a tuple of model inputs, called as ``model(*inputs)``).

    Cumulative average over the batches, train mode, no gradient; the model's mode and each
    layer's momentum are restored afterwards. Returns the number of samples seen (0, and
    nothing is run, when the model has no normalisation layer).
    """
    layers = normalisation_layers(model)
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    was_training = model.training
    seen = 0
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts the same
        model.train()
        for inputs in batches:
            model(*inputs)
            seen += int(inputs[0].shape[0])
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    if seen == 0:
        raise ValueError("recompute_normalisation: no input batches given")
    return seen


def sample_batches(
    dataset: Any,  # a map-style torch Dataset with a length
    samples: int = DEFAULT_SAMPLES,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[tuple[torch.Tensor, ...]]:
    """``samples`` items of ``dataset`` (all if it is smaller), drawn once with ``seed``, as
    input batches (the target, the last element of each item, is left out)."""
    n = len(dataset)
    count = min(int(samples), n)
    if count <= 0:
        return []
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].tolist()
    subset = torch.utils.data.Subset(dataset, order)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False)
    batches = [tuple(t.to(device) for t in batch[:-1]) for batch in loader]
    if len(batches) > 1 and batches[-1][0].shape[0] == 1:
        batches.pop()  # a batch norm cannot measure a variance on one sample
    return batches
