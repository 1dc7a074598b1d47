"""Steerable CNN for rotated images (escnn), with a plain-torch export.

Layout (docs/METHOD.md §5: every size stays even and every pooling is 2×2, so the 90° rotations
of a 28×28 input are exact symmetries of the whole network)::

    image (B,1,28,28) ─> [R2Conv ─> batch norm ─> nonlinearity (─> 2×2 pool)] × depth
                      ─> invariant map (group max pool / norm pool) ─> spatial max ─> MLP head

* ``C4`` / ``C8`` / ``C16``: regular fields, ``InnerBatchNorm``, pointwise ReLU/ELU, 2×2 max
  pooling (pointwise operations commute with the permutation action of C_N), ``GroupPooling``.
* ``SO2``: band-limited regular fields (irreps of frequency ≤ ``max_frequency``),
  ``IIDBatchNorm2d``, ``FourierELU`` sampled on ``fourier_samples`` rotations (a multiple of 4,
  so the 90° rotations permute the samples exactly), 2×2 *average* pooling (linear, so it
  commutes with the fibre action, unlike max pooling of Fourier coefficients), and the norm
  of every irrep as invariants.

Convolutions have odd kernels with ``padding = k // 2`` (size-preserving), no stride, no bias
(batch norm follows). At most two poolings are placed so sizes stay even: 28 → 14 → 7.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import escnn.nn as enn
import torch
from escnn import gspaces
from torch import nn

from workers.relax import export_module

GROUP_ORDERS: dict[str, int] = {"C4": 4, "C8": 8, "C16": 16, "SO2": -1}
NONLINEARITIES: dict[str, tuple[str, ...]] = {
    "discrete": ("relu", "elu"),
    "SO2": ("fourier_elu", "fourier_relu"),
}


@dataclass(frozen=True)
class SteerableCNNConfig:
    """Architecture options (the task's model config)."""

    group: str = "C8"
    width: int = 8  # fields per hidden layer
    depth: int = 3  # conv blocks
    kernel_size: int = 5
    head_hidden: int = 64  # hidden units of the MLP head on the invariants (0: one Linear)
    nonlinearity: str | None = None  # None: relu for C_N, fourier_elu for SO2
    max_frequency: int = 3  # SO2: band limit of the hidden features
    fourier_samples: int = 16  # SO2: rotations the Fourier nonlinearity samples
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 28

    def __post_init__(self) -> None:
        if self.group not in GROUP_ORDERS:
            raise ValueError(f"group must be one of {sorted(GROUP_ORDERS)}, got {self.group!r}")
        for field, low in (("width", 1), ("depth", 1), ("num_classes", 2), ("in_channels", 1)):
            if int(getattr(self, field)) < low:
                raise ValueError(f"{field} must be >= {low}, got {getattr(self, field)}")
        if self.head_hidden < 0:
            raise ValueError(f"head_hidden must be >= 0, got {self.head_hidden}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            # an even kernel shifts the grid by half a pixel and breaks rot90 exactness
            raise ValueError(f"kernel_size must be odd and >= 1, got {self.kernel_size}")
        if self.image_size % 4 != 0:
            raise ValueError(
                f"image_size must be a multiple of 4 (two exact 2x2 poolings), got {self.image_size}"
            )
        allowed = NONLINEARITIES["SO2" if self.group == "SO2" else "discrete"]
        if self.nonlinearity is not None and self.nonlinearity not in allowed:
            raise ValueError(
                f"nonlinearity for {self.group} must be one of {allowed}, got {self.nonlinearity!r}"
            )
        if self.group == "SO2":
            if self.max_frequency < 1:
                raise ValueError(f"max_frequency must be >= 1, got {self.max_frequency}")
            if self.fourier_samples % 4 != 0 or self.fourier_samples < 2 * self.max_frequency + 1:
                raise ValueError(
                    "fourier_samples must be a multiple of 4 (exact 90° rotations) and "
                    f"> 2·max_frequency, got {self.fourier_samples}"
                )

    @property
    def activation(self) -> str:
        if self.nonlinearity is not None:
            return self.nonlinearity
        return "fourier_elu" if self.group == "SO2" else "relu"

    def pool_after(self) -> set[int]:
        """Blocks (0-based) followed by 2×2 pooling: two, after the first and second third of
        the blocks (depth 2 and 3: after blocks 0 and 1), so most convolutions run on the
        cheaper 14×14 and 7×7 grids."""
        if self.depth == 1:
            return {0}
        return {-(-self.depth // 3) - 1, -(-2 * self.depth // 3) - 1}


def build_gspace(group: str, max_frequency: int = 3) -> gspaces.GSpace2D:
    """``rot2dOnR2(N)`` for C_N, ``rot2dOnR2(-1, maximum_frequency=L)`` for SO2."""
    order = GROUP_ORDERS[group]
    if order > 0:
        return gspaces.rot2dOnR2(N=order)
    return gspaces.rot2dOnR2(N=-1, maximum_frequency=max_frequency)


class SteerableCNN(nn.Module):
    """Rotation-equivariant CNN classifier; ``model(images)`` on plain ``(B, C, H, W)`` tensors.

    ``body`` (an escnn ``SequentialModule``) holds every convolution, so relaxing the model
    means relaxing ``body``; ``features`` exposes its output (a ``GeometricTensor``) for
    equivariance measurements before the invariant map.
    """

    def __init__(self, config: SteerableCNNConfig | None = None, **options: object) -> None:
        super().__init__()
        self.config = config if config is not None else SteerableCNNConfig(**options)
        cfg = self.config
        self.gspace = build_gspace(cfg.group, cfg.max_frequency)
        self.in_type = enn.FieldType(self.gspace, [self.gspace.trivial_repr] * cfg.in_channels)

        layers: OrderedDict[str, enn.EquivariantModule] = OrderedDict()
        current = self.in_type
        pools = cfg.pool_after()
        for i in range(cfg.depth):
            act = self._activation()
            hidden = act.in_type
            layers[f"conv{i + 1}"] = enn.R2Conv(
                current,
                hidden,
                kernel_size=cfg.kernel_size,
                padding=cfg.kernel_size // 2,
                bias=False,
            )
            layers[f"bn{i + 1}"] = (
                enn.IIDBatchNorm2d(hidden) if cfg.group == "SO2" else enn.InnerBatchNorm(hidden)
            )
            layers[f"act{i + 1}"] = act
            if i in pools:
                layers[f"pool{i + 1}"] = (
                    enn.PointwiseAvgPool2D(hidden, kernel_size=2)
                    if cfg.group == "SO2"
                    else enn.PointwiseMaxPool2D(hidden, kernel_size=2)
                )
            current = hidden
        self.body = enn.SequentialModule(layers)

        if cfg.group == "SO2":
            # the band-limited regular representation is a plain direct sum of irreps
            # (identity change of basis), so the same tensor can be read irrep by irrep and
            # every irrep's norm is an invariant: (L+1) invariants per field
            rho = current.representations[0]
            irreps = [self.gspace.fibergroup.irrep(*irr) for irr in rho.irreps]
            irrep_type = enn.FieldType(self.gspace, irreps * len(current))
            self.invariant: enn.EquivariantModule = enn.NormPool(irrep_type)
        else:
            self.invariant = enn.GroupPooling(current)
        n_invariants = self.invariant.out_type.size
        if cfg.head_hidden > 0:
            # a group-pooled network has few invariants per location (one per field for
            # C_N); a small MLP on them learns much faster than a single Linear layer
            self.head: nn.Module = nn.Sequential(
                nn.Linear(n_invariants, cfg.head_hidden),
                nn.BatchNorm1d(cfg.head_hidden),
                nn.ELU(),
                nn.Linear(cfg.head_hidden, cfg.num_classes),
            )
        else:
            self.head = nn.Linear(n_invariants, cfg.num_classes)

    def _activation(self) -> enn.EquivariantModule:
        cfg = self.config
        if cfg.group == "SO2":
            G = self.gspace.fibergroup
            function = "p_elu" if cfg.activation == "fourier_elu" else "p_relu"
            return enn.FourierPointwise(
                self.gspace,
                cfg.width,
                G.bl_irreps(cfg.max_frequency),
                function=function,
                type="regular",
                N=cfg.fourier_samples,
            )
        hidden = enn.FieldType(self.gspace, [self.gspace.regular_repr] * cfg.width)
        if cfg.activation == "elu":
            return enn.ELU(hidden, inplace=True)
        return enn.ReLU(hidden, inplace=True)

    @property
    def feature_type(self) -> enn.FieldType:
        """Field type of :meth:`features` (how ``ρ_out(g)`` acts on it)."""
        return self.body.out_type

    def features(self, images: torch.Tensor) -> enn.GeometricTensor:
        """The equivariant feature map before the invariant map."""
        return self.body(enn.GeometricTensor(images, self.in_type))

    def invariants(self, features: enn.GeometricTensor) -> torch.Tensor:
        """Invariant map then spatial max: ``(B, n_invariants)``."""
        # NormPool reads the features irrep by irrep: same tensor, finer type (see __init__)
        retyped = enn.GeometricTensor(features.tensor, self.invariant.in_type)
        return self.invariant(retyped).tensor.amax(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.invariants(self.features(images)))

    def export(self) -> ExportedSteerableCNN:
        """Plain-torch module (no escnn) computing the same function in eval mode.

        Exports copies (:func:`workers.relax.export_module`); the model is not modified.
        Relaxed layers must have been projected first (``workers.relax.project_model``).
        """
        return ExportedSteerableCNN(
            export_module(self.body, "body"),
            export_module(self.invariant, "invariant"),
            export_module(self.head, "head"),
        ).eval()


class ExportedSteerableCNN(nn.Module):
    """What :meth:`SteerableCNN.export` returns: plain ``torch.nn`` modules only."""

    def __init__(self, body: nn.Module, invariant: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.invariant = invariant
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.invariant(self.body(images)).amax(dim=(2, 3)))
