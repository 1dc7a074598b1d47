"""The charged N-body task (docs/METHOD.md §7): predict positions 10 frames ahead, E(3) symmetry.

Items are ``(positions30 (5, 3), velocities30 (5, 3), charges (5, 1), positions40 (5, 3))``
float32. The data depend only on the data config (``data_seed`` in particular), never on a
trial's seed, so every trial of a search trains and validates on the same systems; the
trial seed only sets the model initialisation.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from workers.relax import check_exportable

from ._base import Splits
from ._egnn import EXPORTABLE_MODULES, NBodyEGNN
from ._nbody_sim import NBodySimConfig, load_or_simulate

#: frame the model sees and frame it predicts (EGNN's charged N-body setting)
INPUT_FRAME = 30
TARGET_FRAME = 40

MODEL_DEFAULTS: dict[str, Any] = {"hidden": 64, "layers": 4, "vector_channels": 4}
DATA_DEFAULTS: dict[str, Any] = {
    "train_size": 3000,
    "val_size": 2000,
    "test_size": 2000,
    "data_seed": 0,
    "cache_dir": None,
}

N_ROTATIONS = 8
N_REFLECTIONS = 2
#: group elements measured by :meth:`NBodyTask.equivariance_errors`, all exact for E(3)
ELEMENT_NAMES = (
    [f"rot{i}" for i in range(N_ROTATIONS)] + [f"refl{i}" for i in range(N_REFLECTIONS)] + ["trans"]
)


def _merge(kind: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"nbody {kind} config: unknown keys {unknown}; known: {sorted(defaults)}")
    return {**defaults, **given}


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Haar-random rotation (QR of a Gaussian matrix with the sign ambiguity removed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def e3_elements(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (Q, t)}`` acting as ``x ↦ x Qᵀ + t`` on positions and ``v ↦ v Qᵀ`` on
    velocities: random rotations, random improper rotations (det −1) and a translation."""
    rng = np.random.default_rng(seed)
    zero = np.zeros(3)
    elements: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i in range(N_ROTATIONS):
        elements[f"rot{i}"] = (_random_rotation(rng), zero)
    for i in range(N_REFLECTIONS):
        elements[f"refl{i}"] = (_random_rotation(rng) @ np.diag([-1.0, 1.0, 1.0]), zero)
    elements["trans"] = (np.eye(3), rng.standard_normal(3) * 2.0)
    return elements


class NBodyTask:
    """Charged 5-body dynamics with an EGNN whose node updates are relaxed over the raw
    node features (scalars and xyz components, see :mod:`workers.tasks._egnn`).

    Model config: ``hidden`` (64), ``layers`` (4), ``vector_channels`` (4).
    Data config: ``train_size`` (3000), ``val_size`` (2000), ``test_size`` (2000),
    ``data_seed`` (0), ``cache_dir`` (``$RELAXTUNE_CACHE/nbody`` or
    ``~/.cache/relaxtune/nbody``).
    """

    name: ClassVar[str] = "nbody"
    metric: ClassVar[str] = "mse"
    mode: ClassVar[str] = "min"

    def __init__(self, model_config: dict[str, Any], data_config: dict[str, Any]) -> None:
        self.model_config = _merge("model", MODEL_DEFAULTS, model_config)
        self.data_config = _merge("data", DATA_DEFAULTS, data_config)
        self.group = "E3"
        self.exact_elements = list(ELEMENT_NAMES)
        self.sim_config = NBodySimConfig(frames=(INPUT_FRAME, TARGET_FRAME))

    # ---- data ---------------------------------------------------------------------
    def _split(self, split_index: int, size: int) -> TensorDataset:
        # each split has its own stream, so resizing one split leaves the others unchanged
        seed = int(
            np.random.SeedSequence(
                [int(self.data_config["data_seed"]), split_index]
            ).generate_state(1)[0]
        )
        arrays = load_or_simulate(size, seed, self.sim_config, self.data_config["cache_dir"])
        positions = torch.from_numpy(arrays["positions"]).float()
        velocities = torch.from_numpy(arrays["velocities"]).float()
        charges = torch.from_numpy(arrays["charges"]).float()
        return TensorDataset(positions[:, 0], velocities[:, 0], charges, positions[:, 1])

    def build_data(self, seed: int) -> Splits:
        """Train/val/test systems; ``seed`` is ignored on purpose (see the module docstring)."""
        del seed
        sizes = [int(self.data_config[k]) for k in ("train_size", "val_size", "test_size")]
        if min(sizes) < 1:
            raise ValueError(f"nbody data config: split sizes must be >= 1, got {sizes}")
        return Splits(*(self._split(i, size) for i, size in enumerate(sizes)))

    # ---- model --------------------------------------------------------------------
    def build_model(self, seed: int) -> nn.Module:
        """A relaxed :class:`NBodyEGNN` (free terms zero; the trainer re-initialises them)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = NBodyEGNN(
                hidden=int(self.model_config["hidden"]),
                layers=int(self.model_config["layers"]),
                vector_channels=int(self.model_config["vector_channels"]),
                n_particles=self.sim_config.n_particles,
            )
        check_exportable(model, allowed=EXPORTABLE_MODULES)
        return model

    # ---- objective ----------------------------------------------------------------
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error over every coordinate of the batch."""
        return nn.functional.mse_loss(output, target)

    def metric_sums(self, output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
        """``(Σ squared error, number of coordinates)``: the split metric is the MSE."""
        return float((output.detach() - target).pow(2).sum()), target.numel()

    # ---- symmetry -----------------------------------------------------------------
    @torch.no_grad()
    def equivariance_errors(
        self, model: nn.Module, inputs: tuple[torch.Tensor, ...], seed: int
    ) -> dict[str, float]:
        """``max_batch ‖f(g·x) − g·f(x)‖ / ‖f(x) − x₃₀‖`` for each element of ``e3_elements``.

        The error is relative to the predicted *displacement*, not to ``f(x)``: absolute
        positions are translation-dependent and mostly the (trivially equivariant) input,
        so dividing by them would make a broken model look nearly equivariant.
        """
        positions, velocities, charges = inputs
        was_training = model.training
        model.eval()
        try:
            out = model(positions, velocities, charges)
            scale = (out - positions).flatten(1).norm(dim=1).clamp_min(1e-12)
            errors: dict[str, float] = {}
            for name, (q_np, t_np) in e3_elements(seed).items():
                q = torch.as_tensor(q_np, dtype=positions.dtype, device=positions.device)
                t = torch.as_tensor(t_np, dtype=positions.dtype, device=positions.device)
                moved = model(positions @ q.T + t, velocities @ q.T, charges)
                diff = moved - (out @ q.T + t)
                errors[name] = float((diff.flatten(1).norm(dim=1) / scale).max())
            return errors
        finally:
            model.train(was_training)
