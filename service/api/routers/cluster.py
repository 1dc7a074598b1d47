"""``/v1/cluster``: the cluster's capacity and use, as the scheduling controllers record it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api._cluster import cluster_view
from service.api._deps import CurrentUser, StoreDep

router = APIRouter(prefix="/v1/cluster", tags=["cluster"])


@router.get("", responses={401: {"description": "missing or invalid token"}})
def get_cluster(user: CurrentUser, store: StoreDep) -> dict[str, Any]:
    """Capacity (CPUs, GPUs), what the running jobs hold, and the running jobs per tenant.
    Other tenants are counted but not named, and their jobs are not listed (an admin sees
    every tenant)."""
    return cluster_view(store, user)
