"""Shared helpers of the benchmark scripts: import path, machine description, result files."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def save_results(name: str, figures: dict[str, Any], quick: bool) -> Path:
    """Write ``bench/results/<name>[_quick].json`` with the figures, date and machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}{'_quick' if quick else ''}.json"
    payload = {
        "benchmark": name,
        "quick": quick,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "figures": _clean(figures),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"saved {path.relative_to(ROOT)}")
    return path


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation."""
    if not values:
        return float("nan")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (what the docs copy)."""

    def fmt(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.4g}"
        return str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def difference_line(difference: Any, better: str, reference: str) -> str:
    """``mean …, 95 % CI […] (… of <reference>, CI […]); <better> better on k of n seeds``:
    one paired difference (``service._gain_stats.paired_difference``) as the scripts print it."""
    low, high = difference.ci
    rel = ""
    if difference.relative_ci is not None:
        rlow, rhigh = difference.relative_ci
        rel = f" ({difference.relative:+.1%} of {reference}, CI [{rlow:+.1%}, {rhigh:+.1%}])"
    return (
        f"mean {difference.mean:.4g}, 95 % CI [{low:.4g}, {high:.4g}]{rel}; "
        f"{better} better on {difference.better_seeds} of {difference.n} seeds"
    )
