"""The checkpoint folder users download (README.md, "The checkpoint"): no pickle anywhere.

    model.safetensors   exported plain-torch weights
    model.ts            TorchScript of the exported model (``torch.jit.load`` and nothing else)
    inputs.safetensors  the validation inputs the certificate was measured on
    config.json         task, model/data config, hyperparameters, input shapes, group, versions
    certificate.json    equivariance errors of the projected model per group element (+ relaxed)
    metrics.json        validation metrics and the test metric of the final projected model

The folder is written to a temporary sibling and renamed into place, so a failure never
leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from search_spaces import RelaxtuneError
from workers.relax import make_certificate, to_torchscript
from workers.tasks import build_task

if TYPE_CHECKING:
    from ._loop import Trainer

#: the largest equivariance error on the exact group elements that ``verify_checkpoint``
#: accepts unless told otherwise; the checked folder's own certificate never sets it
VERIFY_TOLERANCE = 1e-4

FILES = (
    "model.safetensors",
    "model.ts",
    "inputs.safetensors",
    "config.json",
    "certificate.json",
    "metrics.json",
)


class CheckpointError(RelaxtuneError, RuntimeError):
    """A checkpoint could not be written or does not verify."""


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("relaxtune", "torch", "escnn", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def write_checkpoint(trainer: Trainer, out_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Project the trained model, export it, verify the export, and write the folder."""
    out_dir = Path(out_dir)
    task, config = trainer.task, trainer.config
    projected = trainer.projected_model()
    relaxed_errors = trainer.task.equivariance_errors(
        trainer.model.eval(), trainer.eval_inputs, config.seed
    )
    plain = projected.export().eval().cpu()
    inputs = tuple(t.detach().cpu() for t in trainer.eval_inputs)
    scripted = to_torchscript(plain, inputs)
    with torch.no_grad():
        expected = projected.cpu()(*inputs).float()
        got = scripted(*inputs).float()
    projected.to(trainer.device)
    gap = float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))
    if gap > 1e-4:
        raise CheckpointError(
            f"exported model differs from the projected model (relative {gap:.2e})"
        )
    with torch.no_grad():
        errors = task.equivariance_errors(scripted, inputs, config.seed)
    certificate = make_certificate(
        group=task.group,
        errors={k: float(v) for k, v in errors.items()},
        exact_elements=list(task.exact_elements),
        tolerance=config.tolerance,
        seed=config.seed,
        relaxed_errors={k: float(v) for k, v in relaxed_errors.items()},
        measured_on=f"{len(inputs[0])} validation inputs (inputs.safetensors), exported TorchScript model",
    )
    last = trainer.reports[-1] if trainer.reports else None
    test_metric = trainer.evaluate(projected, trainer.test_loader)
    metrics = {
        "metric": task.metric,
        "mode": task.mode,
        f"val_{task.metric}": _finite(trainer.evaluate(projected, trainer.val_loader)),
        f"val_{task.metric}_relaxed": _finite(last.val_relaxed) if last else None,
        f"test_{task.metric}": _finite(test_metric),
        "epochs": trainer.epoch,
        "final_theta": last.theta if last else 0.0,
        "export_max_relative_gap": gap,
        "history": [r.as_dict() for r in trainer.reports],
    }
    config_json = {
        "format": "relaxtune-checkpoint/1",
        "task": config.task,
        "group": task.group,
        "metric": task.metric,
        "mode": task.mode,
        "model": config.model,
        "data": config.data,
        "hparams": trainer.hparams.flat(),  # complete: defaults included
        "epochs": config.epochs,
        "seed": config.seed,
        "input_shapes": [list(t.shape[1:]) for t in inputs],
        "input_dtypes": [str(t.dtype).removeprefix("torch.") for t in inputs],
        "state_dict_keys": sorted(plain.state_dict()),
        "versions": _versions(),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        weights = {k: v.detach().cpu().contiguous().clone() for k, v in plain.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        save_file(
            {f"input_{i}": t.contiguous() for i, t in enumerate(inputs)},
            str(tmp / "inputs.safetensors"),
        )
        scripted.save(str(tmp / "model.ts"))
        for name, payload in (
            ("config.json", config_json),
            ("certificate.json", certificate),
            ("metrics.json", metrics),
        ):
            (tmp / name).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir, metrics


def _stored_number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def verify_checkpoint(directory: str | Path, tolerance: float = VERIFY_TOLERANCE) -> dict[str, Any]:
    """Re-check a checkpoint folder: files present, ``model.safetensors`` equals the
    TorchScript model's weights and matches ``config.json``, and the TorchScript model is
    equivariant on the stored inputs to within ``tolerance`` (the verifier's, never the one
    written in the folder's ``certificate.json``). Returns a report with ``passed``, the
    measured errors, and the certificate's stored figures beside them."""
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a positive finite number, got {tolerance!r}")
    directory = Path(directory)
    missing = [f for f in FILES if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(f"{directory}: missing {', '.join(missing)}")
    config = json.loads((directory / "config.json").read_text())
    stored_cert = json.loads((directory / "certificate.json").read_text())
    if not isinstance(stored_cert, dict):
        stored_cert = {}
    scripted = torch.jit.load(str(directory / "model.ts"), map_location="cpu").eval()
    weights = load_file(str(directory / "model.safetensors"))
    ts_state = scripted.state_dict()
    problems: list[str] = []
    if sorted(weights) != sorted(config.get("state_dict_keys", [])):
        problems.append("model.safetensors keys do not match config.json")
    # tracing keeps non-persistent buffers as attributes too, so model.ts may hold more
    if not set(weights) <= set(ts_state):
        problems.append("model.safetensors keys do not match model.ts")
    else:
        for k, v in weights.items():
            if v.shape != ts_state[k].shape or not torch.equal(v, ts_state[k].to(v.dtype)):
                problems.append(f"model.safetensors differs from model.ts at '{k}'")
                break
    stored_inputs = load_file(str(directory / "inputs.safetensors"))
    inputs = tuple(stored_inputs[f"input_{i}"] for i in range(len(stored_inputs)))
    shapes = [list(t.shape[1:]) for t in inputs]
    if shapes != config.get("input_shapes"):
        problems.append(
            f"inputs.safetensors shapes {shapes} do not match config.json {config.get('input_shapes')}"
        )
    task = build_task(config["task"], config["model"], config["data"])
    with torch.no_grad():
        errors = {
            k: float(v)
            for k, v in task.equivariance_errors(scripted, inputs, int(config["seed"])).items()
        }
    exact = [errors[k] for k in task.exact_elements if k in errors]
    max_exact = max(exact) if exact else float("nan")
    if not exact or not max_exact <= tolerance:
        problems.append(f"equivariance error {max_exact:.3g} above tolerance {tolerance:.1e}")
    stored_errors = stored_cert.get("errors")
    return {
        "checkpoint": str(directory),
        "task": config["task"],
        "group": config.get("group"),
        "errors": errors,
        "max_error_exact": max_exact,
        "tolerance": tolerance,
        "stored": {
            "errors": {k: _stored_number(v) for k, v in stored_errors.items()}
            if isinstance(stored_errors, dict)
            else None,
            "max_error_exact": _stored_number(stored_cert.get("max_error_exact")),
            "tolerance": _stored_number(stored_cert.get("tolerance")),
            "passed": stored_cert.get("passed")
            if isinstance(stored_cert.get("passed"), bool)
            else None,
        },
        "problems": problems,
        "passed": not problems,
    }
