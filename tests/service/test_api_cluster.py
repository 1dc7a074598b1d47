"""``GET /v1/cluster`` and a queued job's place in the queue, from what a scheduling
controller recorded in the store (``relaxtune_cluster``). No Ray: the record is written
here as ``service.pool`` writes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.cli._views import queue_text
from service.settings import Settings
from service.store import JobStore

SPEC = {
    "name": "tiny",
    "task": "rotated_mnist",
    "model": {"group": "C4"},
    "search_space": "relax",
    "budget": {"trials": 2, "epochs": 1},
    "objective": {"metric": "val_accuracy", "mode": "max"},
}


@pytest.fixture
def client(store: JobStore, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(db=store.url, artifacts=tmp_path / "artifacts")
    with TestClient(create_app(settings, store)) as c:
        yield c


@pytest.fixture
def headers(store: JobStore) -> dict[str, dict[str, str]]:
    return {
        name: {"Authorization": f"Bearer {store.create_token(name, admin=name == 'root')}"}
        for name in ("alice", "bob", "root")
    }


def _record(store: JobStore, running: dict[str, str], queue: dict[str, dict]) -> None:
    store.record_cluster(
        "ctl",
        {
            "capacity": {"CPU": 2.0, "GPU": 0.0},
            "used": {"CPU": 2.0, "GPU": 0.0},
            "max_running_jobs": 4,
            "running": [
                {"job_id": job_id, "tenant": tenant, "trials": 1, "cpu": 1.0, "gpu": 0.0}
                for job_id, tenant in running.items()
            ],
            "queue": queue,
        },
    )


def test_cluster_shows_use_per_tenant_without_other_tenants_jobs(
    client: TestClient, store: JobStore, headers: dict[str, dict[str, str]]
) -> None:
    assert client.get("/v1/cluster").status_code == 401
    empty = client.get("/v1/cluster", headers=headers["alice"]).json()
    assert empty["controllers"] == 0 and "no controller" in empty["note"]

    a = store.create_job("alice", SPEC, "a")
    b = store.create_job("bob", SPEC, "b")
    waiting = store.create_job("alice", SPEC, "w")
    store.claim(a.id, "ctl")
    store.claim(b.id, "ctl")
    reason = "waiting for 1 CPUs (0 free); cluster busy with 2 jobs"
    _record(store, {a.id: "alice", b.id: "bob"}, {waiting.id: {"position": 1, "reason": reason}})

    seen = client.get("/v1/cluster", headers=headers["alice"]).json()
    assert seen["capacity"]["CPU"] == 2 and seen["used"]["CPU"] == 2
    assert seen["running_jobs"] == 2 and seen["queued_jobs"] == 1
    mine, other = seen["tenants"]
    assert mine == {
        "tenant": "alice",
        "jobs": 1,
        "trials": 1,
        "cpu": 1.0,
        "gpu": 0.0,
        "job_ids": [a.id],
    }
    assert other["tenant"] == "other tenant 1" and other["jobs"] == 1
    assert "job_ids" not in other and b.id not in str(seen) and "bob" not in str(seen)
    admin = client.get("/v1/cluster", headers=headers["root"]).json()
    assert [t["tenant"] for t in admin["tenants"]] == ["alice", "bob"]

    # the queued job says where it stands and why, in the job and in the list
    job = client.get(f"/v1/jobs/{waiting.id}", headers=headers["alice"]).json()
    assert job["queue"] == {"position": 1, "reason": reason}
    listed = {j["id"]: j for j in client.get("/v1/jobs", headers=headers["alice"]).json()["data"]}
    assert listed[waiting.id]["queue"]["position"] == 1
    assert listed[a.id]["queue"] is None  # not queued
    assert queue_text(job["queue"]) == f"#1: {reason}"

    # a stopped controller's record is not shown
    store.record_cluster(
        "ctl", {"capacity": {}, "used": {}, "running": [], "queue": {}, "stopped": 1}
    )
    job = client.get(f"/v1/jobs/{waiting.id}", headers=headers["alice"]).json()
    assert job["queue"]["position"] is None and "no controller" in job["queue"]["reason"]
