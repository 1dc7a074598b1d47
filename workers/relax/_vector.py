"""Equivariant and relaxed linear maps on 3D vector features (vector-neuron style).

Features are tensors ``(..., C, 3)``: ``C`` channels of 3-vectors. SO(3) (and O(3)) act
on the last axis. Because the 3D representation is absolutely irreducible, the
equivariant linear maps ``C_in → C_out`` are exactly ``A ⊗ I₃`` (Schur), i.e. a channel
mixing matrix ``A`` applied to every coordinate.
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import FreeInit, ProjectionMode, RelaxedLayer, check_projection_mode, reset_free

#: so(3) generators L_x, L_y, L_z (infinitesimal rotations about each axis)
SO3_GENERATORS = torch.tensor(
    [
        [[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]],
        [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],
        [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    ]
)


class VectorLinear(nn.Module):
    """Equivariant linear map ``(..., C_in, 3) → (..., C_out, 3)``: ``y_o = Σ_i A_oi x_i``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oi,...id->...od", self.weight, x)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels} vector channels"


def project_vector_map(free: torch.Tensor, in_channels: int, out_channels: int) -> torch.Tensor:
    """Orthogonal (Frobenius) projection of a dense ``(C_out·3, C_in·3)`` map onto
    ``{A ⊗ I₃}``; returns the channel matrix ``A`` (``A_oi = trace(block_oi) / 3``)."""
    blocks = free.reshape(out_channels, 3, in_channels, 3)
    return torch.diagonal(blocks, dim1=1, dim2=3).sum(-1) / 3.0


class RelaxedVectorLinear(RelaxedLayer):
    """``f(x) = (A ⊗ I₃) x + θ · W x`` with ``W`` a dense map on the flattened ``C·3`` numbers."""

    generators: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        init: FreeInit = "zeros",
        init_std: float = 1e-2,
        equivariant: VectorLinear | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.equivariant = equivariant or VectorLinear(in_channels, out_channels)
        self.free = nn.Parameter(torch.zeros(out_channels * 3, in_channels * 3))
        reset_free(self, init, init_std)
        self.register_buffer("generators", SO3_GENERATORS.clone(), persistent=False)

    def dense_weight(self) -> torch.Tensor:
        eye = torch.eye(3, dtype=self.free.dtype, device=self.free.device)
        equivariant = torch.kron(self.equivariant.weight, eye)
        return equivariant + self.free_factor(equivariant) * self.free

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._record(x)
        flat = x.reshape(*x.shape[:-2], self.in_channels * 3)
        out = flat @ self.dense_weight().t()
        return out.reshape(*x.shape[:-2], self.out_channels, 3)

    # ---- method ----------------------------------------------------------------
    def free_parameters(self) -> list[nn.Parameter]:
        return [self.free]

    def projected(self, mode: ProjectionMode = "orthogonal") -> VectorLinear:
        check_projection_mode(mode)
        out = VectorLinear(self.in_channels, self.out_channels).to(self.free.device)
        with torch.no_grad():
            weight = self.equivariant.weight.detach().clone()
            if mode == "orthogonal":
                proj = project_vector_map(self.free.detach(), self.in_channels, self.out_channels)
                eye = torch.eye(3, dtype=weight.dtype, device=weight.device)
                weight = weight + self.free_factor(torch.kron(weight, eye)) * proj
            out.weight.copy_(weight)
        return out

    def lie_derivatives(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``L_A(W) = W·dρ_in(A) − dρ_out(A)·W`` for the three generators: ``(3, C_out·3, C_in·3)``."""
        w = self.free if weight is None else weight
        eye_in = torch.eye(self.in_channels, dtype=w.dtype, device=w.device)
        eye_out = torch.eye(self.out_channels, dtype=w.dtype, device=w.device)
        gens = self.generators.to(w.dtype)
        d_in = torch.stack([torch.kron(eye_in, g) for g in gens])
        d_out = torch.stack([torch.kron(eye_out, g) for g in gens])
        return w @ d_in - d_out @ w

    def _recorded_flat(self) -> torch.Tensor | None:
        x = self._recorded
        if x is None:
            return None
        return x.reshape(-1, self.in_channels * 3)

    def penalty_lie(self) -> torch.Tensor | None:
        x = self._recorded_flat()
        if x is None:
            return None
        lie = self.lie_derivatives()  # (3, O, I)
        out = torch.einsum("aoi,ni->ano", lie, x.to(lie.dtype))
        return out.pow(2).sum()

    def penalty_norm(self) -> torch.Tensor | None:
        x = self._recorded_flat()
        if x is None:
            return None
        return (x.to(self.free.dtype) @ self.free.t()).pow(2).sum()

    def penalty_proj(self) -> torch.Tensor:
        proj = project_vector_map(self.free, self.in_channels, self.out_channels)
        eye = torch.eye(3, dtype=self.free.dtype, device=self.free.device)
        return (self.free - torch.kron(proj, eye)).pow(2).mean()
