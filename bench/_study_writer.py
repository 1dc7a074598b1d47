"""The live writer of ``bench/api_load.py``: a job's study that keeps changing under the load.

Writes into an existing Optuna study what a running search writes, at a fixed rate: every
``--period`` seconds one epoch of one of ``--concurrent`` running trials (its intermediate
value and its whole ``history`` user attribute, rewritten as the search driver does); a trial
that reaches ``--epochs`` is told COMPLETE with its final attributes and a new RUNNING trial
takes its place. Trial contents come from ``dashboard_render.synthetic_trials``.

    python bench/_study_writer.py DB_URL STUDY --seconds 30 [--period 1] [--epochs 8]

Runs in its own process so the load generator's threads do not share its interpreter; prints
one JSON line (what it wrote, and how late its writes ran) when its time is up.
"""

from __future__ import annotations

import argparse
import json
import time

import _common  # noqa: F401  (puts the repository root on sys.path)
import optuna
from dashboard_render import synthetic_trials
from optuna.trial import TrialState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db_url")
    parser.add_argument("study")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--period", type=float, default=1.0, help="seconds between epochs")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--concurrent", type=int, default=2)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(args.db_url)
    study = optuna.load_study(
        study_name=args.study, storage=storage, sampler=optuna.samplers.RandomSampler(seed=1)
    )
    templates = [
        t for t in synthetic_trials(200, args.epochs, seed=1) if t.state == TrialState.COMPLETE
    ]
    running: list[tuple[optuna.Trial, optuna.trial.FrozenTrial, int]] = []
    counts = {"epochs": 0, "completed": 0, "created": 0, "late_s_max": 0.0}

    def start_trial() -> None:
        template = templates[counts["created"] % len(templates)]
        running.append((study.ask(template.distributions), template, 0))
        counts["created"] += 1

    for _ in range(args.concurrent):
        start_trial()
    started = time.perf_counter()
    tick = 0
    while True:
        due = started + tick * args.period
        now = time.perf_counter()
        if due - started >= args.seconds:
            break
        if due > now:
            time.sleep(due - now)
        else:
            counts["late_s_max"] = max(counts["late_s_max"], now - due)
        trial, template, done = running.pop(0)
        history = template.user_attrs["history"][: done + 1]
        trial.report(history[-1]["val_projected"], done + 1)
        trial.set_user_attr("history", history)
        counts["epochs"] += 1
        if done + 1 < args.epochs:
            running.append((trial, template, done + 1))
        else:
            for key, value in template.user_attrs.items():
                if key != "history":
                    trial.set_user_attr(key, value)
            study.tell(trial, history[-1]["val_projected"])
            counts["completed"] += 1
            start_trial()
        tick += 1
    storage.engine.dispose()
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
