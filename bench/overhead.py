"""Service overhead: the same trials of known length run (a) as a plain Ray Tune experiment
and (b) as a relaxtune job submitted to ``relaxtune serve`` (API + controller).

Workload: ``N`` trials of ``E`` epochs of ``S`` seconds each.

* (a) a Ray Tune function trainable that sleeps ``S`` and reports a metric, ``E`` times
  (``tune.Tuner``, ``max_concurrent_trials=2``, one CPU per trial, Ray already started);
* (a') the same trials as (b) — relaxtune's own trainable ``workers.trainable.relax_trial``
  with the task ``fixed_time`` — run by a minimal Tune script (``tune.Tuner`` over a grid
  of trial numbers, ``reuse_actors=True`` as relaxtune uses): no API, controller, Optuna
  study, scheduler or export;
* (b) the task ``fixed_time`` (``bench/_fixed_task.py``: one training step per epoch whose
  forward pass sleeps ``S``) run by relaxtune's real trainable, ``Trainer``, Optuna study,
  per-epoch state save and Tune checkpoint, and the export of the best trial. The task is
  registered as a plugin through an entry point of the group ``relaxtune.tasks``: this script
  writes the distribution metadata into a temporary folder put on the service's
  ``PYTHONPATH`` (nothing is installed).

(b) goes through the HTTP API: ``POST /v1/jobs``, then ``GET /v1/jobs/{id}`` and
``GET /v1/jobs/{id}/trials`` every 0.1 s. The service is warm: a one-trial warm-up job runs
first (it starts Ray inside the controller). Figures:

* wall time b / a at concurrency 2 (submit → ``succeeded``, against ``tuner.fit()``), and
  its two factors a' / a (relaxtune's trainable: torch/escnn imports in each actor, per-epoch
  evaluation and checkpoints) and b / a' (the service itself);
* from submit to the first training step: the earliest ``first_batch_at`` of the job's
  trials (the wall-clock time the trainable records when a trial's first training batch
  starts; stored as a trial attribute);
* from submit to the first epoch reported: the first poll of ``/trials`` that shows a trial
  with an epoch (``last_step``), i.e. what a client of the API sees;
* from submit to the first trial row: the first poll of ``/trials`` that lists a trial. Optuna
  creates the row when Tune asks the searcher for a configuration, before the trial's actor
  has started, so this is not when training starts;
* parallel efficiency 1 → 2 concurrent trials of the service: ``T(1) / (2·T(2))``.

    .venv/bin/python bench/overhead.py [--quick] [--trials 4] [--epochs 3] [--epoch-seconds 10]

The last line printed is the ratio b / a.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository root on sys.path)
import httpx
from _common import ROOT, save_results, table

from service.store import JobStore

GOAL_RATIO = 1.05
GOAL_FIRST_TRIAL_S = 5.0
BENCH = ROOT / "bench"


# ---- (a) plain Ray Tune -------------------------------------------------------------------
def _sleep_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    for epoch in range(1, int(config["epochs"]) + 1):
        time.sleep(float(config["epoch_seconds"]))
        tune.report({"val": 1.0 / epoch, "epoch": epoch})


def plain_tune(trials: int, epochs: int, seconds: float, concurrency: int, storage: Path) -> float:
    """Wall time of ``tuner.fit()`` for the sleep trainable (Ray started beforehand)."""
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(_sleep_trainable, {"cpu": 1}),
        param_space={"epochs": epochs, "epoch_seconds": seconds, "lr": tune.loguniform(1e-4, 1e-2)},
        tune_config=tune.TuneConfig(
            num_samples=trials, max_concurrent_trials=concurrency, metric="val", mode="min"
        ),
        run_config=tune.RunConfig(
            name=f"plain-{concurrency}-{int(time.time())}", storage_path=str(storage), verbose=0
        ),
    )
    started = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - started
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"plain Tune trials failed: {errors[:2]}")
    return wall


def plain_tune_relax_trial(
    trials: int, epochs: int, seconds: float, concurrency: int, storage: Path
) -> float:
    """(a'): wall time of ``tuner.fit()`` for relaxtune's own trainable
    (``workers.trainable.relax_trial``, task ``fixed_time``) run by a minimal Tune script: no
    API, controller, Optuna study, scheduler or export. Same trials as (b)."""
    from ray import tune

    from search_spaces import parse_spec
    from service.artifacts import trial_dir
    from service.search import trial_base
    from workers.trainable import TRIAL_DIR, TRIAL_NUMBER, relax_trial

    spec = parse_spec(job_spec("plain-relax-trial", trials, epochs, seconds, concurrency))
    base = trial_base(spec)
    trials_root = storage / f"trials-{concurrency}-{time.time_ns()}"
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(relax_trial, base=base), {"cpu": 1}),
        param_space={
            TRIAL_NUMBER: tune.grid_search(list(range(trials))),
            TRIAL_DIR: tune.sample_from(
                lambda config: str(trial_dir(trials_root, config[TRIAL_NUMBER]))
            ),
            "optim.lr": tune.loguniform(1e-4, 1e-2),
        },
        tune_config=tune.TuneConfig(
            num_samples=1, max_concurrent_trials=concurrency, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=f"plain-relax-{concurrency}-{int(time.time())}",
            storage_path=str(storage),
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    started = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - started
    errors = [r.error for r in results if r.error]
    if errors or len(results) != trials:
        raise RuntimeError(f"plain Tune relax_trial: {len(results)} results, errors {errors[:2]}")
    return wall


# ---- (b) relaxtune service ----------------------------------------------------------------
def write_plugin_metadata(folder: Path) -> None:
    """A distribution ``relaxtune-bench-plugin`` whose only content is the task's entry
    points (the task and its torch-free schema)."""
    from _fixed_task import ENTRY_POINT
    from _fixed_task_schema import SCHEMA_ENTRY_POINT

    dist = folder / "relaxtune_bench_plugin-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: relaxtune-bench-plugin\nVersion: 0.0\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[relaxtune.tasks]\n{ENTRY_POINT}\n\n[relaxtune.task_schemas]\n{SCHEMA_ENTRY_POINT}\n"
    )


def job_spec(
    name: str, trials: int, epochs: int, seconds: float, concurrency: int
) -> dict[str, Any]:
    return {
        "name": name,
        "task": "fixed_time",
        "model": {"epoch_seconds": seconds},
        "search_space": "baseline",
        "budget": {"trials": trials, "epochs": epochs, "max_concurrent": concurrency},
        "objective": {"metric": "val_mse", "mode": "min"},
        "resources": {"cpu": 1, "gpu": 0},
        "scheduler": "none",
        "seed": 0,
    }


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (from /proc), children first."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        current = frontier.pop(0)
        kids = [p for p, ppid in parents.items() if ppid == current]
        out += kids
        frontier += kids
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Service:
    """``relaxtune serve`` (API + controller subprocess) with the plugin on ``PYTHONPATH``."""

    def __init__(self, tmp: Path) -> None:
        import socket

        plugin = tmp / "plugin"
        write_plugin_metadata(plugin)
        self.db = f"sqlite:///{tmp}/service.db"
        store = JobStore(self.db)
        store.upgrade()
        self.token = store.create_token("bench")
        store.close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(plugin), str(BENCH), str(ROOT)]
            + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        env["RAY_AIR_NEW_OUTPUT"] = "0"
        self.log = open(tmp / "service.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.cli",
                "serve",
                "--db",
                self.db,
                "--artifacts",
                str(tmp / "artifacts"),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30.0
        )
        self.log_path = tmp / "service.log"

    def wait_ready(self, timeout: float = 60.0) -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError("relaxtune serve exited:\n" + self.log_path.read_text()[-3000:])
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("relaxtune serve did not become ready")

    def run_job(self, spec: dict[str, Any], timeout: float = 900.0) -> dict[str, Any]:
        """Submit, watch every 0.1 s, return the timings (seconds from submit)."""
        wall0 = time.time()  # the trainable's first_batch_at is wall-clock time (same host)
        t0 = time.perf_counter()
        r = self.http.post("/v1/jobs", json=spec)
        if r.status_code != 201:
            raise RuntimeError(f"submit refused: {r.status_code} {r.text}")
        submitted = time.perf_counter()
        job_id = r.json()["id"]
        first_row = first_epoch = None
        job: dict[str, Any] = {}
        while time.perf_counter() - t0 < timeout:
            if first_epoch is None:
                trials = self.http.get(f"/v1/jobs/{job_id}/trials").json()["data"]
                if trials and first_row is None:  # Optuna created a trial row (not started)
                    first_row = time.perf_counter() - t0
                if any(t["last_step"] is not None for t in trials):  # an epoch was reported
                    first_epoch = time.perf_counter() - t0
            job = self.http.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        if job.get("status") != "succeeded":
            raise RuntimeError(
                f"job {job_id} ended {job.get('status')}: {job.get('error')}\n"
                + self.log_path.read_text()[-3000:]
            )
        trials = self.http.get(f"/v1/jobs/{job_id}/trials", params={"history": True}).json()["data"]

        def ts(key: str) -> float:
            return datetime.fromisoformat(job[key]).timestamp()

        epoch_s = [h["epoch_seconds"] for t in trials for h in t["user_attrs"].get("history", [])]
        created = ts("created_at")
        timeline = [
            [
                round(datetime.fromisoformat(t[k]).timestamp() - created, 2) if t.get(k) else None
                for k in ("datetime_start", "datetime_complete")
            ]
            for t in trials
        ]
        last_done = max((end for _, end in timeline if end is not None), default=None)
        began = [t["user_attrs"]["first_batch_at"] for t in trials if "first_batch_at" in t["user_attrs"]]
        if not began:
            raise RuntimeError(f"job {job_id}: no trial recorded first_batch_at")
        return {
            "job_id": job_id,
            "wall_s": wall,
            "submit_request_s": submitted - t0,
            "first_training_step_s": min(began) - wall0,
            "first_epoch_reported_s": first_epoch,
            "first_trial_row_s": first_row,
            "claimed_after_s": ts("started_at") - ts("created_at"),
            "server_side_s": ts("finished_at") - ts("created_at"),
            "trials": len(trials),
            "states": sorted({t["state"] for t in trials}),
            "mean_epoch_seconds": sum(epoch_s) / max(len(epoch_s), 1),
            "trial_start_end_s": timeline,
            "last_trial_to_finished_s": (ts("finished_at") - created - last_done)
            if last_done
            else None,
        }

    def stop(self) -> None:
        children = _descendants(self.proc.pid)
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        deadline = time.monotonic() + 30
        for pid in children:  # descendants of the server this script started, one by one
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials x 1 epoch x 1 s")
    parser.add_argument("--trials", type=int, default=None, help="default 4 (quick 2)")
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (quick 1)")
    parser.add_argument("--epoch-seconds", type=float, default=None, help="default 10 (quick 1)")
    args = parser.parse_args()
    trials = args.trials or (2 if args.quick else 4)
    epochs = args.epochs or (1 if args.quick else 3)
    seconds = args.epoch_seconds or (1.0 if args.quick else 10.0)
    trial_s = epochs * seconds
    ideal = {c: math.ceil(trials / c) * trial_s for c in (1, 2)}
    print(
        f"workload: {trials} trials x {epochs} epochs x {seconds:g} s = {trial_s:g} s per trial; "
        f"ideal wall {ideal[2]:g} s at 2 concurrent, {ideal[1]:g} s at 1"
    )
    figures: dict[str, Any] = {
        "trials": trials,
        "epochs": epochs,
        "epoch_seconds": seconds,
        "trial_seconds": trial_s,
        "ideal_wall_s": ideal,
    }

    with tempfile.TemporaryDirectory(prefix="relaxtune-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        import ray

        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # the fixed_time task's entry point, for this process and Ray's workers
        plugin = tmp / "plugin-a"
        write_plugin_metadata(plugin)
        sys.path[:0] = [str(plugin), str(BENCH)]
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(plugin), str(BENCH), str(ROOT)]
            + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        )
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        try:
            plain_tune(1, 1, 0.1, 1, tmp / "ray")  # warm: worker processes, Tune imports
            figures["a_plain_tune_c2_s"] = plain_tune(trials, epochs, seconds, 2, tmp / "ray")
            print(
                f"(a) plain Ray Tune, 2 concurrent: {figures['a_plain_tune_c2_s']:.1f} s",
                flush=True,
            )
            figures["a_relax_trial_c2_s"] = plain_tune_relax_trial(
                trials, epochs, seconds, 2, tmp / "ray"
            )
            print(
                "(a') plain Ray Tune running relaxtune's trainable, 2 concurrent: "
                f"{figures['a_relax_trial_c2_s']:.1f} s",
                flush=True,
            )
        finally:
            ray.shutdown()

        service = Service(tmp)
        try:
            service.wait_ready()
            warm = service.run_job(job_spec("warm-up", 1, 1, 0.1, 1))
            figures["warm_up_job"] = warm
            print(f"warm-up job (starts Ray in the controller): {warm['wall_s']:.1f} s", flush=True)
            b2 = service.run_job(job_spec("overhead-c2", trials, epochs, seconds, 2))
            figures["b_service_c2"] = b2
            print(
                f"(b) relaxtune job, 2 concurrent: {b2['wall_s']:.1f} s "
                f"(first training step after {b2['first_training_step_s']:.2f} s)",
                flush=True,
            )
            b1 = service.run_job(job_spec("overhead-c1", trials, epochs, seconds, 1))
            figures["b_service_c1"] = b1
            print(
                f"(b) relaxtune job, 1 at a time: {b1['wall_s']:.1f} s "
                f"(first training step after {b1['first_training_step_s']:.2f} s)",
                flush=True,
            )
        finally:
            service.stop()

    a = figures["a_plain_tune_c2_s"]
    a_relax = figures["a_relax_trial_c2_s"]
    ratio = b2["wall_s"] / a
    ratio_service = b2["wall_s"] / a_relax
    efficiency = b1["wall_s"] / (2 * b2["wall_s"])
    first_step = [b2["first_training_step_s"], b1["first_training_step_s"]]
    figures.update(
        {
            "ratio_b_over_a": ratio,
            "ratio_b_over_a_relax_trial": ratio_service,
            "ratio_a_relax_trial_over_a": a_relax / a,
            "parallel_efficiency_1_to_2": efficiency,
            "first_training_step_s": first_step,
            "first_epoch_reported_s": [b2["first_epoch_reported_s"], b1["first_epoch_reported_s"]],
            "first_trial_row_s": [b2["first_trial_row_s"], b1["first_trial_row_s"]],
            "goals": {
                "ratio_le_1_05": ratio <= GOAL_RATIO,
                "service_ratio_le_1_05": ratio_service <= GOAL_RATIO,
                "first_training_step_le_5_s": max(first_step) <= GOAL_FIRST_TRIAL_S,
            },
        }
    )

    def service_row(b: dict[str, Any], concurrent: int) -> list[Any]:
        wall, ideal_s = b["wall_s"], ideal[concurrent]
        return ["(b) relaxtune job", concurrent, wall, ideal_s, wall / ideal_s] + [
            b[k]
            for k in (
                "claimed_after_s",
                "first_trial_row_s",
                "first_training_step_s",
                "first_epoch_reported_s",
            )
        ]

    rows = [
        ["(a) plain Ray Tune, sleep trainable", 2, a, ideal[2], a / ideal[2]] + ["-"] * 4,
        ["(a') plain Ray Tune, relaxtune's trainable", 2, a_relax, ideal[2], a_relax / ideal[2]]
        + ["-"] * 4,
        service_row(b2, 2),
        service_row(b1, 1),
    ]
    print(f"\n## {trials} trials x {trial_s:g} s of known work")
    print("submit → …: seconds after POST /v1/jobs (warm service)")
    print(
        table(
            [
                "run",
                "concurrent",
                "wall s",
                "ideal s",
                "wall / ideal",
                "→ claimed",
                "→ first trial row (Optuna)",
                "→ first training step",
                "→ first epoch reported",
            ],
            rows,
        )
    )
    print(
        f"mean epoch_seconds reported by relaxtune trials: {b2['mean_epoch_seconds']:.3f} "
        f"(known work {seconds:g})"
    )
    met = max(first_step) <= GOAL_FIRST_TRIAL_S
    print(
        f"submit → first training step (warm service): {max(first_step):.2f} s "
        f"(goal <= {GOAL_FIRST_TRIAL_S:g} s: {'met' if met else 'MISSED'})"
    )
    print(f"parallel efficiency 1 → 2 concurrent trials: {efficiency:.3f}")
    print(
        f"(a') / (a): relaxtune's trainable under plain Tune vs the sleep trainable: "
        f"{a_relax / a:.3f} (its actors import torch, escnn and the task: paid by any torch "
        "trainable)"
    )
    print(
        f"(b) / (a'): what the service adds (API, controller, Optuna, scheduler, export): "
        f"{ratio_service:.3f} (goal <= {GOAL_RATIO}: "
        f"{'met' if ratio_service <= GOAL_RATIO else 'MISSED'})"
    )
    save_results("overhead", figures, args.quick)
    print(
        f"wall-time ratio relaxtune job / plain Ray Tune (sleep trainable): {ratio:.3f} "
        f"(goal <= {GOAL_RATIO}: {'met' if ratio <= GOAL_RATIO else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
