"""The ``adaptive`` family against the paper's recipe and θ = 0, on paired seeds, no search.

Three fixed recipes on one task (``--task``: N-body, the default, or rotated MNIST), each run
a trial's training (``workers.training.train``) with the projected model's test metric from
its checkpoint (N-body: test MSE; rotated MNIST: test error), exactly as
``bench/reproduce.py`` (whose run and data helpers this script reuses):

* **standard**: θ = 0 throughout, the task's tuned-baseline optimiser of ``bench/reproduce.py``;
* **paper**: the ``paper`` preset's fixed values, the same optimiser;
* **adaptive**: ``relax.schedule: adaptive`` at its defaults (docs/METHOD.md §2), ``drop``
  projection, the same optimiser; ``--set KEY=VALUE`` changes its hyperparameters.

Each relaxed recipe is compared with ``standard`` and ``adaptive`` with ``paper`` by the
paired t interval of ``service/_gain_stats.py``::

    nice .venv/bin/python bench/adaptive_compare.py --seeds 1 2 3 --epochs 20
    nice .venv/bin/python bench/adaptive_compare.py --task rotated_mnist --seeds 1 2 3 4 5

Sizes (``SIZES``; ``--quick``: ``bench/reproduce.py``'s tiny ones): N-body as there, 20
epochs by default; rotated MNIST the C8 steerable CNN (width 8, depth 3) on 2000 / 1000 /
1000 digits, 6 epochs by default: the sizes of ``bench/search_quality.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository root on sys.path)
from _common import difference_line, machine, table
from reproduce import (
    QUANTITY,
    QUICK_SIZES,
    TUNED_OPTIMISER,
    paper_recipe,
    prepare_data,
    run_one,
)

TASKS = ("nbody", "rotated_mnist")
SIZES: dict[str, dict[str, Any]] = {
    "nbody": {
        "model": {"hidden": 64, "layers": 4, "vector_channels": 4},
        "data": {"train_size": 1000, "val_size": 1000, "test_size": 1000},
    },
    "rotated_mnist": {
        "model": {"group": "C8", "width": 8, "depth": 3},
        "data": {"train_size": 2000, "val_size": 1000, "test_size": 1000},
    },
}
EPOCHS = {"nbody": 20, "rotated_mnist": 6}
RECIPES = ("standard", "paper", "adaptive")
PAIRS = (("paper", "standard"), ("adaptive", "standard"), ("adaptive", "paper"))


def recipes(overrides: dict[str, Any], task: str = "nbody") -> dict[str, dict[str, Any]]:
    from search_spaces import check_hparams, relaxation_off

    optimiser = TUNED_OPTIMISER[task]
    paper = check_hparams({**paper_recipe(), **optimiser}, field="paper")
    adaptive = check_hparams(
        {"relax.schedule": "adaptive", "relax.projection": "drop", **optimiser, **overrides},
        field="adaptive",
    )
    return {
        "standard": check_hparams(relaxation_off(paper), field="standard"),
        "paper": paper,
        "adaptive": adaptive,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from search_spaces import parse_set_overrides
    from service._gain_stats import paired_difference

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=TASKS, default="nbody")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--epochs", type=int, default=None, help="default: N-body 20, rotated MNIST 6"
    )
    parser.add_argument("--set", action="append", default=[], help="adaptive's KEY=VALUE")
    parser.add_argument(
        "--json",
        default=None,
        help="default bench/results/adaptive_compare[_rotated_mnist][_quick].json",
    )
    parser.add_argument(
        "--also",
        default=None,
        help="a previous results file of the same recipes and epochs: its runs (other seeds, "
        "or the recipes --only leaves out) join the statistics",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=RECIPES,
        default=list(RECIPES),
        help="train only these recipes (the others come from --also)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny model and data, 3 epochs, seeds 1 and 2"
    )
    args = parser.parse_args(argv)
    size = SIZES[args.task]
    if args.epochs is None:
        args.epochs = EPOCHS[args.task]
    if args.quick:
        size, args.seeds, args.epochs = QUICK_SIZES[args.task], [1, 2], 3
    if args.json is None:
        suffix = ("" if args.task == "nbody" else f"_{args.task}") + ("_quick" if args.quick else "")
        args.json = f"bench/results/adaptive_compare{suffix}.json"
    hparams = recipes(parse_set_overrides(args.set), args.task)
    quantity = QUANTITY[args.task]
    earlier: list[dict[str, Any]] = []
    if args.also is not None:
        previous = json.loads(Path(args.also).read_text())
        kept = [n for n in RECIPES if n not in args.only]
        recorded = previous["args"]
        if (
            recorded.get("task", "nbody") != args.task
            or recorded["epochs"] != args.epochs
            or any(previous["recipes"][n] != hparams[n] for n in kept)
        ):
            parser.error("--also: recorded on another task, or with other recipes or epochs")
        same = previous["recipes"] == hparams  # then its other seeds join too
        earlier = [
            r
            for r in previous["figures"]["runs"]
            if r["recipe"] in kept or (same and r["seed"] not in args.seeds)
        ]
    prepare_data(args.task, size)
    print(f"adaptive_compare: {args.task} {size}, {args.epochs} epochs, seeds {args.seeds}")
    for name, values in hparams.items():
        print(f"  {name}: { {k: v for k, v in values.items() if k in _shown(name)} }")
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in args.seeds:
        for name in args.only:
            job = {**size, "task": args.task, "recipe": name, "seed": seed}
            run = run_one({**job, "hparams": hparams[name], "epochs": args.epochs})
            print(f"  seed {seed} {name}: {quantity} {run.get('value')}, {run['seconds']:.0f} s")
            runs.append(run)
    runs = earlier + runs
    by = {(r["recipe"], r["seed"]): r.get("value") for r in runs}
    for r in runs:
        if r.get("diverged"):
            print(f"  left out: seed {r['seed']} {r['recipe']} diverged: {r['diverged']}")
    # a seed counts when every recipe finished on it (the pairs stay paired)
    seeds = sorted(
        {r["seed"] for r in runs}
        - {r["seed"] for r in runs if r.get("value") is None}
    )
    rows = [[str(s), *(f"{by[(n, s)]:.4g}" for n in RECIPES)] for s in seeds]
    print(
        f"\n## {args.task}: {quantity} of the projected model, {args.epochs} epochs, "
        f"seeds {seeds}"
    )
    print(table(["seed", *RECIPES], rows))
    out: dict[str, Any] = {"runs": runs, "differences": {}}
    for a, b in PAIRS:
        diff = paired_difference([by[(a, s)] for s in seeds], [by[(b, s)] for s in seeds], "lower")
        out["differences"][f"{a} - {b}"] = diff.as_dict()
        print(f"{a} − {b}: " + difference_line(diff, a, b))
    wall = time.perf_counter() - started
    print(f"total wall time {wall / 60:.1f} min (one run at a time)")
    payload = {
        "benchmark": "adaptive_compare",
        "machine": machine(),
        "args": vars(args),
        "size": size,
        "recipes": hparams,
        "figures": out,
        "wall_seconds": wall,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_common._clean(payload), indent=2) + "\n")
    print(f"saved {path}")
    return out


def _shown(name: str) -> set[str]:
    keys = {"relax.schedule", "optim.lr", "optim.weight_decay", "optim.batch_size"}
    if name == "paper":
        keys |= {"relax.theta_max", "relax.lambda_norm", "relax.penalty_form"}
    if name == "adaptive":
        keys |= {
            "relax.gamma_init",
            "relax.strength_lr",
            "relax.dual_lr",
            "relax.dual_optimism",
            "relax.free_lr_mult",
        }
    return keys


if __name__ == "__main__":
    main()
