"""The API process (``relaxtune serve --no-controller``) SIGKILLed and restarted while jobs
run under a controller: no job is lost, and what clients see stays consistent (a job's status
never goes backwards, its progress never decreases, the list keeps every job).

The controller runs a **trivial runner** that reports progress for ~2 s per job (what is
under test is the API process and the store, not training).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from _reliability_support import free_port, kill_group, start_api, wait_for

from service.controller import Controller
from service.settings import Settings
from service.store import JobStore

pytestmark = pytest.mark.slow

SPEC = {
    "name": "restart",
    "task": "nbody",
    "model": {"hidden": 16, "layers": 2},
    "search_space": "relax",
    "budget": {"trials": 10, "epochs": 2},
    "objective": {"metric": "val_mse", "mode": "min"},
}
ORDER = {"queued": 0, "running": 1, "succeeded": 2}


def paced_runner(spec: Any, job_id: str, db_url: str, artifacts: Path, **kw: Any) -> dict:
    total = spec.budget.trials
    for done in range(total + 1):
        kw["on_progress"](
            {
                "complete": done,
                "pruned": 0,
                "failed": 0,
                "running": int(done < total),
                "total": total,
                "best_value": None if done == 0 else 1.0 / done,
            }
        )
        time.sleep(0.2)
    return {"status": "succeeded", "best": {"trial": 0, "value": 1.0 / total}}


def test_api_restart_while_jobs_run_loses_nothing(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(db)
    store.upgrade()
    token = store.create_token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "api.log"
    env = {"RELAXTUNE_MAX_CONCURRENT_JOBS": "100"}
    api = start_api(db, tmp_path / "art", port, log, **env)
    controller = Controller(
        store, Settings(db=db, artifacts=tmp_path / "art"), runner=paced_runner, worker_id="c"
    )
    worker = threading.Thread(target=controller.run_forever, kwargs={"poll_s": 0.1}, daemon=True)
    worker.start()
    views: dict[str, list[tuple[int, int]]] = {}
    unavailable = 0
    try:
        ids = []
        for _ in range(4):
            response = httpx.post(f"{base}/v1/jobs", json=SPEC, headers=headers, timeout=10)
            assert response.status_code == 201
            ids.append(response.json()["id"])

        def poll_all() -> bool:
            nonlocal unavailable
            finished = True
            for job_id in ids:
                try:
                    r = httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers, timeout=5)
                except httpx.TransportError:
                    unavailable += 1
                    return False
                assert r.status_code == 200, r.text
                job = r.json()
                views.setdefault(job_id, []).append(
                    (ORDER[job["status"]], job["progress"]["complete"])
                )
                finished &= job["status"] == "succeeded"
            return finished

        wait_for(lambda: store.get_job(ids[0]).progress["complete"] >= 3, 30, "a running job")
        poll_all()
        kill_group(api)  # SIGKILL mid-run
        killed_at = time.monotonic()
        assert not poll_all() and unavailable  # really down
        api = start_api(db, tmp_path / "art", port, log, **env)
        restart_s = time.monotonic() - killed_at
        wait_for(poll_all, 60, "every job to succeed", period=0.2)
        listed = httpx.get(f"{base}/v1/jobs", headers=headers, timeout=5).json()
    finally:
        controller.stop()
        worker.join(timeout=30)
        kill_group(api)
    assert sorted(j["id"] for j in listed["data"]) == sorted(ids)
    for job_id, seen in views.items():
        assert seen == sorted(seen), (job_id, seen)  # never backwards, status or progress
        assert seen[-1] == (ORDER["succeeded"], SPEC["budget"]["trials"])
    store.close()
    print(
        f"\nfault api-sigkill: API serving again {restart_s:.1f}s after the kill; "
        f"{len(ids)} jobs, all succeeded, {sum(map(len, views.values()))} polls consistent"
    )
