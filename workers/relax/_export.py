"""Export of a projected model to plain torch (no escnn) and TorchScript.

One export path for every model: a task model's ``export()`` exports its parts with
:func:`export_module`, and the contract tests of the relaxed layers call the same function.

escnn modules are exported with a registered exporter when there is one (exact class
match), else with their own ``export()``. The registry starts from
:data:`~._escnn_exporters.ESCNN_EXPORTERS` (the escnn modules whose own export is missing or
still needs escnn); :func:`register_exporter` adds more, e.g. for a plugin task's modules.
:func:`check_exportable` runs the export on a projected copy when a model is built, so an
unexportable model is rejected then, not when the search ends.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from escnn import nn as enn
from torch import nn

from search_spaces import RelaxtuneError

from ._base import RelaxedLayer, copy_module, relaxed_layers, submodules
from ._escnn_exporters import ESCNN_EXPORTERS
from ._projection import project_model

Exporter = Callable[[nn.Module], nn.Module]

_EXPORTERS: dict[type, Exporter] = dict(ESCNN_EXPORTERS)


class NotExportableError(RelaxtuneError, TypeError):
    """A module of the model cannot be exported to plain torch."""


def register_exporter(module_type: type, exporter: Exporter) -> None:
    """Teach :func:`export_module` to export ``module_type`` (exact class match)."""
    _EXPORTERS[module_type] = exporter


def _join(name: str, child: str) -> str:
    return f"{name}.{child}" if name else child


def _is_escnn(module: nn.Module) -> bool:
    return type(module).__module__.split(".")[0] == "escnn"


def _first_relaxed(module: nn.Module, name: str) -> tuple[str, nn.Module] | None:
    # walks ``_modules`` directly: ``named_modules()`` hashes escnn modules by value (slow)
    if isinstance(module, RelaxedLayer):
        return name, module
    for child_name, child in module._modules.items():
        if child is not None:
            found = _first_relaxed(child, _join(name, child_name))
            if found is not None:
                return found
    return None


def export_module(module: nn.Module, name: str = "model") -> nn.Module:
    """Plain-torch copy of a projected module, in eval mode; ``module`` is not modified.

    An escnn ``SequentialModule`` becomes a ``torch.nn.Sequential`` of its exported children;
    any other escnn module is exported by its registered exporter or its own ``export()``; a
    module with no escnn inside (e.g. ``VectorLinear``, a plain MLP) is kept as it is.

    Raises :class:`NotExportableError` naming the first module (by its dotted path under
    ``name``) that is still relaxed (project the model first), cannot be exported, or
    exports to something that still needs escnn.
    """
    relaxed = _first_relaxed(module, name)
    if relaxed is not None:
        path, layer = relaxed
        raise NotExportableError(
            f"module '{path}' ({type(layer).__name__}) cannot be exported to plain torch: "
            "a relaxed layer is not equivariant; project the model first "
            "(workers.relax.project_model)"
        )
    # escnn's export() switches modules to eval mode and shares storage: export a copy
    return _export(copy_module(module).eval(), name).eval()


def _export(module: nn.Module, name: str) -> nn.Module:
    if isinstance(module, enn.SequentialModule):
        return nn.Sequential(
            OrderedDict(
                (child_name, _export(child, _join(name, child_name)))
                for child_name, child in module._modules.items()
            )
        )
    exporter = _EXPORTERS.get(type(module))
    try:
        if exporter is not None:
            exported = exporter(module)
        elif isinstance(module, enn.EquivariantModule):
            exported = module.export()
        elif not any(_is_escnn(m) for m in submodules(module)):
            exported = module  # already plain torch
        else:
            raise NotImplementedError(
                "a plain torch module with escnn modules inside; only escnn modules and "
                "SequentialModule trees of them are exported"
            )
    except NotExportableError:
        raise
    except (NotImplementedError, ValueError, AssertionError) as err:
        detail = str(err).strip() or type(err).__name__
        raise NotExportableError(
            f"module '{name}' ({type(module).__name__}) cannot be exported to plain torch: "
            f"{' '.join(detail.split())}"
        ) from err
    if exported is None:
        # escnn base classes (e.g. _IIDBatchNorm) declare export() and return nothing
        raise NotExportableError(
            f"module '{name}' ({type(module).__name__}) cannot be exported to plain torch: "
            "its export() returned None"
        )
    assert_plain_torch(exported, name)
    return exported


def assert_plain_torch(module: nn.Module, name: str = "model") -> None:
    """Raise :class:`NotExportableError` if any submodule still comes from escnn."""
    for sub_name, sub in module.named_modules():
        if _is_escnn(sub):
            where = _join(name, sub_name) if sub_name else name
            raise NotExportableError(
                f"module '{where}' exports to {type(sub).__module__}.{type(sub).__name__}, "
                "which still needs escnn"
            )


def check_exportable(model: nn.Module, allowed: tuple[type, ...] | None = None) -> None:
    """Raise :class:`NotExportableError` naming the first module that keeps ``model`` from
    exporting to plain torch.

    Runs the real export on a projected copy (``"drop"``) rather than asking each module
    whether it has an ``export()``: that also catches exports that return ``None`` or still
    use escnn. The export is the model's own ``export()`` (a task model's, which goes
    through :func:`export_module`), else :func:`export_module`. ``allowed``, if given, lists
    the module types the exported model may contain.
    """
    target = project_model(model, "drop") if relaxed_layers(model) else model
    own_export = getattr(target, "export", None)
    if callable(own_export) and not isinstance(target, enn.EquivariantModule):
        exported = own_export()
    else:
        exported = export_module(target)
    assert_plain_torch(exported)
    if allowed is not None:
        for path, sub in exported.named_modules():
            if not isinstance(sub, allowed):
                raise NotExportableError(
                    f"module '{path or '<root>'}' ({type(sub).__name__}) "
                    "is not exportable to plain torch"
                )


def to_torchscript(
    module: nn.Module, example_inputs: tuple[torch.Tensor, ...]
) -> torch.jit.ScriptModule:
    """Trace a plain-torch module into TorchScript (loads with ``torch.jit.load`` alone)."""
    module = module.eval()
    with torch.no_grad():
        return torch.jit.trace(module, example_inputs, check_trace=False)
