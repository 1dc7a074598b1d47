"""Can one trial of a spec ever be placed? (torch- and Ray-free)

Ray queues a trial whose ``resources`` no node can offer and waits for such a node forever;
the job would show ``running`` with nothing happening. Two checks answer instead:

- the API, when the cluster is this machine (no ``ray_address``: the controller starts a
  local Ray here), refuses such a spec at submit with 422 naming the field;
- the search driver, once connected to Ray, compares the spec with the nodes alive and fails
  the job at once with the same words (a remote cluster, or a spec stored before).

A cluster that adds nodes on demand (an autoscaler) is judged by the nodes present when the
search starts.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping

__all__ = ["local_nodes", "placement_problem"]


def _count(value: float) -> str:
    return f"{value:g}"


def placement_problem(
    cpu: float, gpu: float, nodes: Iterable[Mapping[str, float]], where: str
) -> tuple[str, str] | None:
    """``(field, message)`` when no node in ``nodes`` (each ``{"CPU": n, "GPU": m}``) has
    ``cpu`` CPUs and ``gpu`` GPUs for one trial; ``None`` when one has. ``where`` names the
    cluster in the message ("this server's Ray", "the Ray cluster")."""
    sizes = [(float(n.get("CPU", 0) or 0), float(n.get("GPU", 0) or 0)) for n in nodes]
    if any(c >= cpu and g >= gpu for c, g in sizes):
        return None
    most_cpu = max((c for c, _ in sizes), default=0.0)
    most_gpu = max((g for _, g in sizes), default=0.0)
    if not sizes:
        return "resources", f"{where} has no node alive: no trial can start"
    if most_cpu < cpu:
        return (
            "resources.cpu",
            f"each trial asks for {_count(cpu)} CPUs but the largest node of {where} has "
            f"{_count(most_cpu)}: no trial could ever start (use resources.cpu <= "
            f"{_count(most_cpu)})",
        )
    if most_gpu < gpu:
        return (
            "resources.gpu",
            f"each trial asks for {_count(gpu)} GPUs but the largest node of {where} has "
            f"{_count(most_gpu)}: no trial could ever start (use resources.gpu <= "
            f"{_count(most_gpu)})",
        )
    return (
        "resources",
        f"no node of {where} has both {_count(cpu)} CPUs and {_count(gpu)} GPUs for one trial",
    )


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.cache
def _local_gpus() -> float | None:
    """GPUs ``nvidia-smi -L`` lists (0 without it); ``None`` when it does not answer."""
    if shutil.which("nvidia-smi") is None:
        return 0.0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return float(sum(1 for line in out.splitlines() if line.startswith("GPU ")))


def local_nodes() -> list[dict[str, float]]:
    """The one node of a local Ray started on this machine (GPUs left unchecked when
    ``nvidia-smi`` does not answer)."""
    gpus = _local_gpus()
    return [{"CPU": float(_local_cpus()), "GPU": float("inf") if gpus is None else gpus}]
