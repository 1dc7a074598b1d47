"""Plain-torch exports of the escnn modules whose own ``export()`` is missing or keeps escnn.

escnn 1.0.11 cannot export what SO(2) models need: ``FourierPointwise``/``FourierELU``,
``NormPool`` and ``PointwiseAvgPool2D`` have no ``export()``, and ``GroupPooling.export()``
returns ``escnn.nn.MaxPoolChannels``, which still imports escnn. The modules below compute
the same functions on plain tensors (TorchScript-traceable); :data:`ESCNN_EXPORTERS` maps
each escnn class to the function that converts an instance (the export registry in
``_export.py`` starts from it).
"""

from __future__ import annotations

from collections.abc import Callable

import escnn.nn as enn
import torch
import torch.nn.functional as F
from torch import nn

_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "elu": F.elu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


class ExportedFourierPointwise(nn.Module):
    """``FourierPointwise`` without escnn: sample the band-limited signal on the group grid
    (``A``), apply the function pointwise, go back to Fourier coefficients (``Ainv``).

    Input and output are ``(B, channels·F, *spatial)`` with ``F`` coefficients per field.
    """

    A: torch.Tensor
    Ainv: torch.Tensor

    def __init__(self, A: torch.Tensor, Ainv: torch.Tensor, channels: int, function: str) -> None:
        super().__init__()
        if function not in _FUNCTIONS:
            raise ValueError(f"unsupported pointwise function {function!r}")
        self.register_buffer("A", A.detach().clone())  # (grid, F_in)
        self.register_buffer("Ainv", Ainv.detach().clone())  # (F_out, grid)
        self.channels = int(channels)
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, spatial = x.shape[0], x.shape[2:]
        x_hat = x.reshape(b, self.channels, self.A.shape[1], -1)
        samples = torch.einsum("bcfn,gf->bcgn", x_hat, self.A)
        y = _FUNCTIONS[self.function](samples)
        y_hat = torch.einsum("bcgn,fg->bcfn", y, self.Ainv)
        return y_hat.reshape((b, self.channels * self.Ainv.shape[0]) + tuple(spatial))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, function={self.function}, grid={self.A.shape[0]}"


class ExportedNormPool(nn.Module):
    """``NormPool`` without escnn: the Euclidean norm of each field (one invariant per field).

    ``assign`` is a 0/1 matrix ``(in_channels, fields)`` telling which channel belongs to which
    field, so fields of different sizes need no special case.
    """

    def __init__(self, assign: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("assign", assign.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.einsum("bc...,cf->bf...", x * x, self.assign))


class ExportedGroupMaxPool(nn.Module):
    """``GroupPooling`` without escnn: the maximum over the channels of each field
    (all fields of one size, as escnn's own export requires)."""

    def __init__(self, field_size: int) -> None:
        super().__init__()
        self.field_size = int(field_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        return x.reshape((b, c // self.field_size, self.field_size) + tuple(x.shape[2:])).amax(2)

    def extra_repr(self) -> str:
        return f"field_size={self.field_size}"


def _function_name(module: enn.FourierPointwise) -> str:
    # escnn keeps only the callable; map it back to a name (in-place variants included)
    fn = module._function
    names = {
        F.relu: "relu",
        F.relu_: "relu",
        F.elu: "elu",
        F.elu_: "elu",
        torch.sigmoid: "sigmoid",
        torch.sigmoid_: "sigmoid",
        F.sigmoid: "sigmoid",
        torch.tanh: "tanh",
        torch.tanh_: "tanh",
        F.tanh: "tanh",
    }
    for candidate, name in names.items():
        if fn is candidate:
            return name
    raise NotImplementedError(f"FourierPointwise with function {fn!r} has no plain-torch export")


def export_fourier_pointwise(module: enn.FourierPointwise) -> nn.Module:
    """Export ``FourierPointwise``/``FourierELU`` (also with ``out_irreps``)."""
    module.eval()
    return ExportedFourierPointwise(
        module.A, module.Ainv, len(module.in_type), _function_name(module)
    ).eval()


def _field_assignment(module: enn.EquivariantModule) -> torch.Tensor:
    sizes = [r.size for r in module.in_type.representations]
    assign = torch.zeros(sum(sizes), len(sizes), dtype=torch.get_default_dtype())
    start = 0
    for k, size in enumerate(sizes):
        assign[start : start + size, k] = 1.0
        start += size
    return assign


def export_norm_pool(module: enn.NormPool) -> nn.Module:
    """Export ``NormPool`` (norm of every field)."""
    module.eval()
    return ExportedNormPool(_field_assignment(module)).eval()


def export_group_pooling(module: enn.GroupPooling) -> nn.Module:
    """Export ``GroupPooling`` (max over every field's channels) without escnn."""
    sizes = {r.size for r in module.in_type.representations}
    if len(sizes) != 1:
        raise NotImplementedError("GroupPooling export needs all fields of one size")
    module.eval()
    return ExportedGroupMaxPool(sizes.pop()).eval()


def export_avg_pool(module: enn.PointwiseAvgPool2D) -> nn.Module:
    """Export ``PointwiseAvgPool2D`` as ``torch.nn.AvgPool2d``."""
    module.eval()
    return nn.AvgPool2d(
        module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode
    ).eval()


#: escnn class → exporter; checked before a module's own ``export()`` (exact class match,
#: so subclasses with different behaviour, e.g. the anti-aliased pools, are not captured)
ESCNN_EXPORTERS: dict[type, Callable[[nn.Module], nn.Module]] = {
    enn.FourierPointwise: export_fourier_pointwise,
    enn.FourierELU: export_fourier_pointwise,
    enn.NormPool: export_norm_pool,
    enn.GroupPooling: export_group_pooling,
    enn.PointwiseAvgPool2D: export_avg_pool,
}
