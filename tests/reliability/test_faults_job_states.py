"""Tenant jobs that cannot run, that fail, and that race with a cancel or a second driver,
against real processes: the HTTP API (``relaxtune serve --no-controller``) with a tenant's
token, ``relaxtune controller`` and ``relaxtune run --job`` processes with their own Ray.

- resources no node can offer: refused at submit (the API's Ray is this machine), and a job
  stored anyway fails within seconds with the reason;
- a failed job's ``error`` is its first failed trial's reason, shown by the API, the
  dashboards and ``relaxtune status``;
- a cancel while the driver exports the best (every trial done): too late, the job ends
  ``succeeded`` with its checkpoint, and ``relaxtune export`` keeps it so;
- a cancel while ``relaxtune run --job`` resumes the job: the job ends ``cancelled`` and stays
  so; resuming it while the cancel is pending, or after, is refused in one line;
- a controller frozen (SIGSTOP) while its job is cancelled and a second controller records
  the cancel: when it wakes, it stops, exports nothing and records nothing.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from _reliability_support import (
    free_port,
    kill_group,
    relaxtune_args,
    start_api,
    start_process,
    tiny_spec,
    wait_for,
)
from optuna.trial import TrialState

from search_spaces import parse_spec
from service import cli
from service.artifacts import study_name
from service.quotas import set_overrides
from service.store import TERMINAL_STATUSES, JobStore

pytestmark = pytest.mark.slow

#: trials of a few seconds each (400 systems), so a cancel or a freeze lands mid-trial
SLOW = {"data": {"train_size": 400, "val_size": 50, "test_size": 50}, "strategy": "joint"}


@pytest.fixture
def env(tmp_path: Path) -> Any:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(db)
    store.upgrade()
    token = store.create_token("alice")
    port = free_port()
    artifacts = tmp_path / "art"
    api = start_api(db, artifacts, port, tmp_path / "api.log")
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    procs: list[Any] = []
    try:
        yield {
            "db": db,
            "store": store,
            "token": token,
            "url": f"http://127.0.0.1:{port}",
            "client": client,
            "artifacts": artifacts,
            "tmp": tmp_path,
            "procs": procs,
        }
    finally:
        client.close()
        for proc in procs:
            kill_group(proc)
        kill_group(api)
        store.close()


def _controller(env: dict[str, Any], worker: str, **extra_env: str) -> Any:
    argv = ["controller", "--db", env["db"], "--artifacts", str(env["artifacts"])]
    argv += ["--worker-id", worker, "--poll", "0.2", "--log-level", "info"]
    proc = start_process(relaxtune_args(*argv), env["tmp"] / f"{worker}.log", **extra_env)
    env["procs"].append(proc)
    return proc


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def _trials(db: str, job_id: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=study_name(job_id), storage=db).get_trials()
    except KeyError:
        return []


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_jobs_that_cannot_run_say_why_and_a_cancel_during_export_changes_nothing(
    env: dict[str, Any],
) -> None:
    client, store, db = env["client"], env["store"], env["db"]
    # resources no node of this server's Ray can offer: refused at submit, nothing written
    # (alice's per-trial CPU quota raised, so that the placement check is what answers)
    set_overrides(store, "alice", {"max_trial_cpu": 1024})
    before = _files(env["tmp"])
    response = client.post("/v1/jobs", json=tiny_spec(name="huge", resources={"cpu": 512}))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    cpus = len(os.sched_getaffinity(0))
    assert detail["field"] == "resources.cpu"
    assert detail["message"] == (
        f"each trial asks for 512 CPUs but the largest node of this server's Ray (one machine) "
        f"has {cpus}: no trial could ever start (use resources.cpu <= {cpus})"
    )
    assert store.list_jobs(None) == [] and _files(env["tmp"]) == before

    # a job whose only trial diverges: the job's error is the trial's reason, everywhere
    spec = tiny_spec(
        name="nan",
        search_space={"optim.lr": 1e12, "relax.schedule": "none"},
        budget={"trials": 1, "epochs": 2, "max_concurrent": 1},
        strategy="joint",
    )
    created = client.post("/v1/jobs", json=spec)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    controller = _controller(env, "ctl-a")
    job = wait_for(
        lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["status"] in TERMINAL_STATUSES and j,
        240,
        "the diverging job to end",
    )
    assert job["status"] == "failed"
    assert job["error"].startswith("trial 0: diverged: loss became nan at epoch 1"), job["error"]
    assert job["error"].endswith("no trial completed (1 failed, 0 pruned)")
    shown = job["error"].replace("'", "&#39;")  # autoescaped
    page = client.get(f"/v1/jobs/{job_id}/dashboard")
    assert page.status_code == 200 and f"error: {shown}" in page.text
    listing = client.get("/v1/dashboard")
    assert (
        listing.status_code == 200 and "error: trial 0: diverged: loss became nan" in listing.text
    )
    code, out, _ = _cli("status", job_id, "--url", env["url"], "--token", env["token"])
    assert code == 0 and "trial 0: diverged: loss became nan at epoch 1" in out

    # resources the cluster cannot offer, stored without the API's check (a job queued
    # through a remote-cluster API, or a spec stored earlier): fails within seconds
    huge = parse_spec(tiny_spec(name="huge", resources={"cpu": 512}))
    queued = store.create_job("alice", huge.to_dict(), "huge")
    row = wait_for(
        lambda: (j := store.get_job(queued.id)).finished and j, 60, "the unplaceable job to end"
    )
    assert controller.poll() is None
    assert row.status == "failed" and row.error.startswith(
        "resources.cpu: each trial asks for 512 CPUs but the largest node of the Ray cluster has"
    ), row.error
    seconds = (row.finished_at - row.started_at).total_seconds()
    print(f"unplaceable job: claimed -> failed in {seconds:.2f} s")
    assert seconds < 10 and _trials(db, queued.id) == []

    # a cancel while the driver exports the best (every trial finished, the row still
    # running): too late to stop anything; the job ends succeeded with a verified checkpoint
    # and stays so, and the explicit re-export keeps it succeeded
    spec = tiny_spec(name="late", budget={"trials": 1, "epochs": 2, "max_concurrent": 1})
    late = client.post("/v1/jobs", json=spec).json()["id"]

    def searched() -> bool:
        trials = _trials(db, late)
        return bool(trials) and all(t.state == TrialState.COMPLETE for t in trials)

    wait_for(searched, 240, "the last trial to complete", period=0.02)
    cancel = client.delete(f"/v1/jobs/{late}")
    print(f"cancel during export: {cancel.status_code} (202: the export was still running)")
    assert cancel.status_code in (202, 409), cancel.text
    row = wait_for(lambda: (j := store.get_job(late)).finished and j, 120, "the export")
    assert row.status == "succeeded" and row.error is None
    assert row.cancel_requested == (cancel.status_code == 202)
    best = client.get(f"/v1/jobs/{late}/best")
    assert best.status_code == 200 and best.json()["certificate"]["passed"]
    time.sleep(1)
    assert store.get_job(late) == row
    code, _, err = _cli("export", late, "--db", db, "--artifacts", str(env["artifacts"]))
    assert code == 0, err
    assert store.get_job(late).status == "succeeded"


def test_cancel_while_resuming_ends_cancelled_and_stays(env: dict[str, Any]) -> None:
    client, store, db = env["client"], env["store"], env["db"]
    spec = tiny_spec(name="resume", budget={"trials": 2, "epochs": 6, "max_concurrent": 1}, **SLOW)
    job = store.create_job("alice", parse_spec(spec).to_dict(), "resume")
    store.claim(job.id, "gone")
    store.finish(job.id, "failed", error="interrupted; resume with `relaxtune run --job ...`")
    argv = ["run", "--job", job.id, "--db", db, "--artifacts", str(env["artifacts"])]
    log = env["tmp"] / "run.log"
    run = start_process(relaxtune_args(*argv, "--log-level", "warning"), log)
    env["procs"].append(run)
    wait_for(
        lambda: (
            run.poll() is None
            and any(
                t.state == TrialState.RUNNING and t.intermediate_values for t in _trials(db, job.id)
            )
        ),
        240,
        "the resumed job's first trial to report an epoch",
        period=0.1,
    )
    response = client.delete(f"/v1/jobs/{job.id}")
    assert response.status_code == 202 and response.json()["cancel_requested"]
    # a second resume while the cancel is pending: one line, nothing changed
    code, _, err = _cli("run", "--job", job.id, "--db", db, "--artifacts", str(env["artifacts"]))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    print(f"resume during the cancel: {lines[0]}")
    assert "pending cancel" in lines[0] or f"job {job.id} is cancelled" in lines[0], lines
    assert run.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert f"job {job.id} cancelled" in log.read_text()
    ended = store.get_job(job.id)
    assert ended.status == "cancelled"
    time.sleep(2)  # nothing is left that could still write the row
    assert store.get_job(job.id) == ended
    assert client.get(f"/v1/jobs/{job.id}").json()["status"] == "cancelled"
    code, _, err = _cli("run", "--job", job.id, "--db", db, "--artifacts", str(env["artifacts"]))
    assert code == 2 and err.strip() == (
        f"relaxtune: error: job {job.id} is cancelled; it cannot be claimed"
    )
    assert store.get_job(job.id) == ended
    assert client.delete(f"/v1/jobs/{job.id}").status_code == 409


def _freeze_between_writes(proc: Any, db_file: Path) -> None:
    """SIGSTOP ``proc``'s process group at a moment when none of it is writing to the SQLite
    file ``db_file``. A process frozen inside a write transaction blocks every other writer
    of an SQLite database until it wakes (the API's cancel would time out); the test is about
    what a frozen controller can overwrite, not about that lock, which PostgreSQL
    deployments do not share."""
    for _ in range(100):
        os.killpg(proc.pid, signal.SIGSTOP)
        probe = sqlite3.connect(db_file, timeout=0.2)
        try:
            probe.execute("BEGIN IMMEDIATE")  # fails while another connection is writing
            probe.rollback()
            return
        except sqlite3.OperationalError:  # frozen mid-write: let it finish, try again
            os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    pytest.fail("the controller never paused outside a write to the job database")


def test_a_frozen_controller_cannot_overwrite_the_cancel_another_recorded(
    env: dict[str, Any],
) -> None:
    """The overwrite this guards against, with two controllers: ctl-a freezes (SIGSTOP,
    with its Ray) mid-trial; the job is cancelled; ctl-b's sweep finds ctl-a's heartbeat stale and records
    the cancel. When ctl-a wakes it stops the search, exports nothing and records nothing:
    the job stays ``cancelled``."""
    client, store, db = env["client"], env["store"], env["db"]
    spec = tiny_spec(name="two", budget={"trials": 2, "epochs": 6, "max_concurrent": 1}, **SLOW)
    job = store.create_job("alice", parse_spec(spec).to_dict(), "two")
    first = _controller(env, "ctl-a", RELAXTUNE_HEARTBEAT_S="0.5")
    wait_for(
        lambda: (
            first.poll() is None
            and any(
                t.state == TrialState.RUNNING and t.intermediate_values for t in _trials(db, job.id)
            )
        ),
        240,
        "ctl-a's trial to report an epoch",
        period=0.1,
    )
    _freeze_between_writes(first, env["tmp"] / "jobs.db")  # the controller and its Ray
    try:
        assert client.delete(f"/v1/jobs/{job.id}").status_code == 202
        time.sleep(2.5)  # ctl-a's heartbeat goes stale
        argv = ["controller", "--db", db, "--artifacts", str(env["artifacts"]), "--once"]
        second = start_process(
            relaxtune_args(*argv, "--worker-id", "ctl-b"),
            env["tmp"] / "ctl-b.log",
            RELAXTUNE_STALE_AFTER_S="2",
        )
        env["procs"].append(second)
        assert second.wait(timeout=60) == 0  # nothing to run: it only swept
        cancelled = store.get_job(job.id)
        assert cancelled.status == "cancelled" and cancelled.claimed_by == "ctl-a"
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    # the job's own driver process (started by ctl-a) logs what it does with the job
    logs = (env["tmp"] / "ctl-a.log", env["artifacts"] / "jobs" / job.id / "driver.log")

    def log_a() -> str:
        return "".join(p.read_text() for p in logs if p.exists())

    wait_for(
        lambda: f"job {job.id} is no longer running under ctl-a" in log_a(),
        60,
        "ctl-a to notice it lost the job",
    )
    wait_for(
        lambda: (
            "stopped after losing it" in log_a()
            or "was not recorded" in log_a()
            or "which is final" in log_a()
        ),
        120,
        "ctl-a's search to stop",
    )
    assert first.poll() is None, log_a()[-3000:]  # it carries on, for other jobs
    assert store.get_job(job.id) == cancelled
    assert client.get(f"/v1/jobs/{job.id}").json()["status"] == "cancelled"
    assert not (env["artifacts"] / "jobs" / job.id / "best").exists()  # nothing exported
