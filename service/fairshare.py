"""Which queued jobs start now, and where the others stand (no torch, no Ray, no database).

A job's *demand* is what its search holds at once on the cluster: ``min(max_concurrent,
trials)`` trials, each with the spec's ``resources`` (a gain report runs its runs with the same
resources and concurrency). The controller starts a job while

- its demand fits what the running jobs leave free of the cluster's CPUs and GPUs,
- fewer than ``max_jobs`` jobs run (``Settings.max_running_jobs``), and
- its tenant's running trials plus its own stay within the tenant's ``max_running_trials``.

A demand larger than the whole cluster (or than the tenant's cap) is counted as all of it: such
a job starts once the cluster (or the tenant) is otherwise idle, and Ray runs its trials as
fast as they fit.

Fair share: tenants take turns. The next job comes from the tenant with the fewest running
trials per unit of weight (``share_weight``, 1 unless an admin set it with ``relaxtune quota
set``); ties go to the tenant served least recently, then to the oldest job. Within a tenant,
jobs run oldest first. When the job whose turn it is does not fit the cluster, nothing behind
it starts (no backfill): a large job is never starved by a stream of small ones. A tenant at
its trial cap is passed over (its jobs wait for its own running ones).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Demand", "Plan", "Queued", "Running", "demand_of", "plan"]

_EPS = 1e-9


@dataclass(frozen=True)
class Demand:
    """What one job holds at once: its concurrent trials and their CPUs and GPUs."""

    trials: int
    cpu: float
    gpu: float


def demand_of(spec: Mapping[str, Any]) -> Demand:
    """The demand of a stored (validated) spec dict."""
    budget = spec.get("budget") or {}
    resources = spec.get("resources") or {}
    trials = max(1, min(int(budget.get("max_concurrent", 1)), int(budget.get("trials", 1))))
    cpu = float(resources.get("cpu", 1) or 0)
    gpu = float(resources.get("gpu", 0) or 0)
    return Demand(trials=trials, cpu=trials * cpu, gpu=trials * gpu)


@dataclass(frozen=True)
class Queued:
    job_id: str
    tenant: str
    demand: Demand


@dataclass(frozen=True)
class Running:
    job_id: str
    tenant: str
    demand: Demand


@dataclass
class Plan:
    """``start``: the jobs to claim now, in order; ``queue``: every other queued job's
    ``{"position": n, "reason": text}`` (1 = next to start)."""

    start: list[str] = field(default_factory=list)
    queue: dict[str, dict[str, Any]] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)


def _n(value: float) -> str:
    return f"{value:g}"


def _clamp(demand: Demand, capacity: Mapping[str, float], cap: int) -> Demand:
    return Demand(
        trials=min(demand.trials, cap),
        cpu=min(demand.cpu, float(capacity.get("CPU", 0.0))),
        gpu=min(demand.gpu, float(capacity.get("GPU", 0.0))),
    )


def plan(
    queued: Sequence[Queued],
    running: Sequence[Running],
    capacity: Mapping[str, float],
    *,
    max_jobs: int,
    weight: Callable[[str], float] = lambda _tenant: 1.0,
    trial_cap: Callable[[str], int] = lambda _tenant: 1 << 30,
    last_served: Mapping[str, int] | None = None,
) -> Plan:
    """Decide which of ``queued`` (oldest first) start next to ``running`` on a cluster of
    ``capacity`` (``{"CPU": n, "GPU": m}``); see the module docstring for the rules."""
    total_cpu = float(capacity.get("CPU", 0.0))
    total_gpu = float(capacity.get("GPU", 0.0))
    held = [
        (r.tenant, _clamp(r.demand, capacity, max(1, int(trial_cap(r.tenant))))) for r in running
    ]
    used_cpu = sum(d.cpu for _, d in held)
    used_gpu = sum(d.gpu for _, d in held)
    jobs = len(running)
    tenant_trials: dict[str, int] = {}
    for tenant, d in held:
        tenant_trials[tenant] = tenant_trials.get(tenant, 0) + d.trials
    served = dict(last_served or {})
    turn = max(served.values(), default=0)
    queues: dict[str, list[Queued]] = {}
    for q in queued:
        queues.setdefault(q.tenant, []).append(q)
    order = {q.job_id: i for i, q in enumerate(queued)}
    result = Plan(used={"CPU": used_cpu, "GPU": used_gpu})
    starting = True  # until the job whose turn it is cannot start: then positions only
    blocked_reason = ""
    position = 0

    def priority(tenant: str) -> tuple[float, int, int]:
        share = tenant_trials.get(tenant, 0) / max(weight(tenant), _EPS)
        return share, served.get(tenant, -1), order[queues[tenant][0].job_id]

    while any(queues.values()):
        tenants = sorted((t for t, q in queues.items() if q), key=priority)
        # a tenant at its cap waits for its own jobs, not for the cluster: pass it over
        chosen = None
        for tenant in tenants:
            cap = max(1, int(trial_cap(tenant)))
            job = queues[tenant][0]
            have = tenant_trials.get(tenant, 0)
            if have == 0 or have + _clamp(job.demand, capacity, cap).trials <= cap:
                chosen = tenant
                break
        if chosen is None:  # every tenant with queued work is at its cap
            for tenant in tenants:
                for job in queues[tenant]:
                    position += 1
                    cap = max(1, int(trial_cap(tenant)))
                    result.queue[job.job_id] = {
                        "position": position,
                        "reason": f"tenant {tenant} already runs {tenant_trials.get(tenant, 0)} "
                        f"trials; its cap is {cap} (max_running_trials)",
                    }
            break
        job = queues[chosen].pop(0)
        cap = max(1, int(trial_cap(chosen)))
        need = _clamp(job.demand, capacity, cap)
        free_cpu, free_gpu = total_cpu - used_cpu, total_gpu - used_gpu
        fits = need.cpu <= free_cpu + _EPS and need.gpu <= free_gpu + _EPS
        if starting and jobs < max_jobs and fits:
            result.start.append(job.job_id)
        else:
            if starting:
                starting = False
                busy = f"cluster busy with {jobs} job{'s' if jobs != 1 else ''}"
                if jobs >= max_jobs:
                    blocked_reason = f"{busy}, the most this controller runs at once"
                else:
                    wants = [f"{_n(need.cpu)} CPUs ({_n(max(free_cpu, 0))} free)"]
                    if need.gpu > 0:
                        wants.append(f"{_n(need.gpu)} GPUs ({_n(max(free_gpu, 0))} free)")
                    blocked_reason = f"waiting for {' and '.join(wants)}; {busy}"
                reason = blocked_reason
            else:
                reason = f"{blocked_reason}; {position} job(s) ahead in the fair-share order"
            position += 1
            result.queue[job.job_id] = {"position": position, "reason": reason}
        # counted as started (really, or in the order the queue will move)
        used_cpu += need.cpu
        used_gpu += need.gpu
        jobs += 1
        tenant_trials[chosen] = tenant_trials.get(chosen, 0) + need.trials
        turn += 1
        served[chosen] = turn
    return result
