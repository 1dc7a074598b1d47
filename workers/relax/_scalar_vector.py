"""Equivariant and relaxed linear maps on mixed per-node features: scalars and 3D vectors.

A feature is one flat tensor ``(..., S + 3V)``: ``S`` invariant scalars followed by ``V``
vectors written as their xyz components (channel major: ``v₀ₓ, v₀ᵧ, v₀𝓏, v₁ₓ, …``).
O(3) acts by ``ρ(g) = I_S ⊕ (I_V ⊗ R_g)``.

The O(3)-equivariant linear maps between such spaces are known in closed form (Schur's
lemma; the 3D representation is absolutely irreducible and has no fixed vector): any
matrix scalars → scalars, ``A ⊗ I₃`` vectors → vectors, and zero between scalars and
vectors. The same holds for SO(3) alone, so the Lie-derivative penalty (SO(3)) and the
projection (O(3)) measure the same subspace.

The relaxed layer adds ``θ·W x`` with ``W`` dense over all ``S + 3V`` input numbers: every
xyz component of every vector mixes freely with every other and with the scalars, and
the scalars may pick up vector components. This is the "unconstrained linear map over the
raw features" of constraint relaxation, for networks whose node features are scalars and
vectors (EGNN-style).
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import FreeInit, ProjectionMode, RelaxedLayer, check_projection_mode, reset_free
from ._vector import SO3_GENERATORS, project_vector_map


def act_on_features(x: torch.Tensor, scalars: int, rotation: torch.Tensor) -> torch.Tensor:
    """``ρ(g) x`` for flat mixed features: scalars unchanged, each vector ``v ↦ R v``.

    ``rotation`` is any 3×3 orthogonal matrix (reflections included).
    """
    head, tail = x[..., :scalars], x[..., scalars:]
    vectors = tail.reshape(*tail.shape[:-1], -1, 3) @ rotation.t().to(x.dtype)
    return torch.cat([head, vectors.reshape(tail.shape)], dim=-1)


def feature_generators(scalars: int, vectors: int) -> torch.Tensor:
    """``dρ(L_a) = 0_S ⊕ (I_V ⊗ L_a)`` for the three so(3) generators: ``(3, S+3V, S+3V)``."""
    size = scalars + 3 * vectors
    out = torch.zeros(3, size, size)
    eye = torch.eye(vectors)
    for a, gen in enumerate(SO3_GENERATORS):
        out[a, scalars:, scalars:] = torch.kron(eye, gen)
    return out


def project_scalar_vector_map(
    free: torch.Tensor, scalars_in: int, vectors_in: int, scalars_out: int, vectors_out: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonal (Frobenius) projection of a dense ``(S_out+3V_out, S_in+3V_in)`` map onto
    the O(3)-equivariant maps, as ``(scalar block (S_out, S_in), channel matrix (V_out, V_in))``.

    It is the group average ``∫ ρ_out(g) W ρ_in(g)⁻¹ dg``: the scalar block is invariant
    under it, each 3×3 vector block ``B`` averages to ``tr(B)/3 · I₃`` (Schur), and the
    mixed blocks average to 0 (``∫ R_g dg = 0``). Since ρ is orthogonal, the group average
    is the orthogonal projection, i.e. the least-squares fit by the equivariant basis.
    """
    scalar_block = free[:scalars_out, :scalars_in]
    vector_block = free[scalars_out:, scalars_in:]
    return scalar_block, project_vector_map(vector_block, vectors_in, vectors_out)


def equivariant_dense(scalar_weight: torch.Tensor, vector_weight: torch.Tensor) -> torch.Tensor:
    """The dense matrix of the equivariant map ``scalar_weight ⊕ (vector_weight ⊗ I₃)``."""
    eye = torch.eye(3, dtype=vector_weight.dtype, device=vector_weight.device)
    return torch.block_diag(scalar_weight, torch.kron(vector_weight, eye))


class ScalarVectorLinear(nn.Module):
    """O(3)-equivariant linear map on flat mixed features ``(..., S_in+3V_in) → (..., S_out+3V_out)``:
    scalars mix with scalars, vector channels mix as whole vectors, nothing crosses."""

    def __init__(
        self, scalars_in: int, vectors_in: int, scalars_out: int, vectors_out: int
    ) -> None:
        super().__init__()
        sizes = (scalars_in, vectors_in, scalars_out, vectors_out)
        if min(sizes) < 0 or scalars_in + vectors_in < 1 or scalars_out + vectors_out < 1:
            raise ValueError(
                f"scalar/vector linear: channel counts must be >= 0 with at least one input and "
                f"one output channel, got (scalars_in, vectors_in, scalars_out, vectors_out)={sizes}"
            )
        self.scalars_in, self.vectors_in = scalars_in, vectors_in
        self.scalars_out, self.vectors_out = scalars_out, vectors_out
        self.scalar_weight = nn.Parameter(torch.empty(scalars_out, scalars_in))
        self.vector_weight = nn.Parameter(torch.empty(vectors_out, vectors_in))
        for weight in (self.scalar_weight, self.vector_weight):
            if weight.numel():
                nn.init.kaiming_uniform_(weight, a=5**0.5)

    @property
    def in_features(self) -> int:
        return self.scalars_in + 3 * self.vectors_in

    @property
    def out_features(self) -> int:
        return self.scalars_out + 3 * self.vectors_out

    def dense_weight(self) -> torch.Tensor:
        return equivariant_dense(self.scalar_weight, self.vector_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.dense_weight().t()

    def extra_repr(self) -> str:
        return (
            f"{self.scalars_in} scalars + {self.vectors_in} vectors -> "
            f"{self.scalars_out} scalars + {self.vectors_out} vectors"
        )


class RelaxedScalarVectorLinear(RelaxedLayer):
    """``f(x) = f_eq(x) + θ · W x`` with ``f_eq`` a :class:`ScalarVectorLinear` and ``W`` a
    dense ``(S_out+3V_out, S_in+3V_in)`` matrix over the raw scalars and xyz components."""

    generators_in: torch.Tensor
    generators_out: torch.Tensor

    def __init__(
        self,
        scalars_in: int,
        vectors_in: int,
        scalars_out: int,
        vectors_out: int,
        init: FreeInit = "zeros",
        init_std: float = 1e-2,
        equivariant: ScalarVectorLinear | None = None,
    ) -> None:
        super().__init__()
        self.equivariant = equivariant or ScalarVectorLinear(
            scalars_in, vectors_in, scalars_out, vectors_out
        )
        eq = self.equivariant
        if (eq.scalars_in, eq.vectors_in, eq.scalars_out, eq.vectors_out) != (
            scalars_in,
            vectors_in,
            scalars_out,
            vectors_out,
        ):
            raise ValueError("relaxed scalar/vector linear: the equivariant map has other sizes")
        self.scalars_in, self.vectors_in = scalars_in, vectors_in
        self.scalars_out, self.vectors_out = scalars_out, vectors_out
        self.free = nn.Parameter(torch.zeros(eq.out_features, eq.in_features))
        reset_free(self, init, init_std)
        self.register_buffer(
            "generators_in", feature_generators(scalars_in, vectors_in), persistent=False
        )
        self.register_buffer(
            "generators_out", feature_generators(scalars_out, vectors_out), persistent=False
        )

    def dense_weight(self) -> torch.Tensor:
        equivariant = self.equivariant.dense_weight()
        return equivariant + self.free_factor(equivariant) * self.free

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._record(x)
        return x @ self.dense_weight().t()

    # ---- method ----------------------------------------------------------------
    def free_parameters(self) -> list[nn.Parameter]:
        return [self.free]

    def _project_free(self, free: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return project_scalar_vector_map(
            free, self.scalars_in, self.vectors_in, self.scalars_out, self.vectors_out
        )

    def projected_free(self) -> torch.Tensor:
        """``Π(W)`` as a dense matrix (the equivariant part of the free term)."""
        return equivariant_dense(*self._project_free(self.free))

    def projected(self, mode: ProjectionMode = "orthogonal") -> ScalarVectorLinear:
        check_projection_mode(mode)
        out = ScalarVectorLinear(
            self.scalars_in, self.vectors_in, self.scalars_out, self.vectors_out
        ).to(self.free.device)
        with torch.no_grad():
            scalar = self.equivariant.scalar_weight.detach().clone()
            vector = self.equivariant.vector_weight.detach().clone()
            if mode == "orthogonal":
                free_scalar, free_vector = self._project_free(self.free.detach())
                factor = self.free_factor(equivariant_dense(scalar, vector))
                scalar = scalar + factor * free_scalar
                vector = vector + factor * free_vector
            out.scalar_weight.copy_(scalar)
            out.vector_weight.copy_(vector)
        return out

    def lie_derivatives(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``L_a(W) = W·dρ_in(L_a) − dρ_out(L_a)·W`` for the three so(3) generators:
        ``(3, S_out+3V_out, S_in+3V_in)``."""
        w = self.free if weight is None else weight
        return w @ self.generators_in.to(w.dtype) - self.generators_out.to(w.dtype) @ w

    def _recorded_flat(self) -> torch.Tensor | None:
        x = self._recorded
        if x is None:
            return None
        return x.reshape(-1, x.shape[-1]).to(self.free.dtype)

    def penalty_lie(self) -> torch.Tensor | None:
        x = self._recorded_flat()
        if x is None:
            return None
        return torch.einsum("aoi,ni->ano", self.lie_derivatives(), x).pow(2).sum()

    def penalty_norm(self) -> torch.Tensor | None:
        x = self._recorded_flat()
        if x is None:
            return None
        return (x @ self.free.t()).pow(2).sum()

    def penalty_proj(self) -> torch.Tensor:
        return (self.free - self.projected_free()).pow(2).mean()
