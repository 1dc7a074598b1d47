"""More jobs than fit at once, from two tenants, on a multi-node Ray cluster.

``ray.cluster_utils.Cluster``: a head with no CPUs and two one-CPU worker nodes (the
``cluster`` fixture of ``tests/conftest.py``). One ``relaxtune controller --ray-address …`` (scale
mode: it joins the cluster, it starts no Ray of its own) schedules five jobs, each
``max_concurrent: 1`` with 1 CPU per trial, so two fit at once: tenant ``a`` submits three,
then tenant ``b`` two. Checked, from what the test polls while they run and from the jobs'
and trials' recorded times afterwards:

- never more jobs running (nor trials training) than the cluster's two CPUs allow, and two
  at once while work is queued;
- a queued job starts as soon as a running one ends;
- fair share: ``b``'s first job starts second, ahead of ``a``'s older ones, and whenever a
  job starts while the other tenant has one queued, its tenant runs no more jobs than the
  other (so the start order alternates between tenants while both have work queued);
- every job succeeds with exactly its budget of trials, each complete, run once (one Tune
  trial per Optuna trial, one result per epoch), none requeued, on the worker nodes only.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from _reliability_support import (
    kill_group,
    relaxtune_args,
    start_process,
    study_trials,
    tiny_spec,
    wait_for,
)
from optuna.trial import TrialState

from search_spaces import parse_spec
from service.store import Job, JobStore

pytestmark = pytest.mark.slow

CPUS = 2  # two worker nodes of one CPU each; the head has none
SPEC = tiny_spec(budget={"trials": 2, "epochs": 1, "max_concurrent": 1})
#: a queued job starts within this long of a running one ending (the controller polls every
#: 0.2 s; the ended job's driver still shuts its Ray connection down before it exits)
START_AFTER_FREE_S = 20.0


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals ``[start, end)`` open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = most = 0
    for _, step in events:  # at a tie an end (-1) sorts before a start (+1)
        open_now += step
        most = max(most, open_now)
    return most


def _ts(value: datetime | None) -> float:
    assert value is not None
    return value.timestamp()


def _tune_results(storage: Path, job_id: str) -> list[dict[str, Any]]:
    """Every epoch report Tune wrote for the job's runs on the shared storage path."""
    rows = []
    for path in storage.glob(f"run-{job_id}-*/*/result.json"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def test_queued_jobs_share_a_ray_cluster_fairly(cluster: Any, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    storage = tmp_path / "shared-ray"
    store = JobStore(db)
    store.upgrade()
    stored = parse_spec(SPEC).to_dict()
    # tenant a submits three jobs, then tenant b two: all queued before the controller starts
    jobs = [store.create_job("a", stored, f"a{i}") for i in (1, 2, 3)]
    jobs += [store.create_job("b", stored, f"b{i}") for i in (1, 2)]
    ids = [j.id for j in jobs]
    name = {j.id: j.name for j in jobs}

    argv = ["controller", "--db", db, "--artifacts", str(tmp_path / "art"), "--worker-id", "ctl"]
    argv += ["--ray-address", cluster.address, "--storage-path", str(storage)]
    argv += ["--poll", "0.2", "--log-level", "warning"]
    log = tmp_path / "controller.log"
    started_at = time.monotonic()
    proc = start_process(relaxtune_args(*argv), log)
    most_running = 0
    waiting_reasons: set[str] = set()
    capacities: set[float] = set()
    try:

        def all_finished() -> bool:
            nonlocal most_running
            assert proc.poll() is None, log.read_text()[-3000:]
            now = [store.get_job(i) for i in ids]
            running = [j for j in now if j.status == "running"]
            most_running = max(most_running, len(running))
            assert len(running) <= CPUS, [(name[j.id], j.status) for j in now]
            state = store.cluster_states().get("ctl")
            drivers = None if state is None else len(state["running"])
            if state is not None and not state.get("stopped"):
                capacities.add(state["capacity"]["CPU"])
                assert len(state["running"]) <= CPUS, state
                assert state["used"]["CPU"] <= state["capacity"]["CPU"], state
                if len(state["running"]) == CPUS:
                    waiting_reasons.update(q["reason"] for q in state["queue"].values())
            # and their drivers reaped: none is still exiting when the controller is stopped
            return all(j.finished for j in now) and drivers == 0

        wait_for(all_finished, 240, "all five jobs to finish", period=0.2)
    finally:
        kill_group(proc, signal.SIGTERM)
    wall = time.monotonic() - started_at
    final: dict[str, Job] = {i: store.get_job(i) for i in ids}
    for job in final.values():
        assert job.status == "succeeded", (job.name, job.error, log.read_text()[-3000:])

    # --- the controller scheduled the cluster it joined, not a Ray of its own ---------------
    assert capacities == {float(CPUS)}, capacities
    assert most_running == CPUS, f"never {CPUS} jobs running at once (most: {most_running})"
    assert any(
        r.startswith("waiting for 1 CPUs (0 free); cluster busy with 2 jobs")
        for r in waiting_reasons
    ), waiting_reasons

    # --- never more jobs (or trials) at once than the CPUs allow ---------------------------
    spans = {i: (_ts(j.started_at), _ts(j.finished_at)) for i, j in final.items()}
    assert _max_overlap(list(spans.values())) == CPUS, spans
    trials = {i: study_trials(db, i) for i in ids}
    trial_spans = [
        (_ts(t.datetime_start), _ts(t.datetime_complete)) for ts in trials.values() for t in ts
    ]
    assert _max_overlap(trial_spans) <= CPUS, trial_spans

    # --- jobs start as capacity frees -------------------------------------------------------
    order = sorted(ids, key=lambda i: spans[i][0])
    for k, job_id in enumerate(order[CPUS:], start=CPUS):
        start = spans[job_id][0]
        # the k-th start needs k - 1 earlier jobs ended: it took the slot of the last of them
        ended = sorted(end for i, (_, end) in spans.items() if end <= start)
        assert len(ended) >= k - CPUS + 1, (name[job_id], spans)
        gap = start - ended[k - CPUS]
        assert gap < START_AFTER_FREE_S, f"{name[job_id]} started {gap:.1f}s after a slot freed"

    # --- fair share: b is not starved by a's earlier submissions ----------------------------
    tenants = [final[i].tenant for i in order]
    assert tenants[:2] == ["a", "b"], [name[i] for i in order]
    for job_id in order:
        start, tenant = spans[job_id][0], final[job_id].tenant

        def running(t: str, at: float = start) -> int:
            return sum(1 for i, (s, e) in spans.items() if final[i].tenant == t and s < at < e)

        for other in {"a", "b"} - {tenant}:
            other_queued = any(final[i].tenant == other and spans[i][0] > start for i in ids)
            if other_queued:
                assert running(tenant) <= running(other), (
                    f"{name[job_id]} started while tenant {tenant} ran {running(tenant)} "
                    f"job(s) and tenant {other}, with a job queued, ran {running(other)}: "
                    f"order {[name[i] for i in order]}"
                )
    # within a tenant, oldest first
    for tenant in ("a", "b"):
        mine = [name[i] for i in order if final[i].tenant == tenant]
        assert mine == sorted(mine), mine

    # --- every trial complete, run once, on a worker node -----------------------------------
    workers = {n.node_id for n in cluster.worker_nodes}
    budget = SPEC["budget"]
    per_node: Counter[str] = Counter()
    for job_id, ts in trials.items():
        assert sorted(t.number for t in ts) == list(range(budget["trials"])), (name[job_id], ts)
        for t in ts:
            assert t.state == TrialState.COMPLETE, (name[job_id], t.number, t.state)
            assert t.user_attrs.get("requeued_from") is None, (name[job_id], t.number)
            epochs = [h["epoch"] for h in t.user_attrs["history"]]
            assert epochs == list(range(1, budget["epochs"] + 1)), (name[job_id], epochs)
        rows = _tune_results(storage, job_id)
        by_trial = Counter(r["trial_id"] for r in rows)
        assert len(by_trial) == budget["trials"], (name[job_id], by_trial)
        assert set(by_trial.values()) == {budget["epochs"]}, (name[job_id], by_trial)
        per_node.update(r["node_id"] for r in rows)
        assert final[job_id].progress["complete"] == budget["trials"], final[job_id].progress
    assert set(per_node) <= workers, (per_node, workers)
    assert cluster.head_node.node_id not in per_node
    store.close()
    print(
        f"\ncluster jobs: 5 jobs on {CPUS} CPUs in {wall:.1f}s; start order "
        f"{' '.join(name[i] for i in order)}; trials per node {sorted(per_node.values())}"
    )
    t0 = min(s for s, _ in spans.values())
    print(
        "job spans (s after the first start): "
        + ", ".join(f"{name[i]} {spans[i][0] - t0:.1f}-{spans[i][1] - t0:.1f}" for i in order)
    )
