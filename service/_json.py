"""Numbers as JSON can carry them: the service's one home for dropping NaN and infinities.

Metrics come from training (a diverged trial reports NaN), from Optuna and from JSON files;
JSON has no NaN or infinity, and a missing value must read as missing, not as a number.
"""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is missing, not a number, NaN or infinite.

    Booleans are refused: ``True`` in a metric slot is a bug upstream, not the number 1.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None``, recursively through
    dicts, lists and tuples (tuples become lists, as JSON has them); anything else as is."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
