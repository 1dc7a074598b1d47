"""The ``adaptive`` family against the paper's recipe and θ = 0, on paired seeds, no search.

Three fixed recipes on N-body, each run a trial's training (``workers.training.train``) with
the projected model's test MSE from its checkpoint, exactly as ``bench/reproduce.py`` (whose
run and data helpers this script reuses):

* **standard**: θ = 0 throughout, the tuned-baseline optimiser of ``bench/reproduce.py``;
* **paper**: the ``paper`` preset's fixed values, the same optimiser;
* **adaptive**: ``relax.schedule: adaptive`` at its defaults (docs/METHOD.md §2), ``drop``
  projection, the same optimiser; ``--set KEY=VALUE`` changes its hyperparameters.

Each relaxed recipe is compared with ``standard`` and ``adaptive`` with ``paper`` by the
paired t interval of ``service/_gain_stats.py``::

    nice .venv/bin/python bench/adaptive_compare.py --seeds 1 2 3 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository root on sys.path)
from _common import difference_line, machine, table
from reproduce import TUNED_OPTIMISER, paper_recipe, prepare_data, run_one

SIZE = {
    "model": {"hidden": 64, "layers": 4, "vector_channels": 4},
    "data": {"train_size": 1000, "val_size": 1000, "test_size": 1000},
}
QUICK_SIZE = {
    "model": {"hidden": 16, "layers": 2, "vector_channels": 2},
    "data": {"train_size": 96, "val_size": 64, "test_size": 64},
}
RECIPES = ("standard", "paper", "adaptive")
PAIRS = (("paper", "standard"), ("adaptive", "standard"), ("adaptive", "paper"))


def recipes(overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from search_spaces import check_hparams, relaxation_off

    optimiser = TUNED_OPTIMISER["nbody"]
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], help="adaptive's KEY=VALUE")
    parser.add_argument("--json", default="bench/results/adaptive_compare.json")
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
    size = SIZE
    if args.quick:
        size, args.seeds, args.epochs = QUICK_SIZE, [1, 2], 3
        if args.json == parser.get_default("json"):
            args.json = "bench/results/adaptive_compare_quick.json"
    hparams = recipes(parse_set_overrides(args.set))
    earlier: list[dict[str, Any]] = []
    if args.also is not None:
        previous = json.loads(Path(args.also).read_text())
        kept = [n for n in RECIPES if n not in args.only]
        if previous["args"]["epochs"] != args.epochs or any(
            previous["recipes"][n] != hparams[n] for n in kept
        ):
            parser.error("--also: recorded with other recipes or epochs")
        same = previous["recipes"] == hparams  # then its other seeds join too
        earlier = [
            r
            for r in previous["figures"]["runs"]
            if r["recipe"] in kept or (same and r["seed"] not in args.seeds)
        ]
    prepare_data("nbody", size)
    print(f"adaptive_compare: N-body {size}, {args.epochs} epochs, seeds {args.seeds}")
    for name, values in hparams.items():
        print(f"  {name}: { {k: v for k, v in values.items() if k in _shown(name)} }")
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in args.seeds:
        for name in args.only:
            job = {**size, "task": "nbody", "recipe": name, "seed": seed}
            run = run_one({**job, "hparams": hparams[name], "epochs": args.epochs})
            print(f"  seed {seed} {name}: test MSE {run.get('value')}, {run['seconds']:.0f} s")
            runs.append(run)
    runs = earlier + runs
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["recipe"], r["seed"]): r.get("value") for r in runs}
    rows = [[str(s), *(f"{by[(n, s)]:.4g}" for n in RECIPES)] for s in seeds]
    print(f"\n## nbody: test MSE of the projected model, {args.epochs} epochs, seeds {seeds}")
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
