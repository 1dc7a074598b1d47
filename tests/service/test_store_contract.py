"""The JobStore contract, run against every backend (SQLite file and PostgreSQL).

The PostgreSQL half uses a fresh database created for the test session and dropped after it,
on the server named by ``RELAXTUNE_TEST_PG_URL``. When the server is unreachable those tests
skip, unless ``RELAXTUNE_TEST_REQUIRE_PG=1`` (CI), where they fail.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service.errors import Conflict, LimitExceeded, NotFound, StoreError
from service.store import JOB_ID_PATTERN, JobStore, Principal

SPEC = {"name": "demo", "task": "rotated_mnist", "budget": {"trials": 4, "epochs": 2}}


@pytest.fixture(scope="session")
def pg_database_url(pg_databases: Any) -> Iterator[str]:
    """URL of a throwaway PostgreSQL database that lives for the test session."""
    with pg_databases() as url:
        store = JobStore(url)
        store.upgrade()
        store.close()
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An upgraded SQLite database, copied for each test (upgrading takes ~0.3 s)."""
    path = tmp_path_factory.mktemp("template") / "jobs.db"
    store = JobStore(f"sqlite:///{path}")
    store.upgrade()
    store.close()  # the last connection closing checkpoints the WAL into the file
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with an upgraded, empty schema: a fresh SQLite file or the session's PG
    database with its service tables emptied."""
    if request.param == "sqlite":
        path = tmp_path / "jobs.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_database_url")
    store = JobStore(url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM relaxtune_jobs"))
        conn.execute(sa.text("DELETE FROM relaxtune_tokens"))
    store.close()
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    s = JobStore(store_url)
    yield s
    s.close()


# --- jobs --------------------------------------------------------------------------------


def test_create_and_get_round_trip(store: JobStore) -> None:
    job = store.create_job("alice", SPEC, "demo")
    assert JOB_ID_PATTERN.fullmatch(job.id)
    got = store.get_job(job.id)
    assert got.spec == SPEC
    assert got.tenant == "alice" and got.name == "demo"
    assert got.status == "queued" and not got.cancel_requested
    assert got.progress["total"] == 4 and got.progress["complete"] == 0
    assert got.best is None and got.error is None and got.started_at is None
    assert got.created_at.tzinfo is not None


def test_job_ids_are_random_and_unique(store: JobStore) -> None:
    ids = [store.create_job("alice", SPEC).id for _ in range(30)]
    assert len(set(ids)) == 30
    assert all(JOB_ID_PATTERN.fullmatch(i) for i in ids)
    # Not sequential: consecutive ids share no long common prefix.
    assert len({i[:4] for i in ids}) > 20


@pytest.mark.parametrize(
    "bad_id", ["", "../../etc/passwd", "ABCDEF0123456789", "' OR 1=1 --", "0" * 17, "0" * 15]
)
def test_malformed_ids_are_not_found(store: JobStore, bad_id: str) -> None:
    with pytest.raises(NotFound):
        store.get_job(bad_id)
    with pytest.raises(NotFound):
        store.is_cancel_requested(bad_id)
    with pytest.raises(NotFound):
        store.claim(bad_id, "w")
    with pytest.raises(NotFound):
        store.heartbeat(bad_id)


def test_missing_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFound):
        store.get_job(secrets.token_hex(8))
    with pytest.raises(NotFound):
        store.update_progress(secrets.token_hex(8), {})


def test_tenant_filter(store: JobStore) -> None:
    a = store.create_job("alice", SPEC)
    b = store.create_job("bob", SPEC)
    assert store.get_job(a.id, tenant="alice").id == a.id
    with pytest.raises(NotFound):
        store.get_job(a.id, tenant="bob")
    with pytest.raises(NotFound):
        store.request_cancel(a.id, tenant="bob")
    assert store.get_job(a.id).status == "queued"  # bob's attempt changed nothing
    assert [j.id for j in store.list_jobs(tenant="bob")] == [b.id]
    assert {j.id for j in store.list_jobs()} == {a.id, b.id}


def test_list_jobs_newest_first(store: JobStore) -> None:
    ids = []
    for _ in range(3):
        ids.append(store.create_job("alice", SPEC).id)
        time.sleep(0.01)
    assert [j.id for j in store.list_jobs("alice")] == ids[::-1]
    assert len(store.list_jobs("alice", limit=2)) == 2


def test_claim_next_is_fifo_and_none_when_empty(store: JobStore) -> None:
    first = store.create_job("alice", SPEC)
    time.sleep(0.01)
    second = store.create_job("bob", SPEC)
    claimed = store.claim_next("w1")
    assert claimed is not None and claimed.id == first.id
    assert claimed.status == "running" and claimed.claimed_by == "w1"
    assert claimed.started_at is not None and claimed.heartbeat_at is not None
    again = store.claim_next("w2")
    assert again is not None and again.id == second.id
    assert store.claim_next("w1") is None


def test_cancelling_a_queued_job_cancels_it_at_once(store: JobStore) -> None:
    job = store.create_job("alice", SPEC)
    cancelled = store.request_cancel(job.id, "alice")
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert store.claim_next("w") is None


def test_cancelling_a_running_job_sets_the_flag(store: JobStore) -> None:
    job = store.create_job("alice", SPEC)
    store.claim_next("w")
    assert not store.is_cancel_requested(job.id)
    flagged = store.request_cancel(job.id, "alice")
    assert flagged.status == "running" and flagged.cancel_requested
    assert store.is_cancel_requested(job.id)
    store.finish(job.id, "cancelled")
    with pytest.raises(Conflict):
        store.request_cancel(job.id)


def test_progress_heartbeat_and_finish(store: JobStore) -> None:
    job = store.create_job("alice", SPEC)
    claimed = store.claim_next("w")
    assert claimed is not None
    progress = {
        "complete": 2,
        "pruned": 1,
        "failed": 0,
        "running": 1,
        "total": 4,
        "best_value": 0.93,
    }
    store.update_progress(job.id, progress)
    assert store.get_job(job.id).progress == progress
    before = store.get_job(job.id).heartbeat_at
    time.sleep(0.01)
    store.heartbeat(job.id)
    after = store.get_job(job.id).heartbeat_at
    assert before is not None and after is not None and after > before
    best = {"number": 3, "value": 0.95, "params": {"optim.lr": 0.01}}
    done = store.finish(job.id, "succeeded", best=best)
    assert done.status == "succeeded" and done.best == best and done.finished_at is not None
    assert done.finished


def test_finish_failed_records_error_and_rejects_bad_status(store: JobStore) -> None:
    job = store.create_job("alice", SPEC)
    store.claim_next("w")
    with pytest.raises(ValueError):
        store.finish(job.id, "running")
    failed = store.finish(job.id, "failed", error="RuntimeError: boom")
    assert failed.status == "failed" and failed.error == "RuntimeError: boom"


def test_claim_specific_job(store: JobStore) -> None:
    job = store.create_job("local", SPEC)
    claimed = store.claim(job.id, "cli")
    assert claimed.status == "running" and claimed.claimed_by == "cli"
    with pytest.raises(Conflict):
        store.claim(job.id, "other")
    taken = store.claim(job.id, "other", allow_running=True)
    assert taken.claimed_by == "other"
    store.finish(job.id, "failed", error="interrupted")
    assert store.claim(job.id, "cli").status == "running"  # a failed job can be resumed
    store.finish(job.id, "succeeded")
    with pytest.raises(Conflict):
        store.claim(job.id, "cli", allow_running=True)
    with pytest.raises(NotFound):
        store.claim(secrets.token_hex(8), "cli")


@pytest.mark.parametrize("ended", ["succeeded", "failed", "cancelled"])
def test_terminal_states_are_final(store: JobStore, ended: str) -> None:
    job = store.create_job("alice", SPEC)
    store.claim_next("w")
    first = store.finish(
        job.id, ended, best={"trial": 1}, error="why" if ended == "failed" else None
    )
    for status in ("succeeded", "failed", "cancelled"):
        with pytest.raises(Conflict, match=f"already ended {ended}, which is final"):
            store.finish(job.id, status, best={"trial": 2}, error="late")
    with pytest.raises(Conflict):
        store.request_cancel(job.id)
    if ended != "failed":  # (a failed job can be resumed: test_claim_specific_job)
        with pytest.raises(Conflict):
            store.claim(job.id, "w", allow_running=True)
    assert store.get_job(job.id) == first  # nothing changed, not even finished_at


def test_explicit_actions_that_reopen_a_finished_job(store: JobStore) -> None:
    failed = store.create_job("alice", SPEC)
    store.claim_next("w")
    store.finish(failed.id, "failed", error="OSError: No space left on device")
    # `relaxtune export` of a failed job: the one way failed becomes succeeded
    exported = store.finish(
        failed.id, "succeeded", best={"trial": 0}, from_statuses=("failed", "succeeded")
    )
    assert exported.status == "succeeded" and exported.error is None
    # the gain report: a succeeded job goes back to the queue for its report
    reopened = store.request_report(failed.id, 2)
    assert reopened.status == "queued" and reopened.spec["report"] == {"seeds": 2}
    cancelled = store.create_job("alice", SPEC)
    store.request_cancel(cancelled.id)
    with pytest.raises(Conflict, match="already ended cancelled"):
        store.finish(cancelled.id, "succeeded", from_statuses=("failed", "succeeded"))
    assert store.get_job(cancelled.id).status == "cancelled"


def test_a_driver_that_lost_its_job_cannot_record_its_end(store: JobStore) -> None:
    job = store.create_job("alice", SPEC)
    store.claim_next("frozen")
    assert store.requeue_running(stale_after_s=0) == [job.id]  # its heartbeat went stale
    assert store.claim_next("other").id == job.id  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="no longer running under frozen"):
        store.heartbeat(job.id, "frozen")
    with pytest.raises(Conflict, match="no longer running under frozen"):
        store.update_progress(job.id, {"complete": 9}, "frozen")
    with pytest.raises(Conflict, match=r"held by another driver \(other\)"):
        store.finish(job.id, "succeeded", best={"trial": 9}, worker_id="frozen")
    row = store.get_job(job.id)
    assert row.status == "running" and row.claimed_by == "other" and row.best is None
    store.heartbeat(job.id, "other")
    assert store.finish(job.id, "succeeded", worker_id="other").status == "succeeded"


def test_resuming_a_job_with_a_pending_cancel_is_refused(store: JobStore) -> None:
    job = store.create_job("alice", SPEC)
    store.claim_next("w")
    store.request_cancel(job.id, "alice")
    with pytest.raises(Conflict) as refused:
        store.claim(job.id, "cli", allow_running=True)
    message = str(refused.value)
    assert "pending cancel" in message and "\n" not in message
    row = store.get_job(job.id)
    assert row.claimed_by == "w" and row.cancel_requested and row.status == "running"
    # the stopping driver still records the cancel
    assert store.finish(job.id, "cancelled", worker_id="w").status == "cancelled"


def test_requeue_running_of_one_worker(store: JobStore) -> None:
    mine = store.create_job("alice", SPEC)
    time.sleep(0.01)
    other = store.create_job("alice", SPEC)
    time.sleep(0.01)
    doomed = store.create_job("alice", SPEC)
    assert store.claim_next("me").id == mine.id  # type: ignore[union-attr]
    assert store.claim_next("you").id == other.id  # type: ignore[union-attr]
    assert store.claim_next("me").id == doomed.id  # type: ignore[union-attr]
    store.request_cancel(doomed.id)
    assert store.requeue_running("me") == [mine.id]
    requeued = store.get_job(mine.id)
    assert requeued.status == "queued" and requeued.claimed_by is None
    assert store.get_job(other.id).status == "running"
    assert store.get_job(doomed.id).status == "cancelled"  # cancel wins over resume
    assert store.claim_next("me").id == mine.id  # type: ignore[union-attr]


def test_requeue_stale_jobs_only(store: JobStore) -> None:
    job = store.create_job("alice", SPEC)
    store.claim_next("w")
    assert store.requeue_running(stale_after_s=60) == []
    stale = store.get_job(job.id).heartbeat_at - timedelta(minutes=5)  # type: ignore[operator]
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE relaxtune_jobs SET heartbeat_at = :t WHERE id = :i"),
            {"t": stale, "i": job.id},
        )
    assert store.requeue_running(stale_after_s=60) == [job.id]


def test_active_job_limit(store: JobStore) -> None:
    store.create_job("alice", SPEC, max_active=2)
    store.create_job("alice", SPEC, max_active=2)
    with pytest.raises(LimitExceeded, match="limit 2"):
        store.create_job("alice", SPEC, max_active=2)
    assert store.count_active_jobs("alice") == 2
    store.create_job("bob", SPEC, max_active=2)  # limits are per tenant
    done = store.claim_next("w")
    assert done is not None
    store.finish(done.id, "succeeded")
    assert store.count_active_jobs("alice") == 1
    store.create_job("alice", SPEC, max_active=2)


def _claim_all(url: str, worker: str, out: list[str]) -> None:
    store = JobStore(url)
    try:
        while (job := store.claim_next(worker)) is not None:
            out.append(job.id)
    finally:
        store.close()


def test_concurrent_claims_from_threads_never_claim_twice(store_url: str) -> None:
    store = JobStore(store_url)
    ids = {store.create_job("alice", SPEC).id for _ in range(24)}
    results: list[list[str]] = [[] for _ in range(4)]
    threads = [
        threading.Thread(target=_claim_all, args=(store_url, f"w{i}", results[i])) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    claimed = [i for r in results for i in r]
    assert sorted(claimed) == sorted(ids)  # every job exactly once
    assert {j.status for j in store.list_jobs()} == {"running"}
    store.close()


def _claim_all_in_process(url: str, worker: str, queue: multiprocessing.Queue) -> None:
    out: list[str] = []
    _claim_all(url, worker, out)
    queue.put(out)


def test_concurrent_claims_from_processes_never_claim_twice(store_url: str) -> None:
    store = JobStore(store_url)
    ids = {store.create_job("alice", SPEC).id for _ in range(12)}
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_claim_all_in_process, args=(store_url, f"p{i}", queue))
        for i in range(3)
    ]
    for p in procs:
        p.start()
    claimed = [i for _ in procs for i in queue.get(timeout=60)]
    for p in procs:
        p.join(timeout=30)
    assert sorted(claimed) == sorted(ids)
    store.close()


# --- tokens ------------------------------------------------------------------------------


def test_token_is_stored_hashed(store: JobStore) -> None:
    token = store.create_token("alice")
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM relaxtune_tokens")).mappings().all()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0].values())
    assert token not in stored
    assert token.split("_", 2)[2] not in stored
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()


def test_authenticate_and_revoke(store: JobStore) -> None:
    token = store.create_token("alice")
    admin = store.create_token("root", tenant="ops", admin=True)
    assert store.authenticate(token) == Principal(name="alice", tenant="alice", admin=False)
    assert store.authenticate(admin) == Principal(name="root", tenant="ops", admin=True)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (tampered, "", "rt_", "Bearer " + token, token + "x", "rt_zz_zz"):
        assert store.authenticate(bad) is None
    store.revoke_token("alice")
    assert store.authenticate(token) is None
    assert store.authenticate(admin) is not None
    with pytest.raises(NotFound):
        store.revoke_token("alice")
    with pytest.raises(NotFound):
        store.revoke_token("nobody")


def test_token_names_are_unique_and_validated(store: JobStore) -> None:
    store.create_token("alice")
    with pytest.raises(Conflict, match="already exists"):
        store.create_token("alice")
    with pytest.raises(ValueError):
        store.create_token("bad name; drop table")
    assert [t["name"] for t in store.list_tokens()] == ["alice"]


# --- schema ------------------------------------------------------------------------------


def test_upgrade_is_idempotent_and_creates_optuna_schema(store: JobStore) -> None:
    import optuna

    store.upgrade()
    job = store.create_job("alice", SPEC)
    storage = store.optuna_storage()
    study = optuna.create_study(study_name=f"job-{job.id}", storage=storage)
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    assert storage.get_study_id_from_name(f"job-{job.id}") >= 0
    assert len(storage.get_all_trials(study._study_id)) == 1


def test_store_errors_are_wrapped_with_context(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'jobs.db'}")
    with pytest.raises(StoreError, match="listing jobs"):
        store.list_jobs()
    fresh = JobStore(f"sqlite:///{tmp_path / 'fresh.db'}")  # no upgrade(): no tables
    with pytest.raises(StoreError, match="reading a job"):
        fresh.get_job(secrets.token_hex(8))
