"""Cluster utilisation with many jobs queued: one job at a time vs several at once.

Workload: a queue of ``N`` small jobs from 3 tenants (submitted round-robin, all queued
before the controller starts), each ``T`` trials of ``E`` epochs of ``S`` seconds of known
work (the benchmark task ``fixed_time``, ``bench/_fixed_task.py``, registered as a plugin as
in ``bench/overhead.py``), ``max_concurrent: 1`` and 1 CPU per trial: one job holds one CPU.

The same queue is run twice, side by side in one invocation on the same machine, each time by
a fresh ``relaxtune controller --once --num-cpus C`` (the service's scheduling controller,
``service.pool.DriverPool``, on a local Ray of ``C`` logical CPUs, default 2; it exits once
the queue is empty and every driver has ended):

* **one at a time**: ``--max-running-jobs 1`` (``RELAXTUNE_MAX_RUNNING_JOBS``);
* **concurrent**: the default (``max_running_jobs`` 4: here the cluster's ``C`` CPUs bound
  it), each job in its own driver process, tenants taking turns (``service/fairshare.py``).

Figures per run:

* makespan: from the first job's claim (``started_at``) to the last job's end
  (``finished_at``), as the job store records them (Ray's start-up is outside it);
* busy CPU-seconds: the sum over every trial of its Optuna ``datetime_complete −
  datetime_start`` × the trial's ``resources.cpu``. Optuna starts a trial when Tune asks the
  searcher for its parameters, just before Tune places the trial's actor, so this counts
  the actor's start-up (imports) as busy: it is what the trials held of the cluster;
* utilisation = busy CPU-seconds / (``C`` × makespan); and the same with the known work only
  (``T × E × S`` CPU-seconds per job), which leaves out the trials' own start-up;
* jobs at once: the most jobs whose ``[started_at, finished_at]`` overlap.

The drivers' own start-up (a Python process importing Ray, joining it, starting Tune) and the
export of each job's best trial hold no CPU of the cluster: one job at a time leaves the
cluster idle meanwhile, and with ``max_concurrent: 1`` it never uses more than one CPU.

    .venv/bin/python bench/utilisation.py [--quick] [--jobs N] [--trials T] [--epochs E]
        [--epoch-seconds S] [--cpus C]

The last line printed is the utilisation ratio concurrent / one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository root on sys.path)
from _common import ROOT, machine, save_results, table
from overhead import BENCH, job_spec, write_plugin_metadata

from service.store import JobStore

TENANTS = ("alice", "bob", "carol")
MODES = {"one at a time": 1, "concurrent": None}  # --max-running-jobs (None: the default)


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = most = 0
    for _, step in events:  # at a tie an end sorts before a start
        open_now += step
        most = max(most, open_now)
    return most


def run_queue(
    tmp: Path,
    label: str,
    max_running_jobs: int | None,
    *,
    jobs: int,
    trials: int,
    epochs: int,
    seconds: float,
    cpus: int,
    env: dict[str, str],
    timeout_s: float,
) -> dict[str, Any]:
    """Queue the jobs on a fresh database, run ``relaxtune controller --once``, measure."""
    import optuna

    from search_spaces import parse_spec
    from service.artifacts import study_name

    folder = tmp / label.replace(" ", "-")
    folder.mkdir()
    db = f"sqlite:///{folder / 'jobs.db'}"
    store = JobStore(db)
    store.upgrade()
    spec = parse_spec(job_spec("util", trials, epochs, seconds, 1)).to_dict()
    ids = [store.create_job(TENANTS[i % len(TENANTS)], spec, f"job{i}").id for i in range(jobs)]
    argv = [sys.executable, "-m", "service.cli", "controller", "--once", "--db", db]
    argv += ["--artifacts", str(folder / "artifacts"), "--worker-id", f"bench-{label[:3]}"]
    argv += ["--num-cpus", str(cpus), "--log-level", "warning"]
    if max_running_jobs is not None:
        argv += ["--max-running-jobs", str(max_running_jobs)]
    log_path = folder / "controller.log"
    launched = time.time()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its group: this controller, its drivers, its Ray
        )
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    wall = time.time() - launched
    if code != 0:
        raise RuntimeError(
            f"{label}: controller ended with {code!r} after {wall:.0f}s\n"
            + log_path.read_text()[-3000:]
        )
    finished = [store.get_job(i) for i in ids]
    failed = [(j.name, j.status, j.error) for j in finished if j.status != "succeeded"]
    if failed:
        raise RuntimeError(f"{label}: jobs did not succeed: {failed[:3]}")
    spans = [(j.started_at.timestamp(), j.finished_at.timestamp()) for j in finished]
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    makespan = last - first
    busy = 0.0
    trial_count = 0
    for job in finished:
        study = optuna.load_study(study_name=study_name(job.id), storage=db)
        done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
        if len(done) != trials:
            raise RuntimeError(f"{label}: job {job.name} has {len(done)} complete trials")
        trial_count += len(done)
        cpu = float(job.spec["resources"]["cpu"])
        busy += sum((t.datetime_complete - t.datetime_start).total_seconds() * cpu for t in done)
    store.close()
    known = jobs * trials * epochs * seconds * 1.0
    available = cpus * makespan
    return {
        "max_running_jobs": max_running_jobs if max_running_jobs is not None else "default (4)",
        "controller_wall_s": wall,
        "makespan_s": makespan,
        "busy_cpu_s": busy,
        "known_work_cpu_s": known,
        "available_cpu_s": available,
        "utilisation": busy / available,
        "utilisation_known_work": known / available,
        "most_jobs_at_once": _max_overlap(spans),
        "mean_job_s": sum(e - s for s, e in spans) / len(spans),
        "trials": trial_count,
        "job_spans_s": [[round(s - first, 2), round(e - first, 2)] for s, e in spans],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="3 jobs (one per tenant) x 1 trial x 1 epoch x 2 s"
    )
    parser.add_argument("--jobs", type=int, default=None, help="default 9 (quick 3)")
    parser.add_argument("--trials", type=int, default=None, help="per job; default 2 (quick 1)")
    parser.add_argument("--epochs", type=int, default=None, help="default 2 (quick 1)")
    parser.add_argument("--epoch-seconds", type=float, default=None, help="default 3 (quick 2)")
    parser.add_argument("--cpus", type=int, default=2, help="logical CPUs of the local Ray")
    args = parser.parse_args()
    jobs = args.jobs or (3 if args.quick else 9)
    trials = args.trials or (1 if args.quick else 2)
    epochs = args.epochs or (1 if args.quick else 2)
    seconds = args.epoch_seconds or (2.0 if args.quick else 3.0)
    cpus = args.cpus
    print(
        f"workload: {jobs} jobs from {len(TENANTS)} tenants, each {trials} trial(s) x {epochs} "
        f"epoch(s) x {seconds:g} s, max_concurrent 1, 1 CPU per trial; local Ray of {cpus} CPUs",
        flush=True,
    )
    info = machine()
    print(f"machine: {info.get('cpu_count')} cores, load average {info.get('loadavg_at_start')}")
    figures: dict[str, Any] = {
        "jobs": jobs,
        "tenants": len(TENANTS),
        "trials_per_job": trials,
        "epochs": epochs,
        "epoch_seconds": seconds,
        "cluster_cpus": cpus,
        "loadavg_at_start": info.get("loadavg_at_start"),
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="relaxtune-utilisation-") as tmp_name:
        tmp = Path(tmp_name)
        plugin = tmp / "plugin"
        write_plugin_metadata(plugin)
        sys.path[:0] = [str(plugin), str(BENCH)]  # parse_spec here finds the task's schema
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(plugin), str(BENCH), str(ROOT)]
            + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        env["RAY_AIR_NEW_OUTPUT"] = "0"
        for label, max_running in MODES.items():
            result = run_queue(
                tmp,
                label,
                max_running,
                jobs=jobs,
                trials=trials,
                epochs=epochs,
                seconds=seconds,
                cpus=cpus,
                env=env,
                timeout_s=1800,
            )
            figures["runs"][label] = result
            print(
                f"{label}: makespan {result['makespan_s']:.1f} s, utilisation "
                f"{result['utilisation']:.3f}, at most {result['most_jobs_at_once']} job(s) "
                f"at once",
                flush=True,
            )
    runs = figures["runs"]
    one, many = runs["one at a time"], runs["concurrent"]
    ratio = many["utilisation"] / one["utilisation"]
    figures["utilisation_ratio"] = ratio
    figures["makespan_ratio_one_over_concurrent"] = one["makespan_s"] / many["makespan_s"]
    figures["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    rows = [
        [
            label,
            r["max_running_jobs"],
            r["most_jobs_at_once"],
            r["makespan_s"],
            r["mean_job_s"],
            r["busy_cpu_s"],
            r["available_cpu_s"],
            r["utilisation"],
            r["utilisation_known_work"],
        ]
        for label, r in runs.items()
    ]
    print(
        f"\n## {jobs} jobs x {trials} trial(s) x {epochs * seconds:g} s of known work, {cpus} CPUs"
    )
    print(
        table(
            [
                "run",
                "max_running_jobs",
                "jobs at once",
                "makespan s",
                "mean job s",
                "busy CPU·s (trials)",
                "available CPU·s",
                "utilisation",
                "utilisation (known work only)",
            ],
            rows,
        )
    )
    print(
        f"makespan one at a time / concurrent: {figures['makespan_ratio_one_over_concurrent']:.3f}"
    )
    print(f"load average at the end: {figures['loadavg_at_end']}")
    save_results("utilisation", figures, args.quick)
    print(f"utilisation concurrent / one at a time: {ratio:.3f}")


if __name__ == "__main__":
    main()
