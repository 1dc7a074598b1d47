"""The contract every task (built-in or plugin) implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class Splits:
    """Train / validation / test datasets of one task.

    Every item is a tuple of tensors ``(*inputs, target)``: the model is called as
    ``model(*inputs)`` and its output compared with ``target``.
    """

    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset
    test: torch.utils.data.Dataset


@runtime_checkable
class Task(Protocol):
    """A learning problem relaxtune can search on.

    Implementations must guarantee:

    * ``build_model`` returns an ``nn.Module`` called as ``model(*inputs)`` on plain
      tensors, whose relaxable layers are already relaxed (:class:`workers.relax.RelaxedLayer`).
      After :func:`workers.relax.project_model` it is exactly equivariant for ``group`` on
      ``exact_elements``, and its ``export()`` method returns a plain-torch module
      (no escnn) computing the same function, traceable with ``torch.jit.trace``, built
      with :func:`workers.relax.export_module`. Exportability is checked inside
      ``build_model`` with :func:`workers.relax.check_exportable` (error naming the module).
    * ``loss`` is a mean over the batch; ``metric_sums`` returns ``(sum, count)`` so the
      metric of a whole split is ``Σsum / Σcount`` (``metric``/``mode`` say what it is).
    * ``equivariance_errors`` returns ``{element_name: relative_error}`` measured as in
      docs/METHOD.md §5 on the given inputs (max over the batch).
    * Everything is deterministic for a given seed.
    """

    name: ClassVar[str]
    metric: ClassVar[str]  # e.g. "accuracy", "mse"
    mode: ClassVar[str]  # "max" or "min"

    group: str  # e.g. "C8", "SO2", "E3"
    exact_elements: list[str]

    def __init__(self, model_config: dict[str, Any], data_config: dict[str, Any]) -> None: ...

    def build_data(self, seed: int) -> Splits: ...

    def build_model(self, seed: int) -> nn.Module: ...

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def metric_sums(self, output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]: ...

    def equivariance_errors(
        self, model: nn.Module, inputs: tuple[torch.Tensor, ...], seed: int
    ) -> dict[str, float]: ...
