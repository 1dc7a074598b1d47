"""Relaxed escnn layers: ``R2Conv`` (any gspace on R², C_N and SO(2) included) and ``Linear``.

The free term ``K_free`` is a dense kernel of the same shape as the expanded equivariant
filter, so the layer applies ``K_eq + θ·K_free`` as one convolution (docs/METHOD.md §1).

Projection uses the layer's own steerable basis. escnn builds one small basis per pair of
(input field type, output field type) and reuses it for every pair of fields of those types
(:class:`escnn.nn.modules.basismanager.BlocksBasisExpansion`). We project block by block
with that small basis — a least-squares fit, i.e. the orthogonal projection in Frobenius
norm — and never build the basis matrix of the whole layer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from escnn import nn as enn
from escnn.nn.modules.basismanager import BlocksBasisExpansion
from torch import nn

from ._base import (
    FreeInit,
    ProjectionMode,
    RelaxedLayer,
    check_projection_mode,
    copy_module,
    reset_free,
)


class BlockProjector(nn.Module):
    """Least-squares projection of dense kernels onto the span of an escnn basis expansion.

    ``coefficients(K)`` returns the weight vector ``w`` (escnn's layout) minimising
    ``‖expand(w) − K‖``; ``project(K) = expand(coefficients(K))``.
    """

    def __init__(self, expansion: BlocksBasisExpansion) -> None:
        super().__init__()
        self.expansion = expansion
        self.dimension = expansion.dimension()
        self._pairs: list[tuple[str, str]] = list(expansion._representations_pairs)
        for n, io_pair in enumerate(self._pairs):
            block = getattr(expansion, f"block_expansion_{expansion._escape_pair(io_pair)}")
            basis = block.sampled_basis.detach().to(torch.float64)  # (D, o, i, S)
            flat = basis.reshape(basis.shape[0], -1)  # (D, o·i·S)
            # pinv of the (small) block basis: coefficients = K_block · pinv; a buffer, so it
            # follows the module to the GPU
            pinv = torch.linalg.pinv(flat).to(torch.float32)  # (o·i·S, D)
            self.register_buffer(f"pinv_{n}", pinv, persistent=False)
            # an orthonormal basis of the same span (rows), for the projection distance
            u, sv, _ = torch.linalg.svd(flat.t(), full_matrices=False)
            rank = int((sv > sv.max() * 1e-10).sum())
            self.register_buffer(f"onb_{n}", u[:, :rank].to(torch.float32), persistent=False)

    def _gather(
        self, kernel: torch.Tensor, io_pair: tuple[str, str], o: int, i: int
    ) -> torch.Tensor:
        """Blocks of ``kernel (out, in, S)`` for ``io_pair`` as ``(n_out·n_in, o·i·S)``, in
        escnn's coefficient order (output field major)."""
        ex = self.expansion
        name = ex._escape_pair(io_pair)
        in_idx = getattr(ex, f"in_indices_{name}")
        out_idx = getattr(ex, f"out_indices_{name}")
        n_in, n_out = ex._in_count[io_pair[0]], ex._out_count[io_pair[1]]
        S = kernel.shape[-1]
        if ex._contiguous[io_pair]:
            sub = kernel[out_idx[0] : out_idx[1], in_idx[0] : in_idx[1], :]
        else:
            sub = kernel[out_idx, in_idx, :].reshape(n_out * o, n_in * i, S)
        sub = sub.reshape(n_out, o, n_in, i, S).permute(0, 2, 1, 3, 4)
        return sub.reshape(n_out * n_in, o * i * S)

    def coefficients(self, kernel: torch.Tensor) -> torch.Tensor:
        """Weights (escnn layout, shape ``(dimension,)``) of the projection of ``kernel``."""
        ex = self.expansion
        kernel = kernel.reshape(kernel.shape[0], kernel.shape[1], -1)
        weights = kernel.new_zeros(self.dimension)
        for n, io_pair in enumerate(self._pairs):
            block = getattr(ex, f"block_expansion_{ex._escape_pair(io_pair)}")
            _, o, i, _ = block.sampled_basis.shape
            pinv = getattr(self, f"pinv_{n}")
            coeff = self._gather(kernel, io_pair, o, i) @ pinv.to(kernel.dtype)
            start, stop = ex._weights_ranges[io_pair]
            weights[start:stop] = coeff.reshape(-1)
        return weights

    def project(self, kernel: torch.Tensor) -> torch.Tensor:
        """The orthogonal projection of ``kernel`` onto the equivariant kernels, same shape."""
        return self.expansion(self.coefficients(kernel)).reshape(kernel.shape)

    def squared_distance(self, kernel: torch.Tensor) -> torch.Tensor:
        """``‖K − Π(K)‖²`` without expanding anything: ``‖K‖² − Σ_blocks ‖K_b U_b‖²`` with
        ``U_b`` an orthonormal basis of each block's span (Pythagoras; entries no basis
        covers count fully). Differentiable; clamped at 0 against rounding."""
        flat = kernel.reshape(kernel.shape[0], kernel.shape[1], -1)
        ex = self.expansion
        inside = kernel.new_zeros(())
        for n, io_pair in enumerate(self._pairs):
            block = getattr(ex, f"block_expansion_{ex._escape_pair(io_pair)}")
            _, o, i, _ = block.sampled_basis.shape
            onb = getattr(self, f"onb_{n}").to(kernel.dtype)
            inside = inside + (self._gather(flat, io_pair, o, i) @ onb).pow(2).sum()
        return (flat.pow(2).sum() - inside).clamp_min(0.0)


class _RelaxedEscnnLayer(RelaxedLayer, enn.EquivariantModule):
    """Shared machinery of relaxed escnn layers built on a ``BlocksBasisExpansion``."""

    #: the escnn layer relaxed (``R2Conv`` or ``Linear``; escnn ships no type information)
    equivariant: Any
    free_bias: nn.Parameter | None
    #: buffers, or ``None`` (no bias to fit; a discrete group, without a Lie algebra)
    bias_pinv: torch.Tensor | None
    generator_in: torch.Tensor | None
    generator_out: torch.Tensor | None

    def __init__(self, layer: Any, init: FreeInit = "normal", init_std: float = 1e-2) -> None:
        super().__init__()
        if not isinstance(getattr(layer, "basisexpansion", None), BlocksBasisExpansion):
            raise TypeError(f"{type(layer).__name__} has no blocks basis expansion to relax")
        self.in_type = layer.in_type
        self.out_type = layer.out_type
        self.equivariant = layer
        filt, bias = layer.expand_parameters()
        self.free = nn.Parameter(torch.zeros_like(filt.detach()))
        self.free_bias = nn.Parameter(torch.zeros(self.out_type.size)) if bias is not None else None
        reset_free(self, init, init_std)
        self.projector = BlockProjector(layer.basisexpansion)
        if self.free_bias is not None and getattr(layer, "bias_expansion", None) is not None:
            # least-squares fit of a free bias by the invariant (trivial-irrep) directions
            # that escnn's bias_expansion spans
            pinv = torch.linalg.pinv(layer.bias_expansion.detach().to(torch.float64))
            self.register_buffer("bias_pinv", pinv.to(torch.float32), persistent=False)
        else:
            self.bias_pinv = None

    # ---- forward -------------------------------------------------------------------
    def combined_parameters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        filt, bias = self.equivariant.expand_parameters()
        factor = self.free_factor(filt)
        filt = filt + factor * self.free
        if bias is not None and self.free_bias is not None:
            bias = bias + factor * self.free_bias
        return filt, bias

    def evaluate_output_shape(self, input_shape):  # escnn's abstract API
        return self.equivariant.evaluate_output_shape(input_shape)

    # ---- method --------------------------------------------------------------------
    def free_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.free, self.free_bias) if p is not None]

    def projected(self, mode: ProjectionMode = "orthogonal") -> nn.Module:
        check_projection_mode(mode)
        out: Any = copy_module(self.equivariant)  # the escnn layer's own type
        out.train()  # escnn caches the expanded filter in eval mode: rebuild it after the edit
        if mode == "orthogonal":
            with torch.no_grad():
                filt, _ = self.equivariant.expand_parameters()
                factor = float(self.free_factor(filt))
                out.weights.add_(factor * self.projector.coefficients(self.free.detach()))
                pinv, free_bias = self.bias_pinv, self.free_bias
                if out.bias is not None and free_bias is not None:
                    if pinv is None:  # escnn's R2Conv and Linear expand every bias they have
                        raise TypeError(f"{type(out).__name__}: a bias without bias_expansion")
                    out.bias.add_(factor * (pinv @ free_bias.detach()))
        out.train(self.training)
        return out

    def penalty_proj(self) -> torch.Tensor:
        penalty = self.projector.squared_distance(self.free) / self.free.numel()
        if self.free_bias is not None and self.bias_pinv is not None:
            coeff = self.bias_pinv.to(self.free_bias.dtype) @ self.free_bias
            residual = self.free_bias - self.equivariant.bias_expansion.to(coeff) @ coeff
            penalty = penalty + residual.pow(2).mean()
        return penalty


class RelaxedR2Conv(_RelaxedEscnnLayer):
    """Relaxed :class:`escnn.nn.R2Conv`: one ``conv2d`` with kernel ``K_eq + θ·K_free``."""

    def __init__(self, conv: enn.R2Conv, init: FreeInit = "normal", init_std: float = 1e-2) -> None:
        super().__init__(conv, init, init_std)
        _register_generators(self)

    def _conv(self, x: torch.Tensor, filt: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        c = self.equivariant
        if c.padding_mode == "zeros":
            return F.conv2d(x, filt, bias, c.stride, c.padding, c.dilation, c.groups)
        x = F.pad(x, c._reversed_padding_repeated_twice, c.padding_mode)
        return F.conv2d(x, filt, bias, c.stride, 0, c.dilation, c.groups)

    def forward(self, input: enn.GeometricTensor) -> enn.GeometricTensor:
        assert input.type == self.in_type, "input field type does not match the layer's in_type"
        self._record(input.tensor)
        filt, bias = self.combined_parameters()
        return enn.GeometricTensor(self._conv(input.tensor, filt, bias), self.out_type)

    def penalty_norm(self) -> torch.Tensor | None:
        if self._recorded is None:
            return None
        return self._conv(self._recorded, self.free, None).pow(2).sum()

    def lie_derivative(self, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """``L_A(W) x = W(dρ_in(A) x) − dρ_out(A)(W x)`` for the rotation generator ``A``.

        On feature fields the generator acts on the fibre *and* rotates the grid:
        ``(dρ(A) f)(p) = dρ_fibre(A) f(p) − ∇f(p)·(A p)``. The spatial gradient uses a
        5-point central-difference stencil, exact for cubic polynomials: the result equals
        the continuous Lie derivative up to the grid's discretisation error.
        """
        gen_in, gen_out = self.generator_in, self.generator_out
        if gen_in is None or gen_out is None:
            raise ValueError("the Lie derivative needs a continuous rotation group (SO(2), O(2))")
        kernel = self.free if kernel is None else kernel
        x_in = field_generator_action(x, gen_in.to(x))
        wx = self._conv(x, kernel, None)
        return self._conv(x_in, kernel, None) - field_generator_action(wx, gen_out.to(x))

    def penalty_lie(self) -> torch.Tensor | None:
        if self._recorded is None or self.generator_in is None:
            return None
        return self.lie_derivative(self._recorded).pow(2).sum()


class RelaxedLinear(_RelaxedEscnnLayer):
    """Relaxed :class:`escnn.nn.Linear` (fields without a base space): ``y = (M_eq + θ·M_free) x``."""

    def __init__(
        self, linear: enn.Linear, init: FreeInit = "normal", init_std: float = 1e-2
    ) -> None:
        super().__init__(linear, init, init_std)
        _register_generators(self)

    def forward(self, input: enn.GeometricTensor) -> enn.GeometricTensor:
        assert input.type == self.in_type, "input field type does not match the layer's in_type"
        self._record(input.tensor)
        mat, bias = self.combined_parameters()
        return enn.GeometricTensor(F.linear(input.tensor, mat, bias), self.out_type, input.coords)

    def penalty_norm(self) -> torch.Tensor | None:
        if self._recorded is None:
            return None
        return F.linear(self._recorded, self.free).pow(2).sum()

    def penalty_lie(self) -> torch.Tensor | None:
        gen_in, gen_out = self.generator_in, self.generator_out
        if self._recorded is None or gen_in is None or gen_out is None:
            return None
        w = self.free
        lie = w @ gen_in.to(w) - gen_out.to(w) @ w
        return F.linear(self._recorded, lie).pow(2).sum()


# ---- Lie algebra of the fibre representation ------------------------------------------
def _register_generators(layer: _RelaxedEscnnLayer) -> None:
    """Store ``dρ_in(A)``, ``dρ_out(A)`` as buffers (they follow the module to the GPU)."""
    for name, field_type in (("generator_in", layer.in_type), ("generator_out", layer.out_type)):
        gen = _lie_generators(field_type)
        if gen is None:
            setattr(layer, name, None)
        else:
            layer.register_buffer(name, gen.to(torch.float32), persistent=False)


def _lie_generators(field_type: enn.FieldType) -> torch.Tensor | None:
    """``dρ(A)`` of the field type's fibre representation for the rotation generator, or
    ``None`` when the group is discrete (C_N, D_N) and has no Lie algebra.

    Computed by a float64 central difference of ``ρ(rotation(±ε))``; the error is ``O(ε²k³)``
    for frequency ``k``, i.e. ~1e-12 here.
    """
    group = field_type.fibergroup
    if not getattr(group, "continuous", False):
        return None
    eps = 1e-5
    try:
        plus = field_type.representation(group.element(eps, "radians"))
        minus = field_type.representation(group.element(-eps, "radians"))
    except Exception:  # groups whose elements are not plain rotation angles (e.g. O(2))
        plus = field_type.representation(group.element((0, eps), "radians"))
        minus = field_type.representation(group.element((0, -eps), "radians"))
    gen = (
        torch.as_tensor(plus, dtype=torch.float64) - torch.as_tensor(minus, dtype=torch.float64)
    ) / (2 * eps)
    return gen


_STENCIL = torch.tensor([1.0, -8.0, 0.0, 8.0, -1.0]) / 12.0


def _spatial_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """∂/∂(row) and ∂/∂(col) of ``x (B, C, H, W)`` by a 5-point stencil (zero padding)."""
    c = x.shape[1]
    k = _STENCIL.to(x)
    d_row = F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), padding=(2, 0), groups=c)
    d_col = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), padding=(0, 2), groups=c)
    return d_row, d_col


def field_generator_action(x: torch.Tensor, fibre_generator: torch.Tensor) -> torch.Tensor:
    """``dρ(A) f`` for a feature field ``x (B, C, H, W)`` under the rotation generator.

    Rotation about the grid centre, in escnn's orientation: ``[g·f](p) = ρ(g) f(g⁻¹p)``
    where a positive angle moves the top row to the left column (checked in the tests,
    where the opposite orientation makes the Lie derivative of an equivariant kernel large).
    """
    b, c, h, w = x.shape
    fibre = torch.einsum("oc,bchw->bohw", fibre_generator, x)
    d_row, d_col = _spatial_gradient(x)
    rows = torch.arange(h, dtype=x.dtype, device=x.device) - (h - 1) / 2
    cols = torch.arange(w, dtype=x.dtype, device=x.device) - (w - 1) / 2
    r = rows.view(1, 1, h, 1)
    q = cols.view(1, 1, 1, w)
    # velocity of a point under the infinitesimal rotation, in (row, col) coordinates
    v_row, v_col = ROTATION_SIGN * q, -ROTATION_SIGN * r
    return fibre - (d_row * v_row + d_col * v_col)


#: orientation of escnn's rotations in (row, col) index space (see the tests).
ROTATION_SIGN = -1.0


# ---- model-level helpers ---------------------------------------------------------------
RELAXABLE: dict[type, type[_RelaxedEscnnLayer]] = {
    enn.R2Conv: RelaxedR2Conv,
    enn.Linear: RelaxedLinear,
}


def relax_model(model: nn.Module, init: FreeInit = "normal", init_std: float = 1e-2) -> nn.Module:
    """Wrap every relaxable escnn layer of ``model`` (in place) with its relaxed version.

    Walks the module tree (``SequentialModule``, ``ModuleList``, user modules …) and
    replaces each ``R2Conv`` / ``Linear`` child; returns ``model`` for chaining. A user's own
    escnn architecture can be relaxed this way without rewriting it.
    """
    for name, child in list(model.named_children()):
        relaxed_type = RELAXABLE.get(type(child))
        if relaxed_type is not None:
            setattr(model, name, relaxed_type(child, init=init, init_std=init_std))
        elif not isinstance(child, RelaxedLayer):
            relax_model(child, init=init, init_std=init_std)
    return model
