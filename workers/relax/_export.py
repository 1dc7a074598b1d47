"""Export of a projected model to plain torch (no escnn) and TorchScript.

escnn's ``export()`` switches the module to eval mode and shares storage with it, so we
always export a deep copy. Modules escnn cannot export get an exporter registered with
:func:`register_exporter`; :func:`check_exportable` finds the first module with neither
and names it, so a model is rejected when it is built, not when the search ends.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from escnn import nn as enn
from torch import nn

from ._base import RelaxedLayer, copy_module

_EXPORTERS: dict[type, Callable[[nn.Module], nn.Module]] = {}


class NotExportableError(TypeError):
    """A module of the model cannot be exported to plain torch."""


def register_exporter(module_type: type, exporter: Callable[[nn.Module], nn.Module]) -> None:
    """Teach :func:`export_escnn` to export ``module_type`` (e.g. an SO(2) nonlinearity)."""
    _EXPORTERS[module_type] = exporter


def _export(module: nn.Module) -> nn.Module:
    exporter = _EXPORTERS.get(type(module))
    if exporter is not None:
        return exporter(module)
    if isinstance(module, enn.SequentialModule):
        return nn.Sequential(OrderedDict((n, _export(m)) for n, m in module._modules.items()))
    if isinstance(module, enn.EquivariantModule):
        return module.export()
    return module


def export_escnn(module: nn.Module) -> nn.Module:
    """Plain-torch version of an escnn module (or ``SequentialModule``), in eval mode.

    Works on a deep copy; the input module is not modified.
    """
    if any(isinstance(m, RelaxedLayer) for m in module.modules()):
        raise NotExportableError("project the model before exporting it (relaxed layers found)")
    exported = _export(copy_module(module))
    return exported.eval()


def _leaf_escnn_modules(module: nn.Module, prefix: str = ""):
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if type(child) in _EXPORTERS:
            continue
        if isinstance(child, RelaxedLayer):
            yield path, child.projected("drop")
        elif isinstance(child, enn.SequentialModule) or not isinstance(child, enn.EquivariantModule):
            yield from _leaf_escnn_modules(child, path)
        else:
            yield path, child


def check_exportable(module: nn.Module) -> None:
    """Raise :class:`NotExportableError` naming the first escnn module that cannot be
    exported (neither escnn's ``export()`` nor a registered exporter works)."""
    for path, leaf in _leaf_escnn_modules(module):
        try:
            copy_module(leaf).export()
        except NotImplementedError as err:
            raise NotExportableError(
                f"module '{path}' ({type(leaf).__name__}) cannot be exported to plain torch; "
                "choose an exportable module or register an exporter"
            ) from err


def to_torchscript(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    """Trace a plain-torch module into TorchScript (loads with ``torch.jit.load`` alone)."""
    module = module.eval()
    with torch.no_grad():
        return torch.jit.trace(module, example_inputs, check_trace=False)
