"""Measuring equivariance (docs/METHOD.md §5) and the certificate a checkpoint carries."""

from __future__ import annotations

from typing import Any

import torch


def relative_error(transformed_output: torch.Tensor, expected: torch.Tensor) -> float:
    """``max over the batch of ‖f(g·x) − ρ_out(g) f(x)‖ / ‖f(x)‖`` (per-sample norms)."""
    diff = (transformed_output - expected).reshape(expected.shape[0], -1).norm(dim=1)
    ref = expected.reshape(expected.shape[0], -1).norm(dim=1).clamp_min(1e-12)
    return float((diff / ref).max())


def make_certificate(
    *,
    group: str,
    errors: dict[str, float],
    exact_elements: list[str],
    tolerance: float,
    seed: int,
    relaxed_errors: dict[str, float] | None = None,
    measured_on: str = "validation inputs",
) -> dict[str, Any]:
    """The ``certificate.json`` dict: errors of the projected model per group element, the
    max over the exact elements (those that must hold to float precision), pass/fail
    against ``tolerance``, and the same errors for the relaxed model before projection."""
    exact = {k: v for k, v in errors.items() if k in exact_elements}
    max_exact = max(exact.values()) if exact else float("nan")
    return {
        "group": group,
        "elements": list(errors),
        "exact_elements": list(exact_elements),
        "errors": errors,
        "max_error_exact": max_exact,
        "max_error_all": max(errors.values()) if errors else float("nan"),
        "tolerance": tolerance,
        "seed": seed,
        "measured_on": measured_on,
        "passed": bool(exact) and max_exact <= tolerance,
        "relaxed_errors": relaxed_errors or {},
    }
