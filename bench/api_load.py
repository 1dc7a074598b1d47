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

In those three the study does not change, so every ``/trials`` request after the first is
served from the server's cache (the body serialised and compressed once per study version).
Then ``GET /v1/jobs/{id}/dashboard`` is timed with no other load (first request, then the
median of the next ones), and a fourth phase runs:

* ``live``: the ``poll`` load while ``bench/_study_writer.py`` (its own process) writes into
  the study what a running search writes: one epoch of one of 2 running trials every
  ``--live-period`` seconds (intermediate value and rewritten ``history``), a trial COMPLETE
  with its final attributes every 8 epochs and a new RUNNING trial in its place. Each write
  makes the next ``/trials`` request read and serialise the study again. A ``/trials``
  request counts as a possible cache miss (``trials_new``) when no response with the same
  ETag had arrived before it was sent; the others were served from the cache.

Latency is measured client-side per request; an error is any exception or non-200 answer.
The clients accept gzip (httpx's default), so ``/trials`` travels compressed; sizes are
reported as decoded and as on the wire. Last, the floor: the ``poll``, ``burst`` and
``saturate`` loads against ``bench/_floor_app.py``, an app that answers the two URLs with the
real server's captured response bytes as sent (gzip-compressed ``/trials``, with its
``Content-Encoding``) and does nothing else, so the table shows side by side what the load
generator, HTTP and the machine cost by themselves (the ``floor_*`` rows).

    .venv/bin/python bench/api_load.py [--quick] [--clients 20] [--seconds 30] [--trials 500]
        [--live-period 1]

The last line printed is the p99 latency of the ``poll`` phase (all requests), in ms.
"""

from __future__ import annotations

import argparse
import json
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


def prepare(db_url: str, n_trials: int, epochs: int) -> tuple[str, str, str]:
    """Schema, token, a running job and its study of ``n_trials`` trials; returns (job id,
    token, study name)."""
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
        return job.id, token, job.study_name
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
    known_etags: set[str] = frozenset(),
) -> dict[str, Any]:
    """``clients`` threads polling the job and its trials for ``seconds``: every ``period``
    seconds each (``None``: back to back), their phases spread evenly over the period
    (independent pollers) or, with ``spread=False``, all at the same instant (a burst).

    ``/trials`` requests are also split by whether a response with the same ETag had arrived
    before they were sent (``known_etags``: those seen before the phase): ``trials_new``
    holds the others, the requests that may have missed the server's cache."""
    paths = {"job": f"/v1/jobs/{job_id}", "trials": f"/v1/jobs/{job_id}/trials"}
    latencies: dict[str, list[float]] = {k: [] for k in paths}
    trials_seen: list[tuple[float, float, str]] = []  # (sent, arrived, etag)
    errors: list[str] = []
    sizes: dict[str, int] = {}
    wire: dict[str, int] = {}
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
                        t1 = time.perf_counter()
                        ok = r.status_code == 200
                        size, on_wire = len(r.content), r.num_bytes_downloaded
                        etag = r.headers.get("etag", "")
                    except httpx.HTTPError as exc:
                        t1 = time.perf_counter()
                        ok, size, on_wire, etag = False, 0, 0, ""
                        r = exc
                    dt = t1 - t0
                    with lock:
                        latencies[kind].append(dt)
                        sizes[kind], wire[kind] = size, on_wire
                        if kind == "trials" and ok:
                            trials_seen.append((t0, t1, etag))
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
    first_arrival: dict[str, float] = {}
    for _, arrived, etag in trials_seen:
        first_arrival[etag] = min(arrived, first_arrival.get(etag, arrived))
    new = [
        arrived - sent
        for sent, arrived, etag in trials_seen
        if etag not in known_etags and sent < first_arrival[etag]
    ]
    out: dict[str, Any] = {
        "clients": clients,
        "seconds": wall,
        "poll_period_s": period,
        "errors": len(errors),
        "error_samples": errors[:5],
        "requests": len(everything),
        "throughput_rps": len(everything) / wall,
        "response_bytes": sizes,
        "wire_bytes": wire,
        "trials_versions": len(set(first_arrival) - set(known_etags)),
    }
    for kind, values in (("all", everything), *latencies.items(), ("trials_new", new)):
        out[kind] = {
            "n": len(values),
            "p50_ms": percentile(values, 50) * 1e3,
            "p90_ms": percentile(values, 90) * 1e3,
            "p99_ms": percentile(values, 99) * 1e3,
            "max_ms": max(values) * 1e3 if values else float("nan"),
        }
    return out


def live_phase(
    base: str,
    token: str,
    job_id: str,
    study: str,
    db_url: str,
    clients: int,
    seconds: float,
    period: float,
    live_period: float,
    known_etags: set[str],
) -> dict[str, Any]:
    """The ``poll`` load while ``bench/_study_writer.py`` changes the study."""
    writer = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_study_writer.py"), db_url, study]
        + ["--seconds", str(seconds), "--period", str(live_period)],
        cwd=ROOT / "bench",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = load_phase(base, token, job_id, clients, seconds, period, True, known_etags)
        stdout, stderr = writer.communicate(timeout=seconds + 60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    if writer.returncode != 0:
        raise RuntimeError(f"study writer failed: {stderr[-2000:]}")
    out["writer"] = json.loads(stdout.strip().splitlines()[-1])
    out["writer"]["period_s"] = live_period
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
    parser.add_argument(
        "--live-period",
        type=float,
        default=1.0,
        help="live phase: seconds between the epochs the writer adds to the study",
    )
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    repeats = args.dashboard_repeats or (2 if args.quick else 5)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    figures: dict[str, Any] = {"trials": args.trials, "epochs": args.epochs}
    with tempfile.TemporaryDirectory(prefix="relaxtune-api-load-") as tmp:
        db_url = f"sqlite:///{tmp}/api.db"
        job_id, token, study = prepare(db_url, args.trials, args.epochs)
        server = Server(db_url, Path(tmp) / "artifacts")
        try:
            figures["server_ready_s"] = server.wait_ready()
            # one request of each kind first: connection pools and lazy imports warm
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {token}"}
            ) as http:
                for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/trials"):
                    http.get(path).raise_for_status()
                known = {http.get(f"/v1/jobs/{job_id}/trials").headers["etag"]}
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
                    server.url, token, job_id, args.clients, seconds, period, spread, known
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
                ):  # the bytes as sent (compressed where the server compressed them)
                    with http.stream("GET", path) as r:
                        r.raise_for_status()
                        (floor_dir / f"{name}.body").write_bytes(b"".join(r.iter_raw()))
                        encoding = r.headers.get("content-encoding")
                    (floor_dir / f"{name}.json").write_text(
                        json.dumps({"content_encoding": encoding})
                    )
            print(
                f"live: {args.clients} clients for {seconds:.0f} s, one poll every "
                f"{args.period} s each, while a writer adds an epoch every {args.live_period} s",
                flush=True,
            )
            figures["live"] = live_phase(
                server.url,
                token,
                job_id,
                study,
                db_url,
                args.clients,
                seconds,
                args.period,
                args.live_period,
                known,
            )
        finally:
            server.stop()
        # the floor: the same load on an app that only sends the same bytes back
        floor = Server(db_url, Path(tmp), floor=floor_dir)
        try:
            floor.wait_ready()
            for phase, period, spread in PHASES:
                period = args.period if period else None
                print(f"floor {phase}: the same load on bench/_floor_app.py", flush=True)
                figures[f"floor_{phase}"] = load_phase(  # no ETag, no cache
                    floor.url, token, job_id, args.clients, seconds, period, spread, {""}
                )
        finally:
            floor.stop()

    rows = []
    phases = [p for p, _, _ in PHASES] + ["live"] + [f"floor_{p}" for p, _, _ in PHASES]
    for phase in phases:
        f = figures[phase]
        kinds = (
            ("job", "trials", "trials_new", "all")
            if f["trials_new"]["n"]
            else ("job", "trials", "all")
        )
        for kind in kinds:
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
                "requests of",
                "n",
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
    print(
        "trials_new: /trials requests sent before any response with their ETag had arrived "
        "(the study had changed: these may have missed the server's cache)"
    )
    live = figures["live"]
    w = live["writer"]
    print(
        f"live writer: {w['epochs']} epochs, {w['completed']} trials completed, "
        f"{w['created']} created (one epoch every {w['period_s']:g} s; latest write "
        f"{w['late_s_max']:.2f} s behind schedule); {live['trials_versions']} study versions "
        f"seen, {live['trials_new']['n']} of {live['trials']['n']} /trials requests new"
    )
    for phase in ("poll", "floor_poll"):
        sizes, wire = figures[phase]["response_bytes"], figures[phase]["wire_bytes"]
        print(
            f"{phase} response sizes (decoded / on the wire): job {sizes.get('job', 0)} B / "
            f"{wire.get('job', 0)} B, trials {sizes.get('trials', 0) / 1e3:.0f} kB / "
            f"{wire.get('trials', 0) / 1e3:.0f} kB"
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
        "live_p99_ms_below_50": live["all"]["p99_ms"] < GOAL_P99_MS,
        "zero_errors": all(figures[p]["errors"] == 0 for p in [p for p, _, _ in PHASES] + ["live"]),
        "dashboard_below_1_5_s": d["median_s"] < GOAL_DASHBOARD_S,
    }
    save_results("api_load", figures, args.quick)
    for phase in ("burst", "saturate", "live"):
        print(f"{phase} p99: {figures[phase]['all']['p99_ms']:.1f} ms")
    print(
        f"live p99 of the /trials requests that may have missed the cache: {live['trials_new']['p99_ms']:.1f} ms"
    )
    print(
        f"poll p99 latency, {args.clients} clients, {args.trials}-trial job: {p99:.1f} ms "
        f"(goal < {GOAL_P99_MS:.0f} ms: {'met' if p99 < GOAL_P99_MS else 'MISSED'})"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
