"""What the scheduling controllers recorded (``relaxtune_cluster``, written by
``service.pool``), as the API shows it: the cluster's use and each queued job's place."""

from __future__ import annotations

from typing import Any

from service.store import JobStore, Principal

__all__ = ["FRESH_S", "cluster_view", "queue_info"]

#: a controller's record older than this is not shown (that controller is gone)
FRESH_S = 120.0

_NO_CONTROLLER = "no controller is scheduling jobs on this database (is one running?)"


def _states(store: JobStore) -> dict[str, dict[str, Any]]:
    return {
        worker: state
        for worker, state in store.cluster_states(max_age_s=FRESH_S).items()
        if not state.get("stopped")
    }


def queue_info(store: JobStore) -> dict[str, dict[str, Any]]:
    """``{job id: {"position": n, "reason": text}}`` of the queued jobs the controllers have
    placed in their order; ``{"*": {...}}`` alone when no controller is scheduling."""
    states = _states(store)
    if not states:
        return {"*": {"position": None, "reason": _NO_CONTROLLER}}
    out: dict[str, dict[str, Any]] = {}
    for state in states.values():
        for job_id, info in (state.get("queue") or {}).items():
            out.setdefault(job_id, info)
    return out


def cluster_view(store: JobStore, user: Principal) -> dict[str, Any]:
    """Capacity, use and running jobs per tenant, summed over the scheduling controllers.
    Another tenant's jobs are counted, never named (an admin sees tenant names)."""
    states = _states(store)
    capacity: dict[str, float] = {}
    used: dict[str, float] = {}
    tenants: dict[str, dict[str, Any]] = {}
    queued = 0
    for state in states.values():
        for key, value in (state.get("capacity") or {}).items():
            capacity[key] = capacity.get(key, 0.0) + float(value)
        for key, value in (state.get("used") or {}).items():
            used[key] = used.get(key, 0.0) + float(value)
        queued += len(state.get("queue") or {})
        for run in state.get("running") or []:
            entry = tenants.setdefault(
                run["tenant"], {"jobs": 0, "trials": 0, "cpu": 0.0, "gpu": 0.0, "job_ids": []}
            )
            entry["jobs"] += 1
            entry["trials"] += int(run.get("trials", 0))
            entry["cpu"] += float(run.get("cpu", 0.0))
            entry["gpu"] += float(run.get("gpu", 0.0))
            entry["job_ids"].append(run["job_id"])
    running = []
    others = 0
    for tenant in sorted(tenants):
        entry = tenants[tenant]
        mine = user.admin or tenant == user.tenant
        if not mine:
            others += 1
        running.append(
            {
                "tenant": tenant if mine else f"other tenant {others}",
                "jobs": entry["jobs"],
                "trials": entry["trials"],
                "cpu": entry["cpu"],
                "gpu": entry["gpu"],
                **({"job_ids": entry["job_ids"]} if mine else {}),
            }
        )
    return {
        "controllers": len(states),
        "capacity": capacity,
        "used": used,
        "running_jobs": sum(e["jobs"] for e in tenants.values()),
        "queued_jobs": queued,
        "tenants": running,
        **({} if states else {"note": _NO_CONTROLLER}),
    }
