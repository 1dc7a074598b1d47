"""Reproduction: standard equivariant training against the paper's recipe, on paired seeds.

Two fixed recipes per task, no search:

* **standard**: θ = 0 throughout (``relax.schedule: none``) with the tuned-baseline optimiser
  (the best optimiser of the ``baseline`` preset's search on that task, ``TUNED_OPTIMISER``);
* **paper**: every fixed value of the ``paper`` preset (``search_spaces/presets/paper.yaml``,
  read at run time, so the recipe follows the preset) with the *same* optimiser.

The two recipes differ only by the relaxation (:func:`search_spaces.relaxation_off` of the
paper recipe is the standard one). Each run goes through the training path of a trial
(:class:`workers.training.TrialConfig` → :func:`workers.training.train`, which writes the
checkpoint folder of the projected model), and the compared figure is the one a gain report
records: the projected model's test metric from that checkpoint's ``metrics.json``
(rotated MNIST: test error, 1 − accuracy; N-body: test MSE; lower is better for both).
For each seed both recipes use the same seed (same initialisation, same data, same batch
order), so each seed gives one pair; the paired difference ``paper − standard`` gets the
gain report's 95 % paired t interval (``service/_gain_stats.py``).

Sizes (full run; ``--epochs-nbody`` / ``--epochs-mnist`` change the lengths):

* N-body: the task's default EGNN (hidden 64, 4 layers, 4 vector channels) on 3000 / 2000 /
  2000 systems (the paper's 3000 training systems), ``EPOCHS["nbody"]`` epochs: what fits in
  about 30 minutes for the 2 × 5 runs on 2 cores (two runs at a time, one thread each).
* rotated MNIST: C8 steerable CNN, width 8, depth 3, on 3000 / 1000 / 1000 digits (the whole
  embedded 5000-digit set), ``EPOCHS["rotated_mnist"]`` epochs.

    .venv/bin/python bench/reproduce.py                  # both tasks, seeds 1-5, 2 workers
    .venv/bin/python bench/reproduce.py --tasks nbody --seeds 1 2 3 4 5 6 7 8
    .venv/bin/python bench/reproduce.py --quick          # tiny sizes, 2 seeds, about a minute

Results are printed as Markdown tables and saved to ``bench/results/reproduce[_quick].json``
(or ``--json PATH``).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository root on sys.path)
from _common import difference_line, machine, save_results, table

TASKS = ("nbody", "rotated_mnist")
RECIPES = ("standard", "paper")

#: The tuned-baseline optimiser per task: the best trial of the ``baseline`` preset's search
#: (``bench/search_quality.py --seeds 5``, ``bench/results/search_quality_5seeds.json``:
#: rotated MNIST trial #1, N-body trial #3).
TUNED_OPTIMISER: dict[str, dict[str, Any]] = {
    "rotated_mnist": {
        "optim.lr": 1.9578897201213002e-3,
        "optim.weight_decay": 5.627932047415171e-5,
        "optim.batch_size": 64,
    },
    "nbody": {
        "optim.lr": 4.403556142157407e-4,
        "optim.weight_decay": 7.934499040337e-3,
        "optim.batch_size": 32,
    },
}

#: Epochs of the full run: as many as fit in about 30 minutes per task for its 2 × 5 runs on
#: 2 cores, two runs at a time on one thread each. Measured with two runs in parallel (load
#: average about 1.5 from other work), an epoch including its validation took: N-body 2.0 s
#: (standard) and 3.5 s (paper), so 5 × 120 × 5.5 s / 2 ≈ 27 min; rotated MNIST 26 s and 31 s,
#: so 5 × 12 × 57 s / 2 ≈ 28 min. A busier machine takes proportionally longer.
EPOCHS: dict[str, int] = {"nbody": 120, "rotated_mnist": 12}

SIZES: dict[str, dict[str, Any]] = {
    "nbody": {
        "model": {"hidden": 64, "layers": 4, "vector_channels": 4},
        "data": {"train_size": 3000, "val_size": 2000, "test_size": 2000},
    },
    "rotated_mnist": {
        "model": {"group": "C8", "width": 8, "depth": 3},
        "data": {"train_size": 3000, "val_size": 1000, "test_size": 1000},
    },
}

QUICK_SIZES: dict[str, dict[str, Any]] = {
    "nbody": {
        "model": {"hidden": 16, "layers": 2, "vector_channels": 2},
        "data": {"train_size": 96, "val_size": 64, "test_size": 64},
    },
    "rotated_mnist": {
        "model": {"group": "C4", "width": 4, "depth": 2, "head_hidden": 16},
        "data": {"train_size": 640, "val_size": 64, "test_size": 200},
    },
}
QUICK_EPOCHS = 3
QUICK_SEEDS = [1, 2]

#: What is compared, per task: its name and how to read it from ``metrics.json``.
QUANTITY = {"nbody": "test MSE", "rotated_mnist": "test error"}


def paper_recipe() -> dict[str, Any]:
    """The ``paper`` preset's fixed values (its searched optimiser left out)."""
    from search_spaces import FixedParam, load_preset

    return {k: p.value for k, p in load_preset("paper").params.items() if isinstance(p, FixedParam)}


def recipes(task: str) -> dict[str, dict[str, Any]]:
    """Complete, checked hyperparameters of both recipes for ``task``."""
    from search_spaces import check_hparams, relaxation_off

    paper = check_hparams({**paper_recipe(), **TUNED_OPTIMISER[task]}, field="paper")
    return {"standard": check_hparams(relaxation_off(paper), field="standard"), "paper": paper}


def compared_value(task: str, metrics: dict[str, Any]) -> float:
    """Test error (1 − accuracy) for rotated MNIST, test MSE for N-body (lower is better)."""
    if task == "rotated_mnist":
        return 1.0 - float(metrics["test_accuracy"])
    return float(metrics["test_mse"])


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one recipe on one seed through the trial's training path; never raises for a
    diverged run (it is reported and left out of the statistics)."""
    import json

    import torch

    from workers.training import TrialConfig, TrialDivergedError, train

    torch.set_num_threads(1)
    config = TrialConfig(
        task=job["task"],
        model=job["model"],
        data=job["data"],
        hparams=job["hparams"],
        epochs=job["epochs"],
        seed=job["seed"],
        device="cpu",
    )
    out: dict[str, Any] = {k: job[k] for k in ("task", "recipe", "seed", "epochs")}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="relaxtune-reproduce-") as tmp:
        try:
            result = train(config, out_dir=Path(tmp) / "model")
        except TrialDivergedError as exc:
            out.update(value=None, diverged=str(exc), seconds=time.perf_counter() - started)
            return out
        certificate = json.loads((Path(tmp) / "model" / "certificate.json").read_text())
    metrics = result.metrics
    history = metrics.get("history") or []
    out.update(
        value=compared_value(job["task"], metrics),
        val=metrics.get(f"val_{'accuracy' if job['task'] == 'rotated_mnist' else 'mse'}"),
        final_theta=metrics.get("final_theta"),
        max_theta=max((h.get("theta", 0.0) for h in history), default=0.0),
        tail_epochs_at_zero=_tail_at_zero(history),
        certificate_max_error=certificate.get("max_error_exact"),
        certificate_passed=certificate.get("passed"),
        seconds=time.perf_counter() - started,
    )
    return out


def _tail_at_zero(history: list[dict[str, Any]]) -> int:
    """Trailing epochs trained entirely at θ = 0: an epoch's θ runs from the previous
    report's θ to its own (each report holds θ at the end of its epoch)."""
    thetas = [0.0] + [float(h.get("theta", 0.0)) for h in history]
    count = 0
    for start, end in zip(reversed(thetas[:-1]), reversed(thetas[1:]), strict=True):
        if start != 0.0 or end != 0.0:
            break
        count += 1
    return count


def prepare_data(task: str, cfg: dict[str, Any]) -> None:
    """Build (and cache) the task's data once, before the workers start."""
    from workers.tasks import build_task

    build_task(task, cfg["model"], cfg["data"]).build_data(0)


def _fmt(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def summarise(task: str, runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Per-seed pairs, per-recipe summaries and the paired interval of ``paper − standard``,
    printed as a table and returned as data."""
    from service._gain_stats import paired_difference, summarize, verdict

    by = {(r["recipe"], r["seed"]): r for r in runs if r["task"] == task}
    rows, pairs = [], []
    for seed in seeds:
        std, pap = by[("standard", seed)], by[("paper", seed)]
        a, b = std.get("value"), pap.get("value")
        if a is not None and b is not None:
            pairs.append((seed, a, b))
        diff = None if a is None or b is None else b - a
        rows.append([str(seed), _fmt(a), _fmt(b), _fmt(diff)])
    standard = [a for _, a, _ in pairs]
    paper = [b for _, _, b in pairs]
    differences = [b - a for _, a, b in pairs]
    arms = {"standard": summarize(standard), "paper": summarize(paper)}
    diff_summary = summarize(differences)
    for stat in ("mean", "median", "std"):
        rows.append(
            [
                stat,
                _fmt(getattr(arms["standard"], stat)),
                _fmt(getattr(arms["paper"], stat)),
                _fmt(getattr(diff_summary, stat)),
            ]
        )
    quantity = QUANTITY[task]
    print(
        table(["seed", f"standard ({quantity})", f"paper ({quantity})", "paper − standard"], rows)
    )
    out: dict[str, Any] = {
        "quantity": quantity,
        "pairs": [{"seed": s, "standard": a, "paper": b} for s, a, b in pairs],
        "diverged": [
            {"recipe": r["recipe"], "seed": r["seed"], "reason": r["diverged"]}
            for r in runs
            if r["task"] == task and r.get("diverged")
        ],
        "arms": {k: v.as_dict() for k, v in arms.items()},
        "difference": None,
        "verdict": None,
    }
    for d in out["diverged"]:
        print(
            f"diverged (left out of the statistics): {d['recipe']} seed {d['seed']}: {d['reason']}"
        )
    if len(pairs) >= 2:
        difference = paired_difference(paper, standard, "lower")
        out["difference"] = difference.as_dict()
        out["verdict"] = verdict(difference, "lower", quantity).replace(
            "relaxation", "the paper recipe", 1
        )
        print(
            f"paired difference paper − standard over {difference.n} seeds: "
            + difference_line(difference, "paper", "the standard mean")
        )
        print(out["verdict"])
    else:
        print(f"fewer than 2 complete pairs ({len(pairs)}): no interval")
    paper_runs = [
        r
        for r in runs
        if r["task"] == task and r["recipe"] == "paper" and r.get("value") is not None
    ]
    if paper_runs:
        print(
            "paper runs: highest θ at an epoch's end {:.3g}, last epochs trained at θ = 0: {}, "
            "projected-model certificate max error {:.2g} ({})".format(
                max(r["max_theta"] for r in paper_runs),
                sorted({r["tail_epochs_at_zero"] for r in paper_runs}),
                max(r["certificate_max_error"] for r in paper_runs),
                "all passed"
                if all(r["certificate_passed"] for r in paper_runs)
                else "NOT all passed",
            )
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--epochs-nbody", type=int, default=EPOCHS["nbody"])
    parser.add_argument("--epochs-mnist", type=int, default=EPOCHS["rotated_mnist"])
    parser.add_argument(
        "--workers", type=int, default=2, help="runs at a time (1: in this process)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="data cache folder (default: the tasks' own)"
    )
    parser.add_argument(
        "--json", default=None, help="where to save the results (default bench/results/)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny models and data, {QUICK_EPOCHS} epochs, seeds {QUICK_SEEDS}",
    )
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    epochs = {"nbody": args.epochs_nbody, "rotated_mnist": args.epochs_mnist}
    if args.quick:
        args.seeds = QUICK_SEEDS
        epochs = dict.fromkeys(TASKS, QUICK_EPOCHS)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds: each seed once")

    jobs = []
    for task in args.tasks:
        cfg = {"model": dict(sizes[task]["model"]), "data": dict(sizes[task]["data"])}
        if args.cache_dir is not None:
            cfg["data"]["cache_dir"] = str(Path(args.cache_dir) / task)
        prepare_data(task, cfg)
        for seed in args.seeds:
            for recipe, hparams in recipes(task).items():
                jobs.append(
                    {
                        **cfg,
                        "task": task,
                        "recipe": recipe,
                        "seed": seed,
                        "hparams": hparams,
                        "epochs": epochs[task],
                    }
                )
    print(f"reproduce: {len(jobs)} runs, {args.workers} at a time; seeds {args.seeds}")
    print(f"  paper recipe (the paper preset's fixed values): {paper_recipe()}")
    for task in args.tasks:
        print(
            f"  {task}: {sizes[task]['model']}, {sizes[task]['data']}, {epochs[task]} epochs; "
            f"optimiser of both recipes {TUNED_OPTIMISER[task]}"
        )
    started = time.perf_counter()
    if args.workers <= 1:
        import torch

        threads = torch.get_num_threads()
        try:
            runs = [run_one(job) for job in jobs]
        finally:
            torch.set_num_threads(threads)  # run_one trains on one thread, like a worker
    else:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            runs = pool.map(run_one, jobs, chunksize=1)
    wall = time.perf_counter() - started

    figures: dict[str, Any] = {"args": vars(args), "epochs": epochs, "sizes": sizes, "tasks": {}}
    for task in args.tasks:
        print(
            f"\n## {task}: {QUANTITY[task]} of the projected model, {epochs[task]} epochs, seeds {args.seeds}"
        )
        figures["tasks"][task] = {
            "recipes": recipes(task),
            "runs": [r for r in runs if r["task"] == task],
            **summarise(task, runs, args.seeds),
        }
        seconds = [r["seconds"] for r in runs if r["task"] == task]
        print(f"seconds per run: mean {statistics.fmean(seconds):.1f}, max {max(seconds):.1f}")
    figures["wall_seconds"] = wall
    print(f"\ntotal wall time {wall / 60:.1f} min ({args.workers} at a time)")
    if args.json is not None:
        import json

        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "reproduce",
            "quick": args.quick,
            "machine": machine(),
            "figures": figures,
        }
        path.write_text(json.dumps(_common._clean(payload), indent=2) + "\n")
        print(f"saved {path}")
    else:
        save_results("reproduce", figures, quick=args.quick)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
