"""Scale mode on PostgreSQL: a real search writes every trial, and two controllers sharing
one database never run a job twice.

Each module run creates its own database on the server named by ``RELAXTUNE_TEST_PG_URL``
(default: the local test server) and drops it afterwards. An unreachable server skips these
tests, except under ``RELAXTUNE_TEST_REQUIRE_PG=1`` (``make test``, CI), where they fail.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search_spaces import parse_spec
from service.controller import Controller
from service.settings import Settings
from service.store import JobStore

pytestmark = pytest.mark.postgres


# Four trials at once on two cores (half a CPU each): the driver records reports of several
# running trials into PostgreSQL concurrently; ASHA prunes some, so PRUNED is written too.
SEARCH = {
    "name": "pg-search",
    "task": "rotated_mnist",
    "model": {"group": "C4", "width": 4, "depth": 2, "head_hidden": 16},
    "data": {"train_size": 128, "val_size": 64, "test_size": 64},
    "search_space": "relax",
    "budget": {"trials": 4, "epochs": 2, "max_concurrent": 4},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "resources": {"cpu": 0.5, "gpu": 0},
    "scheduler": "asha",
    "asha": {"grace_period": 1, "reduction_factor": 2},
    "seed": 5,
}
JOB_SPEC = {
    "name": "tiny",
    "task": "rotated_mnist",
    "model": {"group": "C4"},
    "search_space": "relax",
    "budget": {"trials": 2, "epochs": 1},
    "objective": {"metric": "val_accuracy", "mode": "max"},
}


@pytest.fixture(scope="module")
def pg_url(pg_databases: Any) -> Iterator[str]:
    """A fresh, upgraded database for this module; dropped afterwards."""
    with pg_databases("relaxtune_scale") as url:
        store = JobStore(url)
        store.upgrade()
        store.close()
        yield url


def test_unreachable_server_fails_when_required(
    pg_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make test`` must not pass by skipping the PostgreSQL half."""
    dead = "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2"
    monkeypatch.setenv("RELAXTUNE_TEST_REQUIRE_PG", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_PG"):
        pg_engine(dead)
    monkeypatch.delenv("RELAXTUNE_TEST_REQUIRE_PG")
    with pytest.raises(pytest.skip.Exception):
        pg_engine(dead)


@pytest.mark.slow
def test_search_on_postgres_writes_every_trial(pg_url: str, tmp_path: Path) -> None:
    import ray

    from service.artifacts import study_name
    from service.search import run_search

    store = JobStore(pg_url)
    # claimed like `relaxtune run` does, so no controller of another test picks it up
    job = store.claim(store.create_job("alice", SEARCH, SEARCH["name"]).id, "pytest")
    if ray.is_initialized():  # a Ray left by another module would not have our CPUs
        ray.shutdown()
    # "local": a Ray of its own, never another test's (or a benchmark's) on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_search(parse_spec(SEARCH), job.id, pg_url, tmp_path / "art")
    finally:
        ray.shutdown()
    assert result["status"] == "succeeded"
    store.finish(job.id, "succeeded", best=result["best"])

    study = optuna.load_study(study_name=study_name(job.id), storage=store.optuna_storage())
    trials = study.get_trials()
    epochs = SEARCH["budget"]["epochs"]
    assert len(trials) == SEARCH["budget"]["trials"]
    states = Counter(t.state for t in trials)
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}, states
    assert states[TrialState.COMPLETE] >= 1
    # what Tune saw: the epochs each trial reported (result.json, one line per report)
    reported: dict[str, int] = {}
    for path in (tmp_path / "art/jobs" / job.id / "ray").glob("run-*/*/result.json"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            reported[row["trial_id"]] = max(reported.get(row["trial_id"], 0), row["done_epochs"])
    for t in trials:
        ray_id = t.user_attrs["ray_trial_id"]
        history = t.user_attrs.get("history", [])
        assert set(t.intermediate_values) == set(range(1, len(history) + 1))
        if t.state == TrialState.COMPLETE:
            assert len(history) == epochs == reported[ray_id]
        else:
            assert 1 <= reported[ray_id] < epochs
        # every reported epoch is stored, the one a pruned trial was stopped on included
        assert len(history) == reported[ray_id], (t.number, t.state, len(history))
    # the rows really are on the server (not a local fallback)
    with store.engine.connect() as conn:
        n = conn.execute(
            sa.text(
                "SELECT count(*) FROM trials JOIN studies USING (study_id) WHERE study_name = :s"
            ),
            {"s": study_name(job.id)},
        ).scalar_one()
    assert n == len(trials)
    assert result["best"]["value"] == max(t.value for t in trials if t.state == TrialState.COMPLETE)
    assert Path(result["best"]["checkpoint"], "model.safetensors").is_file()
    store.close()


def test_two_controllers_real_loop_fast_runner_never_run_a_job_twice(
    pg_url: str, tmp_path: Path
) -> None:
    """Two real ``Controller.run_forever`` loops (own stores, own connection pools) on one
    PostgreSQL database, with a fast runner in place of the search, while jobs keep being
    submitted: every job runs exactly once, by the controller recorded as its claimer."""
    submitter = JobStore(pg_url)
    ran: list[tuple[str, str]] = []
    lock = threading.Lock()

    def make_runner(worker: str):
        def runner(spec: Any, job_id: str, db_url: str, artifacts: Path, **kw: Any) -> dict:
            with lock:
                ran.append((worker, job_id))
            kw["on_progress"]({"complete": 1, "pruned": 0, "failed": 0, "running": 0})
            time.sleep(0.02)  # a claim window in which the other controller polls
            return {"status": "succeeded", "best": {"trial": 0, "value": 1.0, "by": worker}}

        return runner

    controllers, stores, threads = [], [], []
    for worker in ("ctl-a", "ctl-b"):
        store = JobStore(pg_url)
        settings = Settings(db=pg_url, artifacts=tmp_path / "art", heartbeat_s=0.05)
        controller = Controller(store, settings, runner=make_runner(worker), worker_id=worker)
        stores.append(store)
        controllers.append(controller)
        threads.append(threading.Thread(target=controller.run_forever, args=(0.01,)))
    ids = [submitter.create_job("alice", JOB_SPEC).id for _ in range(10)]
    for t in threads:
        t.start()
    try:
        ids += [submitter.create_job("bob", JOB_SPEC).id for _ in range(20)]
        deadline = time.monotonic() + 60
        while not all(submitter.get_job(i).finished for i in ids):
            assert time.monotonic() < deadline, "jobs still unfinished after 60 s"
            time.sleep(0.05)
    finally:
        for c in controllers:
            c.stop()
        for t in threads:
            t.join(timeout=30)
    runs = Counter(job for _, job in ran)
    assert sorted(runs) == sorted(ids) and set(runs.values()) == {1}, runs
    by_worker = Counter(worker for worker, _ in ran)
    print(f"\njobs run per controller: {dict(by_worker)}")
    assert set(by_worker) == {"ctl-a", "ctl-b"}, "both controllers took jobs"
    for worker, job_id in ran:
        job = submitter.get_job(job_id)
        assert job.status == "succeeded" and job.claimed_by == worker
        assert job.best["by"] == worker
    for s in [*stores, submitter]:
        s.close()
