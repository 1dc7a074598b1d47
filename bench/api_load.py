"""API latency under 20 concurrent clients polling a job with 500 trials, and the dashboard
page time of that job, against a real ``relaxtune serve --no-controller`` process.

Setup (temporary SQLite database): ``JobStore.upgrade()``, a token, a job row made with
``JobStore.create_job`` and claimed (``running``, with progress), and the job's Optuna study
``job-<id>`` filled with 500 trials through ``study.add_trials(optuna.trial.create_trial(...))``
shaped like a real job's (per-epoch intermediate values and a ``history`` user attribute,
about a third pruned, a few failed or running: ``bench/dashboard_render.synthetic_trials``).

Load: 20 threads, each with its own ``httpx.Client``, alternate ``GET /v1/jobs/{id}`` and
``GET /v1/jobs/{id}/trials`` for the phase's duration. Three phases, one after the other:

* ``poll``: each client polls once per second (both requests, then waits for the next
  second), the clients' phases spread evenly over the second: what 20 independent open
  dashboards / CLIs watching the job do;
* ``burst``: the same, but all 20 clients fire at the same instant every second (40
  requests at once): the worst case of synchronised pollers;
* ``saturate``: no pause between requests (closed loop): the server's capacity.

Latency is measured client-side per request; an error is any exception or non-200 answer.
Then ``GET /v1/jobs/{id}/dashboard`` is timed with no other load (first request, then the
median of the next ones). Last, the floor: the same three phases against
``bench/_floor_app.py``, an app that answers the two URLs with the real server's captured
bytes and does nothing else, so the table shows side by side what the load generator, HTTP
and the machine cost by themselves (the ``floor_*`` rows).

    .venv/bin/python bench/api_load.py [--quick] [--clients 20] [--seconds 30] [--trials 500]

The last line printed is the p99 latency of the ``poll`` phase (all requests), in ms.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository root on sys.path)
import httpx
import optuna
from _common import ROOT, percentile, save_results, table
from dashboard_render import synthetic_trials

from service.store import JobStore

GOAL_P99_MS = 50.0
GOAL_DASHBOARD_S = 1.5
#: (name, polls periodically, phases spread): the headline is ``poll``
PHASES = (("poll", True, True), ("burst", True, False), ("saturate", False, False))

SPEC = {
    "name": "bench-api-load",
    "task": "rotated_mnist",
    "model": {"group": "C8", "width": 8, "depth": 3},
    "data": {"train_size": 3000, "val_size": 1000, "test_size": 1000},
    "search_space": "relax",
    "budget": {"trials": 500, "epochs": 8, "max_concurrent": 2},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "resources": {"cpu": 1, "gpu": 0},
    "scheduler": "asha",
    "asha": {"grace_period": 1, "reduction_factor": 2},
    "seed": 0,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(db_url: str, n_trials: int, epochs: int) -> tuple[str, str]:
    """Schema, token, a running job and its study of ``n_trials`` trials; returns (job id, token)."""
    store = JobStore(db_url)
    try:
        store.upgrade()
        token = store.create_token("bench")
        store.create_job("bench", dict(SPEC), SPEC["name"])
        job = store.claim_next("bench-worker")
        assert job is not None
        storage = optuna.storages.RDBStorage(db_url)
        study = optuna.create_study(
            study_name=job.study_name, storage=storage, direction="maximize"
        )
        started = time.perf_counter()
        study.add_trials(synthetic_trials(n_trials, epochs))
        best = max(t.value for t in study.get_trials(deepcopy=False) if t.value is not None)
        store.update_progress(
            job.id,
            {
                "complete": n_trials - 4,
                "pruned": 0,
                "failed": 0,
                "running": 4,
                "total": n_trials,
                "best_value": best,
            },
        )
        print(
            f"study with {n_trials} trials x {epochs} epochs written in "
            f"{time.perf_counter() - started:.1f} s"
        )
        storage.engine.dispose()
        return job.id, token
    finally:
        store.close()


class Server:
    """``relaxtune serve --no-controller`` in a subprocess (``floor``: ``bench/_floor_app.py``
    serving ``floor``'s captured responses instead)."""

    def __init__(self, db_url: str, artifacts: Path, floor: Path | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if floor is None:
            cmd = [sys.executable, "-m", "service.cli", "serve", "--no-controller"]
            cmd += ["--db", db_url, "--artifacts", str(artifacts)]
            cwd = ROOT
        else:
            cmd = [sys.executable, "-m", "uvicorn", "_floor_app:app", "--host", "127.0.0.1"]
            cwd, env["RELAXTUNE_FLOOR_DIR"] = ROOT / "bench", str(floor)
        cmd += ["--port", str(self.port), "--log-level", "warning"]
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until ``/healthz`` answers 200 with the start-up warm-up finished (the
        warm-up imports plotly.js and scikit-learn in a thread: seconds of CPU that would
        otherwise land in the first load phase)."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                r = httpx.get(self.url + "/healthz", timeout=1.0)
                if r.status_code == 200 and r.json().get("dashboards") == "warm":
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def load_phase(
    base: str,
    token: str,
    job_id: str,
    clients: int,
    seconds: float,
    period: float | None,
    spread: bool = True,
) -> dict[str, Any]:
    """``clients`` threads polling the job and its trials for ``seconds``: every ``period``
    seconds each (``None``: back to back), their phases spread evenly over the period
    (independent pollers) or, with ``spread=False``, all at the same instant (a burst)."""
    paths = {"job": f"/v1/jobs/{job_id}", "trials": f"/v1/jobs/{job_id}/trials"}
    latencies: dict[str, list[float]] = {k: [] for k in paths}
    errors: list[str] = []
    sizes: dict[str, int] = {}
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        ) as http:
            start_gate.wait()
            next_poll = time.perf_counter()
            if period and spread:  # independent pollers: phases spread over the period
                next_poll += period * index / clients
                time.sleep(max(0.0, next_poll - time.perf_counter()))
            while time.perf_counter() < deadline[0]:
                for kind, path in paths.items():
                    t0 = time.perf_counter()
                    try:
                        r = http.get(path)
                        dt = time.perf_counter() - t0
                        ok = r.status_code == 200
                        size = len(r.content)
                    except httpx.HTTPError as exc:
                        dt, ok, size = time.perf_counter() - t0, False, 0
                        r = exc
                    with lock:
                        latencies[kind].append(dt)
                        sizes[kind] = size
                        if not ok:
                            errors.append(f"{kind}: {getattr(r, 'status_code', r)!r}")
                if period:
                    next_poll += period
                    pause = next_poll - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    else:
                        next_poll = time.perf_counter()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    started = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    everything = latencies["job"] + latencies["trials"]
    out: dict[str, Any] = {
        "clients": clients,
        "seconds": wall,
        "poll_period_s": period,
        "errors": len(errors),
        "error_samples": errors[:5],
        "requests": len(everything),
        "throughput_rps": len(everything) / wall,
        "response_bytes": sizes,
    }
    for kind, values in (("all", everything), *latencies.items()):
        out[kind] = {
            "n": len(values),
            "p50_ms": percentile(values, 50) * 1e3,
            "p90_ms": percentile(values, 90) * 1e3,
            "p99_ms": percentile(values, 99) * 1e3,
            "max_ms": max(values) * 1e3 if values else float("nan"),
        }
    return out


def dashboard_times(base: str, token: str, job_id: str, repeats: int) -> dict[str, Any]:
    url = f"{base}/v1/jobs/{job_id}/dashboard"
    times, size = [], 0
    with httpx.Client(timeout=120.0) as http:
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            r = http.get(url, params={"token": token})
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
            size = len(r.content)
    return {
        "first_s": times[0],
        "median_s": statistics.median(times[1:]),
        "times_s": times,
        "page_bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5-second phases")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--seconds", type=float, default=None, help="per phase (default 30; quick 5)"
    )
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--period", type=float, default=1.0, help="poll period of the poll phase")
    parser.add_argument("--dashboard-repeats", type=int, default=None)
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    repeats = args.dashboard_repeats or (2 if args.quick else 5)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    figures: dict[str, Any] = {"trials": args.trials, "epochs": args.epochs}
    with tempfile.TemporaryDirectory(prefix="relaxtune-api-load-") as tmp:
        db_url = f"sqlite:///{tmp}/api.db"
        job_id, token = prepare(db_url, args.trials, args.epochs)
        server = Server(db_url, Path(tmp) / "artifacts")
        try:
            figures["server_ready_s"] = server.wait_ready()
            # one request of each kind first: connection pools and lazy imports warm
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {token}"}
            ) as http:
                for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/trials"):
                    http.get(path).raise_for_status()
            for phase, period, spread in PHASES:
                period = args.period if period else None
                how = (
                    ", back to back"
                    if period is None
                    else f", one poll every {period} s each, "
                    + ("phases spread over the period" if spread else "all at the same instant")
                )
                print(f"{phase}: {args.clients} clients for {seconds:.0f} s{how}", flush=True)
                figures[phase] = load_phase(
                    server.url, token, job_id, args.clients, seconds, period, spread
                )
            figures["dashboard"] = dashboard_times(server.url, token, job_id, repeats)
            floor_dir = Path(tmp) / "floor"
            floor_dir.mkdir()
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {token}"}
            ) as http:
                for name, path in (
                    ("job", f"/v1/jobs/{job_id}"),
                    ("trials", f"/v1/jobs/{job_id}/trials"),
                ):
                    (floor_dir / f"{name}.json").write_bytes(http.get(path).content)
        finally:
            server.stop()
        # the floor: the same load on an app that only sends the same bytes back
        floor = Server(db_url, Path(tmp), floor=floor_dir)
        try:
            floor.wait_ready()
            for phase, period, spread in PHASES:
                period = args.period if period else None
                print(f"floor {phase}: the same load on bench/_floor_app.py", flush=True)
                figures[f"floor_{phase}"] = load_phase(
                    floor.url, token, job_id, args.clients, seconds, period, spread
                )
        finally:
            floor.stop()

    rows = []
    for phase in [p for p, _, _ in PHASES] + [f"floor_{p}" for p, _, _ in PHASES]:
        f = figures[phase]
        for kind in ("job", "trials", "all"):
            s = f[kind]
            rows.append(
                [
                    phase,
                    kind,
                    s["n"],
                    s["p50_ms"],
                    s["p90_ms"],
                    s["p99_ms"],
                    s["max_ms"],
                    f["errors"] if kind == "all" else "",
                    f"{f['throughput_rps']:.1f}" if kind == "all" else "",
                ]
            )
    print(
        f"\n## {args.clients} clients, job with {args.trials} trials x {args.epochs} epochs, "
        f"{seconds:.0f} s per phase"
    )
    print(
        table(
            [
                "phase",
                "endpoint",
                "requests",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "errors",
                "req/s",
            ],
            rows,
        )
    )
    sizes = figures["poll"]["response_bytes"]
    print(
        f"response sizes: job {sizes.get('job', 0)} B, trials {sizes.get('trials', 0) / 1e3:.0f} kB"
    )
    d = figures["dashboard"]
    print(
        f"dashboard page ({d['page_bytes'] / 1e6:.2f} MB): first {d['first_s']:.3f} s, "
        f"median of next {len(d['times_s']) - 1}: {d['median_s']:.3f} s (goal < {GOAL_DASHBOARD_S} s)"
    )
    p99 = figures["poll"]["all"]["p99_ms"]
    figures["goals"] = {
        "poll_p99_ms_below_50": p99 < GOAL_P99_MS,
        "burst_p99_ms_below_50": figures["burst"]["all"]["p99_ms"] < GOAL_P99_MS,
        "saturate_p99_ms_below_50": figures["saturate"]["all"]["p99_ms"] < GOAL_P99_MS,
        "zero_errors": all(figures[phase]["errors"] == 0 for phase, _, _ in PHASES),
        "dashboard_below_1_5_s": d["median_s"] < GOAL_DASHBOARD_S,
    }
    save_results("api_load", figures, args.quick)
    for phase in ("burst", "saturate"):
        print(f"{phase} p99: {figures[phase]['all']['p99_ms']:.1f} ms")
    print(
        f"poll p99 latency, {args.clients} clients, {args.trials}-trial job: {p99:.1f} ms "
        f"(goal < {GOAL_P99_MS:.0f} ms: {'met' if p99 < GOAL_P99_MS else 'MISSED'})"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
