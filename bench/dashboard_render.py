"""Time ``render_dashboard`` on a large synthetic study (default: 500 trials × 8 epochs).

The study mimics a real job: trials sample optimizer and relaxation hyperparameters (the
triangular peak only under the triangular schedule), report the per-epoch records of
``docs/ARCHITECTURE.md`` as intermediate values and a ``history`` attribute, about a third are
pruned at ASHA-like rungs, a few failed and a few still run.

    .venv/bin/python bench/dashboard_render.py [--trials 500] [--epochs 8]
        [--storage sqlite|memory] [--repeat 3] [--out page.html]

The last line printed is the figure: the median render time in seconds.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.dashboard import render_dashboard  # noqa: E402

SCHEDULES = ("none", "triangular", "linear_decay", "cosine")


def _theta(schedule: str, theta_max: float, peak: float, progress: float) -> float:
    if schedule == "triangular":
        if progress <= peak:
            return theta_max * progress / peak
        return theta_max * max(0.0, (1.0 - progress) / (1.0 - peak))
    if schedule == "linear_decay":
        return theta_max * max(0.0, 1.0 - progress / 0.75)
    if schedule == "cosine":
        return theta_max * 0.5 * (1 + math.cos(math.pi * min(progress / 0.75, 1.0)))
    return 0.0


def synthetic_trials(n_trials: int, epochs: int, seed: int = 0) -> list[optuna.trial.FrozenTrial]:
    """Frozen trials shaped like a relaxtune job's trials."""
    rng = random.Random(seed)
    base = {
        "optim.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "relax.schedule": CategoricalDistribution(SCHEDULES),
        "relax.theta_max": FloatDistribution(0.05, 2.0),
        "relax.lambda_norm": FloatDistribution(0.0, 1.0),
        "relax.layer_decay": FloatDistribution(0.5, 1.0),
    }
    rungs = {1, 2, 4}
    trials = []
    for number in range(n_trials):
        params: dict[str, Any] = {
            "optim.lr": math.exp(rng.uniform(math.log(1e-4), math.log(1e-2))),
            "relax.schedule": rng.choice(SCHEDULES),
            "relax.theta_max": rng.uniform(0.05, 2.0),
            "relax.lambda_norm": rng.uniform(0.0, 1.0),
            "relax.layer_decay": rng.uniform(0.5, 1.0),
        }
        distributions = dict(base)
        if params["relax.schedule"] == "triangular":
            params["relax.peak"] = rng.uniform(0.2, 0.8)
            distributions["relax.peak"] = FloatDistribution(0.2, 0.8)
        quality = rng.uniform(0.6, 0.98)
        roll = rng.random()
        if number >= n_trials - 4:
            state, n_epochs = TrialState.RUNNING, rng.randint(1, epochs - 1)
        elif roll < 0.03:
            state, n_epochs = TrialState.FAIL, rng.randint(0, epochs - 1)
        elif roll < 0.35:
            state, n_epochs = TrialState.PRUNED, rng.choice(sorted(r for r in rungs if r < epochs))
        else:
            state, n_epochs = TrialState.COMPLETE, epochs
        history = []
        for epoch in range(1, n_epochs + 1):
            progress = epoch / epochs
            theta = _theta(
                params["relax.schedule"],
                params["relax.theta_max"],
                params.get("relax.peak", 0.5),
                progress,
            )
            val_projected = quality * (1 - math.exp(-3 * progress)) - 0.1 * theta
            history.append(
                {
                    "epoch": epoch,
                    "progress": progress,
                    "theta": theta,
                    "val_projected": val_projected,
                    "val_relaxed": val_projected + 0.08 * theta,
                    "train_loss": 2.3 * math.exp(-2 * progress) + rng.uniform(0, 0.05),
                    "penalty_lie": 0.0,
                    "penalty_norm": params["relax.lambda_norm"] * theta,
                    "penalty_proj": 0.01 * theta,
                    "equivariance_error_relaxed": max(theta, 1e-3) * rng.uniform(0.05, 0.2),
                    "equivariance_error_projected": rng.uniform(1e-7, 5e-7),
                    "epoch_seconds": rng.uniform(8, 12),
                }
            )
        user_attrs: dict[str, Any] = {"history": history}
        value = None
        if state == TrialState.COMPLETE:
            last = history[-1]
            value = last["val_projected"]
            user_attrs.update(
                {
                    "val_projected": value,
                    "val_relaxed": last["val_relaxed"],
                    "equivariance_error_relaxed": last["equivariance_error_relaxed"],
                    "equivariance_error_projected": last["equivariance_error_projected"],
                    "final_theta": last["theta"],
                    "checkpoint": f"artifacts/jobs/bench/trials/{number}",
                }
            )
        trials.append(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params=params,
                distributions=distributions,
                user_attrs=user_attrs,
                intermediate_values={h["epoch"]: h["val_projected"] for h in history},
            )
        )
    return trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--storage", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the page here")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/bench.db" if args.storage == "sqlite" else None
        started = time.perf_counter()
        study = optuna.create_study(study_name="job-bench", storage=storage, direction="maximize")
        study.add_trials(synthetic_trials(args.trials, args.epochs))
        print(
            f"built {args.trials} trials in {args.storage}: {time.perf_counter() - started:.2f} s"
        )
        job = {
            "id": "bench",
            "name": "bench: rotmnist-c8",
            "status": "running",
            "progress": {"completed": args.trials - 4, "total": args.trials},
            "spec": {"objective": {"metric": "val_accuracy", "mode": "max"}},
        }
        times = []
        page = ""
        # The first render in a process also imports scikit-learn (Optuna's fANOVA) unless
        # warm_up() ran; it is reported apart from the steady-state figure.
        for _ in range(max(args.repeat, 1) + 1):
            if storage is not None:
                # A fresh handle per render, as the API opens one per request: the trials
                # are read from the database every time.
                study = optuna.load_study(study_name="job-bench", storage=storage)
            started = time.perf_counter()
            page = render_dashboard(study, job)
            times.append(time.perf_counter() - started)
        cold, times = times[0], times[1:]
        print(f"first render in this process (cold imports): {cold:.3f} s")
        print("render times (s): " + ", ".join(f"{t:.3f}" for t in times))
        print(f"page size: {len(page) / 1e6:.2f} MB")
        if args.out is not None:
            args.out.write_text(page, encoding="utf-8")
            print(f"wrote {args.out}")
        print(
            f"dashboard render, {args.trials} trials x {args.epochs} epochs ({args.storage}): "
            f"{statistics.median(times):.3f} s"
        )


if __name__ == "__main__":
    main()
