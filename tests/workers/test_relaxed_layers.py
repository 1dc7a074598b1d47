"""One contract suite for every relaxed layer type (docs/METHOD.md §1, §3, §4, §10).

Each case builds a relaxed layer, an input, and the group action on inputs and outputs;
the same tests then check: θ = 0 equals the projection, the orthogonal projection is
equivariant while the relaxed layer is not, export matches, projection is idempotent,
and the Lie derivative is 0 for equivariant maps and matches finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from escnn import gspaces
from escnn import nn as enn

from workers.relax import (
    SO3_GENERATORS,
    RelaxedLayer,
    RelaxedLinear,
    RelaxedR2Conv,
    RelaxedScalarVectorLinear,
    RelaxedVectorLinear,
    act_on_features,
    compute_penalties,
    copy_module,
    export_module,
    record_inputs,
    to_torchscript,
)


@dataclass
class Case:
    name: str
    make: Callable[[], RelaxedLayer]
    make_input: Callable[[RelaxedLayer], object]
    # (transform input by g, transform output by g) for the exact group elements
    actions: Callable[[RelaxedLayer], list[tuple[Callable, Callable]]]
    to_tensor: Callable[[object], torch.Tensor]
    continuous: bool


def _escnn_actions(layer, angles):
    group = layer.in_type.fibergroup
    acts = []
    for a in angles:
        g = group.element(a) if not group.continuous else group.element(a * 2 * math.pi / 4)
        acts.append((lambda x, g=g: x.transform(g), lambda y, g=g: y.transform(g)))
    return acts


def _conv_case(name, gspace, in_fields, out_fields, kernel, continuous, stride=1):
    def make():
        torch.manual_seed(0)
        tin = enn.FieldType(gspace, in_fields(gspace))
        tout = enn.FieldType(gspace, out_fields(gspace))
        conv = enn.R2Conv(tin, tout, kernel, padding=kernel // 2, stride=stride)
        return RelaxedR2Conv(conv, init="normal", init_std=0.1)

    def make_input(layer):
        torch.manual_seed(1)
        return enn.GeometricTensor(torch.randn(3, layer.in_type.size, 17, 17), layer.in_type)

    def actions(layer):
        # only the 90° multiples are exact on a square pixel grid (docs/METHOD.md §5)
        n = 4
        group = layer.in_type.fibergroup
        if group.continuous:
            els = [group.element(k * math.pi / 2) for k in range(1, n)]
        else:
            els = [group.element(k * group.order() // 4) for k in range(1, n)]
        return [(lambda x, g=g: x.transform(g), lambda y, g=g: y.transform(g)) for g in els]

    return Case(name, make, make_input, actions, lambda t: t.tensor, continuous)


def _linear_case():
    gspace = gspaces.no_base_space(gspaces.rot2dOnR2(-1, maximum_frequency=3).fibergroup)

    def make():
        torch.manual_seed(0)
        g = gspace.fibergroup
        tin = enn.FieldType(gspace, [g.irrep(0), g.irrep(1), g.irrep(2)] * 2)
        tout = enn.FieldType(gspace, [g.irrep(0), g.irrep(1), g.irrep(3)] * 2)
        return RelaxedLinear(enn.Linear(tin, tout), init="normal", init_std=0.1)

    def make_input(layer):
        torch.manual_seed(1)
        return enn.GeometricTensor(torch.randn(5, layer.in_type.size), layer.in_type)

    def actions(layer):
        torch.manual_seed(2)
        group = layer.in_type.fibergroup
        els = [group.element(float(a)) for a in torch.rand(8) * 2 * math.pi]
        return [(lambda x, g=g: x.transform(g), lambda y, g=g: y.transform(g)) for g in els]

    return Case("linear-SO2", make, make_input, actions, lambda t: t.tensor, True)


def _random_rotations(n: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen))
        q = q * torch.sign(torch.diagonal(r))
        if torch.det(q) < 0:
            q[:, 0] = -q[:, 0]
        out.append(q)
    return out


def _vector_case():
    def make():
        torch.manual_seed(0)
        return RelaxedVectorLinear(4, 3, init="normal", init_std=0.1)

    def make_input(layer):
        torch.manual_seed(1)
        return torch.randn(6, 4, 3)

    def actions(layer):
        rots = _random_rotations(8, 3)
        # reflections too: A ⊗ I₃ commutes with O(3)
        rots += [-rots[0], torch.diag(torch.tensor([1.0, 1.0, -1.0]))]
        return [(lambda x, R=R: x @ R.t(), lambda y, R=R: y @ R.t()) for R in rots]

    return Case("vector-SO3", make, make_input, actions, lambda t: t, True)


def _scalar_vector_case():
    """Raw node features: 3 scalars + 4 vectors (as xyz components) → 2 scalars + 3 vectors."""

    def make():
        torch.manual_seed(0)
        return RelaxedScalarVectorLinear(3, 4, 2, 3, init="normal", init_std=0.1)

    def make_input(layer):
        torch.manual_seed(1)
        return torch.randn(6, 3 + 4 * 3)

    def actions(layer):
        rots = _random_rotations(8, 3)
        rots += [-rots[0], torch.diag(torch.tensor([1.0, 1.0, -1.0]))]
        return [
            (
                lambda x, R=R: act_on_features(x, layer.scalars_in, R),
                lambda y, R=R: act_on_features(y, layer.scalars_out, R),
            )
            for R in rots
        ]

    return Case("scalar-vector-O3", make, make_input, actions, lambda t: t, True)


CASES = [
    _conv_case(
        "r2conv-C8-regular",
        gspaces.rot2dOnR2(8),
        lambda g: [g.regular_repr] * 2 + [g.trivial_repr],
        lambda g: [g.regular_repr] * 3,
        5,
        False,
    ),
    _conv_case(
        "r2conv-C4-stride2",
        gspaces.rot2dOnR2(4),
        lambda g: [g.regular_repr] * 2,
        lambda g: [g.regular_repr, g.trivial_repr] * 2,
        3,
        False,
        stride=2,
    ),
    _conv_case(
        "r2conv-SO2-irreps",
        gspaces.rot2dOnR2(-1, maximum_frequency=3),
        lambda g: [g.irrep(0), g.irrep(1)] * 2,
        lambda g: [g.irrep(0), g.irrep(1), g.irrep(2)] * 2,
        5,
        True,
    ),
    _linear_case(),
    _vector_case(),
    _scalar_vector_case(),
]


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request):
    return request.param


def _equivariance_error(module, case: Case, layer) -> float:
    module.eval()
    x = case.make_input(layer)
    with torch.no_grad():
        y = module(x)
    worst = 0.0
    for act_in, act_out in case.actions(layer):
        with torch.no_grad():
            lhs = case.to_tensor(module(act_in(x)))
        rhs = case.to_tensor(act_out(y))
        worst = max(worst, float((lhs - rhs).norm() / rhs.norm()))
    return worst


def test_theta_zero_equals_projection(case):
    layer = case.make()
    layer.theta.fill_(0.0)
    layer.eval()
    x = case.make_input(layer)
    out = case.to_tensor(layer(x))
    for mode in ("drop", "orthogonal"):
        proj = layer.projected(mode).eval()
        assert torch.equal(out, case.to_tensor(proj(x))) or torch.allclose(
            out, case.to_tensor(proj(x)), atol=1e-6
        )


def test_orthogonal_projection_is_equivariant_and_relaxed_is_not(case):
    layer = case.make()
    layer.theta.fill_(0.7)
    assert _equivariance_error(layer, case, layer) > 1e-3
    proj = layer.projected("orthogonal")
    assert _equivariance_error(proj, case, layer) < 1e-5
    # orthogonal keeps the equivariant part of the free term: it differs from drop
    x = case.make_input(layer)
    drop = layer.projected("drop").eval()
    assert not torch.allclose(case.to_tensor(proj.eval()(x)), case.to_tensor(drop(x)), atol=1e-4)


def test_projection_is_idempotent(case):
    layer = case.make()
    layer.theta.fill_(0.5)
    x = case.make_input(layer)
    once = layer.projected("orthogonal")
    # relax the projected layer again with the same free term: projecting must not move it
    again = type(layer).__new__(type(layer))
    if isinstance(layer, RelaxedVectorLinear):
        again = RelaxedVectorLinear(layer.in_channels, layer.out_channels, equivariant=once)
    elif isinstance(layer, RelaxedScalarVectorLinear):
        sizes = (layer.scalars_in, layer.vectors_in, layer.scalars_out, layer.vectors_out)
        again = RelaxedScalarVectorLinear(*sizes, equivariant=once)
    else:
        again = type(layer)(once, init="zeros")
    with torch.no_grad():
        for p_new, p_old in zip(again.free_parameters(), layer.free_parameters(), strict=True):
            p_new.copy_(p_old)
    again.theta.fill_(0.0)
    twice = again.projected("orthogonal").eval()
    assert torch.allclose(case.to_tensor(once.eval()(x)), case.to_tensor(twice(x)), atol=1e-6)
    # and the free term's own projection is a fixed point: the projection-distance penalty of
    # Π(W) is 0 while that of a random W is not
    assert float(layer.penalty_proj()) > 1e-4


def test_projection_distance_of_projected_free_term_is_zero(case):
    layer = case.make()
    # relative to the penalty of the random free term: the float32 projection leaves a
    # residual of ~1e-6 of it (the absolute value depends on the layer's size and init)
    before = float(layer.penalty_proj())
    assert before > 0
    with torch.no_grad():
        if isinstance(layer, RelaxedVectorLinear):
            from workers.relax import project_vector_map

            a = project_vector_map(layer.free, layer.in_channels, layer.out_channels)
            layer.free.copy_(torch.kron(a, torch.eye(3)))
        elif isinstance(layer, RelaxedScalarVectorLinear):
            layer.free.copy_(layer.projected_free())
        else:
            layer.free.copy_(layer.projector.project(layer.free))
            if layer.free_bias is not None:
                layer.free_bias.zero_()
    assert float(layer.penalty_proj()) < 1e-4 * before


def test_export_matches_projected(case):
    layer = case.make()
    layer.theta.fill_(0.3)
    proj = layer.projected("orthogonal").eval()
    x = case.make_input(layer)
    expected = case.to_tensor(proj(x))
    plain = export_module(proj)  # what the task models' export() runs on their layers
    assert not any("escnn" in type(m).__module__ for m in plain.modules())
    scripted = to_torchscript(plain, (case.to_tensor(x),))
    got = scripted(case.to_tensor(x))
    assert (got - expected).abs().max() / expected.abs().max() < 1e-5


def test_copy_of_eval_escnn_modules_leaves_the_source_untouched():
    """``copy_module`` copies escnn modules in eval mode (cached non-leaf filter/matrix)
    without touching the source, and the copy's caches are rebuilt from its own weights."""
    gspace = gspaces.rot2dOnR2(N=4)
    field = enn.FieldType(gspace, [gspace.regular_repr])
    gspace0 = gspaces.no_base_space(gspace.fibergroup)
    field0 = enn.FieldType(gspace0, [gspace0.regular_repr])
    for module, cache in (
        (enn.R2Conv(field, field, kernel_size=3), "filter"),
        (enn.Linear(field0, field0), "matrix"),
    ):
        module.eval()
        before = getattr(module, cache)
        assert not before.is_leaf
        copied = copy_module(module)
        assert getattr(module, cache) is before and not module.training
        assert not copied.training
        torch.testing.assert_close(getattr(copied, cache), before, rtol=0, atol=0)
        getattr(copied, cache).sum().backward()  # differentiable, like the source's
        assert copied.weights.grad is not None and module.weights.grad is None


def test_penalty_forms_over_the_full_batch(case):
    """Doubling the batch (same samples twice): ``per_sample`` is unchanged, the authors'
    ``paper`` form grows by √2 (a root of a sum), and ``paper`` is exactly
    sqrt(Σ‖W x‖²) over the whole batch."""
    layer = case.make()
    layer.train()
    record_inputs(layer, True)
    x = case.make_input(layer)
    layer(x)
    one = compute_penalties(layer, form="per_sample")
    one_paper = compute_penalties(layer, form="paper")
    t = case.to_tensor(x)
    with torch.no_grad():
        if isinstance(x, enn.GeometricTensor):
            free_out = (
                layer._conv(t, layer.free, None)
                if hasattr(layer, "_conv")
                else F.linear(t, layer.free)
            )
        else:
            free_out = t.reshape(t.shape[0], -1, layer.free.shape[1]) @ layer.free.t()
    assert torch.allclose(one_paper["norm"], free_out.pow(2).sum().sqrt(), rtol=1e-5)
    assert torch.allclose(one["norm"], (free_out.pow(2).sum() / t.shape[0]).sqrt(), rtol=1e-5)
    doubled = torch.cat([t, t])
    layer(
        enn.GeometricTensor(doubled, layer.in_type)
        if isinstance(x, enn.GeometricTensor)
        else doubled
    )
    two = compute_penalties(layer, form="per_sample")
    two_paper = compute_penalties(layer, form="paper")
    assert set(one) == set(two) and "norm" in one and "proj" in one
    assert ("lie" in one) == case.continuous
    for key in one:
        assert torch.allclose(one[key], two[key], rtol=1e-5), key
        factor = 1.0 if key == "proj" else math.sqrt(2.0)
        assert torch.allclose(two_paper[key], factor * one_paper[key], rtol=1e-5), key


def test_rms_free_scale_keeps_the_contract(case):
    """``θ·rms(K_eq)·W``: θ = 0 still equals the projection, the orthogonal projection is
    still equivariant, and the free term is scaled by the equivariant kernel's rms."""
    layer = case.make()
    layer.free_scale = "rms"
    layer.eval()
    x = case.make_input(layer)
    layer.theta.fill_(0.0)
    with torch.no_grad():
        at_zero = case.to_tensor(layer(x))
        projected = case.to_tensor(layer.projected("drop")(x))
    assert torch.allclose(at_zero, projected, atol=1e-6)
    layer.theta.fill_(0.7)
    assert _equivariance_error(layer.projected("orthogonal"), case, layer) < 1e-5
    with torch.no_grad():
        plain_factor = float(layer.theta)
        layer.free_scale = "plain"
        plain = case.to_tensor(layer(x))
        layer.free_scale = "rms"
        rms = case.to_tensor(layer(x))
        layer.theta.fill_(0.0)
        base = case.to_tensor(layer(x))
    ratio = float((rms - base).norm() / (plain - base).norm())
    assert ratio == pytest.approx(_rms_of_equivariant(layer), rel=1e-4)
    assert plain_factor == pytest.approx(0.7)


def _rms_of_equivariant(layer) -> float:
    if hasattr(layer, "combined_parameters"):
        kernel, _ = layer.equivariant.expand_parameters()
    else:
        eq = layer.equivariant
        kernel = (
            eq.dense_weight()
            if hasattr(eq, "dense_weight")
            else torch.kron(eq.weight, torch.eye(3))
        )
    return float(kernel.detach().pow(2).mean().sqrt())


# ---- Lie derivative --------------------------------------------------------------------
def test_lie_derivative_of_equivariant_map_is_zero(case):
    layer = case.make()
    if not case.continuous:
        layer.train()
        record_inputs(layer, True)
        layer(case.make_input(layer))
        assert layer.penalty_lie() is None  # C_N has no Lie algebra
        return
    if isinstance(layer, RelaxedVectorLinear):
        eq = torch.kron(torch.randn(3, 4), torch.eye(3))
        assert layer.lie_derivatives(eq).abs().max() < 1e-6
        assert layer.lie_derivatives().abs().max() > 1e-3
    elif isinstance(layer, RelaxedScalarVectorLinear):
        from workers.relax._scalar_vector import equivariant_dense

        eq = equivariant_dense(torch.randn(2, 3), torch.randn(3, 4))
        assert layer.lie_derivatives(eq).abs().max() < 1e-6
        assert layer.lie_derivatives().abs().max() > 1e-3
    elif isinstance(layer, RelaxedLinear):
        from workers.relax._escnn import _lie_generators

        w = layer.equivariant.expand_parameters()[0].detach().double()
        gi, go = _lie_generators(layer.in_type), _lie_generators(layer.out_type)
        assert (w @ gi - go @ w).abs().max() / w.abs().max() < 1e-6
    else:
        # a pointwise (1×1) equivariant conv: the spatial terms cancel exactly on the grid
        tin, tout = layer.in_type, layer.out_type
        conv1 = RelaxedR2Conv(enn.R2Conv(tin, tout, 1), init="zeros")
        x = case.make_input(layer).tensor.double()  # float64: the check is of the maths
        k_eq = conv1.equivariant.expand_parameters()[0].detach().double()
        lie = conv1.lie_derivative(x, k_eq)
        assert lie.abs().max() / conv1._conv(x, k_eq, None).abs().max() < 1e-6


def _smooth_field(channels: int, size: int, seed: int, sigma: float) -> torch.Tensor:
    """Band-limited input (sums of Gaussian blobs of width σ px, in a soft disc), so grid
    discretisation errors are small and rotation by interpolation is accurate."""
    gen = torch.Generator().manual_seed(seed)
    c = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    x = torch.zeros(2, channels, size, size, dtype=torch.float64)
    for b in range(2):
        for ch in range(channels):
            for _ in range(3):
                cy, cx = torch.randn(2, generator=gen) * size / 8
                amp = torch.randn(1, generator=gen)
                x[b, ch] += amp * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return x * torch.exp(-(yy**2 + xx**2) / (2 * (size / 4) ** 2))


def _rotate_field(x: torch.Tensor, field_type, angle: float) -> torch.Tensor:
    """ρ(g) f(g⁻¹ p) with bicubic resampling about the grid centre (escnn's orientation)."""
    n, _, h, w = x.shape
    cos, sin = math.cos(angle), math.sin(angle)
    # sample f at g⁻¹p; grid_sample coordinates are (col, row) in [-1, 1]
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(n, 2, 3), list(x.shape), align_corners=True)
    resampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    rho = torch.as_tensor(
        field_type.representation(field_type.fibergroup.element(angle)), dtype=x.dtype
    )
    return torch.einsum("oc,bchw->bohw", rho, resampled)


# discrete groups have no Lie derivative (the projection-distance penalty applies to them)
@pytest.mark.parametrize("case", [c for c in CASES if c.continuous], ids=lambda c: c.name)
def test_lie_derivative_matches_finite_difference(case):
    layer = case.make()
    t = 1e-3
    if isinstance(layer, RelaxedVectorLinear):
        x = case.make_input(layer).reshape(6, 12).double()
        w = layer.free.detach().double()
        lie = layer.lie_derivatives(w)
        for a, gen in enumerate(layer.generators.double()):
            rin = torch.kron(torch.eye(4, dtype=torch.float64), torch.linalg.matrix_exp(t * gen))
            rout = torch.kron(torch.eye(3, dtype=torch.float64), torch.linalg.matrix_exp(-t * gen))
            rin_m = torch.kron(torch.eye(4, dtype=torch.float64), torch.linalg.matrix_exp(-t * gen))
            rout_m = torch.kron(torch.eye(3, dtype=torch.float64), torch.linalg.matrix_exp(t * gen))
            fd = ((rout @ w @ rin) - (rout_m @ w @ rin_m)) / (2 * t)
            analytic = lie[a] @ x.t()
            numeric = fd @ x.t()
            assert (analytic - numeric).norm() / numeric.norm() < 1e-3
        return
    if isinstance(layer, RelaxedScalarVectorLinear):
        # the finite difference goes through the group action on features, not through the
        # layer's generator matrices: d/dt ρ_out(exp(−tA)) W ρ_in(exp(tA)) x at t = 0
        x = case.make_input(layer).double()
        w = layer.free.detach().double()
        lie = layer.lie_derivatives(w)

        def moved(rot: torch.Tensor) -> torch.Tensor:
            inner = act_on_features(x, layer.scalars_in, rot) @ w.t()
            return act_on_features(inner, layer.scalars_out, rot.t())

        for a, gen in enumerate(SO3_GENERATORS.double()):
            fd = (
                moved(torch.linalg.matrix_exp(t * gen)) - moved(torch.linalg.matrix_exp(-t * gen))
            ) / (2 * t)
            analytic = x @ lie[a].t()
            assert (analytic - fd).norm() / fd.norm() < 1e-5
        return
    if isinstance(layer, RelaxedLinear):
        from workers.relax._escnn import _lie_generators

        w = layer.free.detach().double()
        group = layer.in_type.fibergroup
        rep_in = lambda s: torch.as_tensor(layer.in_type.representation(group.element(s)))  # noqa: E731
        rep_out = lambda s: torch.as_tensor(layer.out_type.representation(group.element(s)))  # noqa: E731
        fd = (rep_out(-t) @ w @ rep_in(t) - rep_out(t) @ w @ rep_in(-t)) / (2 * t)
        gi, go = _lie_generators(layer.in_type).double(), _lie_generators(layer.out_type).double()
        analytic = w @ gi - go @ w
        assert (analytic - fd).norm() / fd.norm() < 1e-3
        return
    # image fields: the generator also rotates the grid. The finite difference rotates the
    # input by ±t with bilinear resampling, whose central difference at grid nodes is the
    # 3-point stencil (error ~ h²f‴/6, i.e. ~1/(6σ²) relative for σ-wide features); the
    # analytic version uses a 5-point stencil. On band-limited inputs (σ = 3 px blobs) the two
    # agree to ~1 %, and the gap shrinks like 1/σ² as inputs get smoother: the signature of
    # discretisation error. A wrong orientation or a missing fibre term gives ~100 %.
    kernel = layer.free.detach().double()

    def gap(sigma: float) -> float:
        x = _smooth_field(layer.in_type.size, 33, seed=4, sigma=sigma)
        analytic = layer.lie_derivative(x, kernel)
        fd = (
            _rotate_field(
                layer._conv(_rotate_field(x, layer.in_type, t), kernel, None), layer.out_type, -t
            )
            - _rotate_field(
                layer._conv(_rotate_field(x, layer.in_type, -t), kernel, None), layer.out_type, t
            )
        ) / (2 * t)
        inner = (slice(None), slice(None), slice(6, -6), slice(6, -6))  # away from zero padding
        return float((analytic[inner] - fd[inner]).norm() / fd[inner].norm())

    coarse, fine = gap(3.0), gap(6.0)
    assert coarse < 0.03, coarse
    assert fine < coarse / 3, (coarse, fine)
    x = _smooth_field(layer.in_type.size, 33, seed=4, sigma=3.0)
    analytic = layer.lie_derivative(x, kernel)
    # an equivariant k×k kernel has a Lie derivative small against a random one's
    k_eq = layer.equivariant.expand_parameters()[0].detach().double()
    eq_rel = layer.lie_derivative(x, k_eq).norm() / layer._conv(x, k_eq, None).norm()
    rand_rel = analytic.norm() / layer._conv(x, kernel, None).norm()
    assert eq_rel < 0.05 * rand_rel
