"""The API under 50 concurrent clients submitting and polling against one controller.

A real ``relaxtune serve --no-controller`` process on a temporary SQLite database, and one
real :class:`~service.controller.Controller` process claiming the jobs. The controller runs a
**trivial runner** (it reports progress, sleeps 20 ms and succeeds) instead of real searches:
hundreds of real searches do not fit in a test, and what is under test here is the API, the
store and the claim/finish protocol, not training.

Each client loops: submit a spec (JSON), poll its job until it ends, list its jobs; all
clients run for ``RELAXTUNE_LOAD_SECONDS`` (default 15 s in CI; the figures in
``docs/RELIABILITY.md`` use 60). Afterwards the database is counted: every 201 is exactly one
row, every row was run exactly once, none is lost or left unfinished.

Set ``RELAXTUNE_LOAD_REPORT=path.json`` to keep the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from _reliability_support import (
    free_port,
    kill_group,
    start_api,
    start_process,
    wait_for,
)

from service.store import JobStore

pytestmark = pytest.mark.slow

CLIENTS = 50
TENANTS = 10
SECONDS = float(os.environ.get("RELAXTUNE_LOAD_SECONDS", "15"))

SPEC = {
    "name": "load",
    "task": "nbody",
    "model": {"hidden": 16, "layers": 2},
    "search_space": "relax",
    "budget": {"trials": 2, "epochs": 2},
    "objective": {"metric": "val_mse", "mode": "min"},
}

_CONTROLLER = """
import sys, time
from pathlib import Path
from service.controller import Controller
from service.settings import Settings
from service.store import JobStore

db, artifacts, ran = sys.argv[1], sys.argv[2], Path(sys.argv[3])

def trivial_runner(spec, job_id, db_url, artifacts_dir, *, on_progress, **kw):
    # stands in for a real search: progress, a short pause, success
    with ran.open("a") as f:
        f.write(job_id + "\\n")
    on_progress({"complete": 0, "pruned": 0, "failed": 0, "running": 1,
                 "total": spec.budget.trials, "best_value": None})
    time.sleep(0.02)
    on_progress({"complete": spec.budget.trials, "pruned": 0, "failed": 0, "running": 0,
                 "total": spec.budget.trials, "best_value": 0.5})
    return {"status": "succeeded", "best": {"trial": 0, "value": 0.5}}

store = JobStore(db)
settings = Settings(db=db, artifacts=Path(artifacts), heartbeat_s=5)
Controller(store, settings, runner=trivial_runner, worker_id="load").run_forever(poll_s=0.05)
"""


async def client_loop(
    base: str, token: str, deadline: float, stats: dict[str, Any], submitted: list[str]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:

        async def request(kind: str, method: str, path: str, **kw: Any) -> httpx.Response | None:
            start = time.perf_counter()
            try:
                response = await client.request(method, path, **kw)
            except httpx.HTTPError as exc:
                stats["errors"].append(f"{kind}: {type(exc).__name__}: {exc}")
                return None
            stats["latency"][kind].append(time.perf_counter() - start)
            stats["codes"][response.status_code] += 1
            if response.status_code >= 400:
                stats["errors"].append(f"{kind}: {response.status_code} {response.text[:200]}")
                return None
            return response

        while time.monotonic() < deadline:
            created = await request("submit", "POST", "/v1/jobs", json=SPEC)
            if created is None:
                await asyncio.sleep(0.2)
                continue
            job_id = created.json()["id"]
            submitted.append(job_id)
            statuses = ["queued"]
            while time.monotonic() < deadline + 20:  # let the last job finish
                await asyncio.sleep(0.1)
                polled = await request("poll", "GET", f"/v1/jobs/{job_id}")
                if polled is None:
                    continue
                job = polled.json()
                if job["status"] != statuses[-1]:
                    statuses.append(job["status"])
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    break
            order = ["queued", "running", "succeeded"]
            if [s for s in statuses if s in order] != [s for s in order if s in statuses]:
                stats["errors"].append(f"{job_id}: status went backwards: {statuses}")
            stats["final"][statuses[-1]] += 1
            await request("list", "GET", "/v1/jobs", params={"limit": 20})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def test_fifty_clients_submit_and_poll_without_errors_or_lost_jobs(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(db)
    store.upgrade()
    tokens = [store.create_token(f"client{i}", tenant=f"tenant{i % TENANTS}") for i in range(50)]
    port = free_port()
    api = start_api(
        db,
        tmp_path / "artifacts",
        port,
        tmp_path / "api.log",
        RELAXTUNE_MAX_CONCURRENT_JOBS="1000",
    )
    ran = tmp_path / "ran.txt"
    controller = start_process(
        [sys.executable, "-c", _CONTROLLER, db, str(tmp_path / "artifacts"), str(ran)],
        tmp_path / "controller.log",
    )
    stats: dict[str, Any] = {
        "latency": {"submit": [], "poll": [], "list": []},
        "codes": Counter(),
        "errors": [],
        "final": Counter(),
    }
    submitted: list[str] = []
    try:
        start = time.monotonic()
        deadline = start + SECONDS

        async def main() -> None:
            base = f"http://127.0.0.1:{port}"
            await asyncio.gather(
                *(client_loop(base, tokens[i], deadline, stats, submitted) for i in range(CLIENTS))
            )

        asyncio.run(main())
        elapsed = time.monotonic() - start
        assert controller.poll() is None, (tmp_path / "controller.log").read_text()[-3000:]

        def drained() -> bool:
            return not store.list_jobs(status="queued") and not store.list_jobs(status="running")

        wait_for(drained, 60, "the queue to drain")
    finally:
        kill_group(controller)
        kill_group(api)

    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, status FROM relaxtune_jobs")).all()
    store.close()
    runs = Counter(ran.read_text().split())
    latencies = [v for values in stats["latency"].values() for v in values]
    report = {
        "clients": CLIENTS,
        "tenants": TENANTS,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "errors": len(stats["errors"]),
        "status_codes": dict(stats["codes"]),
        "p50_ms": {
            k: round(1000 * statistics.median(v), 1) for k, v in stats["latency"].items() if v
        },
        "p99_ms": {k: round(1000 * percentile(v, 0.99), 1) for k, v in stats["latency"].items()},
        "p50_ms_all": round(1000 * statistics.median(latencies), 1),
        "p99_ms_all": round(1000 * percentile(latencies, 0.99), 1),
        "jobs_submitted": len(submitted),
        "jobs_in_db": len(rows),
        "jobs_run": sum(runs.values()),
        "jobs_run_twice": sum(1 for n in runs.values() if n > 1),
        "final_statuses_seen_by_clients": dict(stats["final"]),
    }
    print("\nload:", json.dumps(report))
    if os.environ.get("RELAXTUNE_LOAD_REPORT"):
        Path(os.environ["RELAXTUNE_LOAD_REPORT"]).write_text(json.dumps(report, indent=2) + "\n")
    assert not stats["errors"], stats["errors"][:10]
    assert len(submitted) == len(set(submitted)) and len(submitted) >= CLIENTS
    assert {r.id for r in rows} == set(submitted), "lost or extra job rows"
    assert all(r.status == "succeeded" for r in rows), Counter(r.status for r in rows)
    assert set(runs) == set(submitted) and max(runs.values()) == 1, "a job ran twice or never"
