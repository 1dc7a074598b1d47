"""A relaxtune task whose trial takes a known wall time: the overhead benchmark's workload.

``FixedTimeTask`` implements :class:`workers.tasks.Task` with one training sample, so an
epoch is one optimisation step whatever the batch size, and a model whose training-mode
forward pass sleeps ``epoch_seconds`` (model config). Evaluation, equivariance measurement
and export cost next to nothing, so a trial of ``E`` epochs does ``E × epoch_seconds`` of
known work plus whatever the service adds.

It is registered as the task ``fixed_time`` through an entry point of the group
``relaxtune.tasks`` (``bench/overhead.py`` writes the distribution metadata into a
temporary folder put on ``PYTHONPATH``, with ``bench/`` itself for this module).
"""

from __future__ import annotations

import copy
import time
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import TensorDataset

from workers.tasks import Splits

ENTRY_POINT = "fixed_time = _fixed_task:FixedTimeTask"


class SleepyLinear(nn.Module):
    """``y = w·x`` (exactly invariant to the trivial group); sleeps when training."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = float(seconds)
        self.linear = nn.Linear(1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.seconds > 0:
            time.sleep(self.seconds)
        return self.linear(x)

    def export(self) -> nn.Module:
        exported = copy.deepcopy(self)
        exported.seconds = 0.0
        return exported.eval()


class FixedTimeTask:
    """One sample, one step per epoch, ``epoch_seconds`` of sleep per step."""

    name: ClassVar[str] = "fixed_time"
    metric: ClassVar[str] = "mse"
    mode: ClassVar[str] = "min"

    def __init__(self, model_config: dict[str, Any], data_config: dict[str, Any]) -> None:
        unknown = sorted(set(model_config) - {"epoch_seconds"}) + sorted(data_config)
        if unknown:
            raise ValueError(f"fixed_time: unknown config keys {unknown}")
        self.epoch_seconds = float(model_config.get("epoch_seconds", 1.0))
        self.group = "trivial"
        self.exact_elements = ["e"]

    def build_data(self, seed: int) -> Splits:
        x = torch.ones(1, 1)
        y = torch.full((1, 1), 2.0)
        ds = TensorDataset(x, y)
        return Splits(ds, ds, ds)

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return SleepyLinear(self.epoch_seconds)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(output, target)

    def metric_sums(self, output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
        return float((output.detach() - target).pow(2).sum()), target.numel()

    def equivariance_errors(
        self, model: nn.Module, inputs: tuple[torch.Tensor, ...], seed: int
    ) -> dict[str, float]:
        return {"e": 0.0}
