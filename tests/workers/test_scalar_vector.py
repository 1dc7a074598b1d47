"""The projection of the scalar/vector relaxed layer, derived two independent ways.

The contract suite (test_relaxed_layers.py) checks that the projected layer is equivariant;
these tests check that the projection is *the* orthogonal one: it equals the group average
over a finite subgroup of O(3) whose 3D representation is irreducible (so the average is
the O(3) average) and the least-squares fit by an explicit basis of the equivariant maps.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from workers.relax import (
    RelaxedScalarVectorLinear,
    ScalarVectorLinear,
    act_on_features,
    project_scalar_vector_map,
)
from workers.relax._scalar_vector import equivariant_dense

SIZES = (3, 4, 2, 3)  # scalars_in, vectors_in, scalars_out, vectors_out


def _octahedral_group() -> list[torch.Tensor]:
    """The 48 signed permutation matrices: the full symmetry group of the cube, O_h ⊂ O(3)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((-1.0, 1.0), repeat=3):
            m = torch.zeros(3, 3, dtype=torch.float64)
            for row, (col, sign) in enumerate(zip(perm, signs, strict=True)):
                m[row, col] = sign
            out.append(m)
    return out


def _representation(scalars: int, vectors: int, rot: torch.Tensor) -> torch.Tensor:
    """ρ(g) as a matrix, built by acting on the standard basis (independent of the layer)."""
    eye = torch.eye(scalars + 3 * vectors, dtype=torch.float64)
    return act_on_features(eye, scalars, rot).t()


def _random_map(seed: int = 0) -> torch.Tensor:
    s_in, v_in, s_out, v_out = SIZES
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(s_out + 3 * v_out, s_in + 3 * v_in, generator=gen, dtype=torch.float64)


def test_projection_is_the_group_average() -> None:
    """O_h's 3D representation is irreducible with no fixed vector, so averaging
    ρ_out(g) W ρ_in(g)⁻¹ over its 48 elements gives the same subspace as averaging over O(3)."""
    s_in, v_in, s_out, v_out = SIZES
    w = _random_map()
    average = torch.zeros_like(w)
    group = _octahedral_group()
    for g in group:
        average += _representation(s_out, v_out, g) @ w @ _representation(s_in, v_in, g).t()
    average /= len(group)
    projected = equivariant_dense(*project_scalar_vector_map(w, *SIZES))
    torch.testing.assert_close(projected, average, rtol=0, atol=1e-12)


def test_projection_is_the_least_squares_fit_by_the_equivariant_basis() -> None:
    s_in, v_in, s_out, v_out = SIZES
    basis = []
    for o, i in itertools.product(range(s_out), range(s_in)):
        a = torch.zeros(s_out, s_in, dtype=torch.float64)
        a[o, i] = 1.0
        basis.append(equivariant_dense(a, torch.zeros(v_out, v_in, dtype=torch.float64)))
    for o, i in itertools.product(range(v_out), range(v_in)):
        b = torch.zeros(v_out, v_in, dtype=torch.float64)
        b[o, i] = 1.0
        basis.append(equivariant_dense(torch.zeros(s_out, s_in, dtype=torch.float64), b))
    matrix = torch.stack([b.flatten() for b in basis], dim=1)
    w = _random_map(1)
    coeffs = torch.linalg.lstsq(matrix, w.flatten().unsqueeze(1)).solution
    fit = (matrix @ coeffs).reshape(w.shape)
    projected = equivariant_dense(*project_scalar_vector_map(w, *SIZES))
    torch.testing.assert_close(projected, fit, rtol=0, atol=1e-10)
    # the residual is orthogonal to every equivariant map (Pythagoras holds)
    assert float((matrix.t() @ (w - projected).flatten()).abs().max()) < 1e-10


def test_equivariant_maps_are_fixed_and_mixed_blocks_vanish() -> None:
    s_in, v_in, s_out, v_out = SIZES
    eq = equivariant_dense(torch.randn(s_out, s_in), torch.randn(v_out, v_in))
    torch.testing.assert_close(equivariant_dense(*project_scalar_vector_map(eq, *SIZES)), eq)
    mixed = torch.zeros_like(eq)
    mixed[:s_out, s_in:] = torch.randn(s_out, 3 * v_in)
    mixed[s_out:, :s_in] = torch.randn(3 * v_out, s_in)
    scalar, vector = project_scalar_vector_map(mixed, *SIZES)
    assert float(scalar.abs().max()) == 0.0 and float(vector.abs().max()) == 0.0


def test_projection_distance_penalty_is_the_mean_squared_residual() -> None:
    layer = RelaxedScalarVectorLinear(*SIZES, init="normal", init_std=0.1)
    w = layer.free.detach().double()
    residual = w - equivariant_dense(*project_scalar_vector_map(w, *SIZES))
    assert float(layer.penalty_proj()) == pytest.approx(float(residual.pow(2).mean()), rel=1e-5)
    # its gradient points along the residual: a step of gradient descent lowers it
    layer.penalty_proj().backward()
    assert torch.allclose(layer.free.grad.double(), 2 * residual / w.numel(), atol=1e-7)


def test_relaxed_free_term_mixes_scalars_and_vector_components() -> None:
    """θ·W reads vector components into scalars and scalars into vector components."""
    layer = RelaxedScalarVectorLinear(*SIZES, init="zeros")
    with torch.no_grad():
        layer.equivariant.scalar_weight.zero_()
        layer.equivariant.vector_weight.zero_()
        layer.free[0, 3] = 1.0  # scalar 0 ← x-component of vector 0
        layer.free[2, 0] = 1.0  # x-component of output vector 0 ← scalar 0
    layer.theta.fill_(0.5)
    x = torch.zeros(1, 3 + 12)
    x[0, 0], x[0, 3] = 2.0, 4.0
    y = layer(x)
    assert float(y[0, 0]) == pytest.approx(2.0) and float(y[0, 2]) == pytest.approx(1.0)
    assert float(layer.projected("orthogonal")(x).abs().max()) == 0.0


def test_sizes_are_validated() -> None:
    with pytest.raises(ValueError, match="channel counts"):
        ScalarVectorLinear(0, 0, 1, 1)
    with pytest.raises(ValueError, match="channel counts"):
        ScalarVectorLinear(1, -1, 1, 1)
    with pytest.raises(ValueError, match="other sizes"):
        RelaxedScalarVectorLinear(1, 1, 1, 1, equivariant=ScalarVectorLinear(2, 1, 1, 1))
    with pytest.raises(ValueError, match="relax.init"):
        RelaxedScalarVectorLinear(1, 1, 1, 1, init="uniform")  # type: ignore[arg-type]
