"""Search quality: the same trial budget for the ``baseline``, ``paper``, ``relax`` and
``adaptive`` presets, then the test metric of each search's best configuration retrained with
new seeds, and the same configuration with the relaxation off (the ablation).

Per task and preset, a job spec (same task, data, budget, ASHA settings and seed; only
``search_space`` differs) is searched with ``service.search.run_search`` on a temporary
SQLite database. Each search's gain report (``service.report.run_report``, what
``report: {seeds: K}`` runs in the service) then retrains the best configuration on the
report seeds as Ray trials, as found (the retraining line) and with the relaxation off (the
ablation line, for presets whose best relaxes), each run's projected model's TEST metric
measured once; the report's paired interval and verdict are printed per preset.

Rotated MNIST reports the test error (1 − accuracy), N-body the test MSE; the relative
improvement of ``relax`` over ``baseline`` is ``(baseline − relax) / baseline`` (goals: ≥ 15%
on rotated MNIST, ≥ 20% on N-body, with a smaller seed std).

    .venv/bin/python bench/search_quality.py [--quick] [--tasks rotated_mnist,nbody]
        [--seeds 3] [--workers 2]

Retraining seeds are the report's fixed seeds (1000, 1001, …; the searches train with seed 0).

The last line printed is the rotated-MNIST relative test-error improvement of relax over
baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository root on sys.path)
from _common import difference_line, mean_std, save_results, table

PRESETS = ("baseline", "paper", "relax", "adaptive")
GOALS = {"rotated_mnist": 0.15, "nbody": 0.20}

#: the Lie-derivative penalty applies to continuous groups: added to relax for N-body, as
#: in search_spaces/examples/nbody.yaml
NBODY_RELAX = {
    "preset": "relax",
    "override": {"relax.lambda_lie": {"type": "float", "low": 1.0e-5, "high": 1.0, "log": True}},
}


def sizes(quick: bool) -> dict[str, dict[str, Any]]:
    """Model, data and budget per task (full, four presets: about 25 minutes in all on 2 cores)."""
    if quick:
        return {
            "rotated_mnist": {
                "model": {"group": "C4", "width": 4, "depth": 2},
                "data": {"train_size": 200, "val_size": 100, "test_size": 200},
                "budget": {"trials": 2, "epochs": 2, "max_concurrent": 2},
                "asha": {"grace_period": 1, "reduction_factor": 2},
            },
            "nbody": {
                "model": {"hidden": 16, "layers": 2},
                "data": {"train_size": 100, "val_size": 100, "test_size": 100},
                "budget": {"trials": 2, "epochs": 2, "max_concurrent": 2},
                "asha": {"grace_period": 1, "reduction_factor": 2},
            },
        }
    return {
        "rotated_mnist": {
            "model": {"group": "C8", "width": 8, "depth": 3},
            "data": {"train_size": 2000, "val_size": 1000, "test_size": 1000},
            "budget": {"trials": 8, "epochs": 6, "max_concurrent": 2},
            "asha": {"grace_period": 2, "reduction_factor": 2},
        },
        "nbody": {
            "model": {"hidden": 64, "layers": 4},
            "data": {"train_size": 1000, "val_size": 500, "test_size": 1000},
            "budget": {"trials": 8, "epochs": 15, "max_concurrent": 2},
            "asha": {"grace_period": 5, "reduction_factor": 2},
        },
    }


def make_spec(task: str, preset: str, cfg: dict[str, Any]) -> dict[str, Any]:
    metric, mode = ("val_accuracy", "max") if task == "rotated_mnist" else ("val_mse", "min")
    space: Any = NBODY_RELAX if (task == "nbody" and preset == "relax") else preset
    return {
        "name": f"bench-{task}-{preset}",
        "task": task,
        "model": cfg["model"],
        "data": cfg["data"],
        "search_space": space,
        "budget": cfg["budget"],
        "objective": {"metric": metric, "mode": mode},
        "resources": {"cpu": 1, "gpu": 0},
        "scheduler": "asha",
        "asha": cfg["asha"],
        "seed": 0,
    }


def test_error(task: str, metrics: dict[str, Any]) -> float:
    """What is compared: test error (1 − accuracy) or test MSE, of the projected model."""
    if task == "rotated_mnist":
        return 1.0 - float(metrics["test_accuracy"])
    return float(metrics["test_mse"])


def search(
    task: str, preset: str, cfg: dict[str, Any], db_url: str, artifacts: Path, workers: int
) -> dict[str, Any]:
    from search_spaces import parse_spec
    from service.search import run_search

    spec = parse_spec(make_spec(task, preset, cfg))
    started = time.perf_counter()
    result = run_search(spec, f"bench-{task}-{preset}", db_url, artifacts, num_cpus=workers)
    seconds = time.perf_counter() - started
    best = result["best"]
    return {
        "seconds": seconds,
        "progress": result["progress"],
        "best_trial": best["trial"],
        "best_val": best["value"],
        "best_params": best["params"],
        "search_seed_test": test_error(task, best["metrics"]),
    }


def gain_report(
    task: str,
    preset: str,
    cfg: dict[str, Any],
    n_seeds: int,
    db_url: str,
    artifacts: Path,
    workers: int,
) -> dict[str, Any]:
    """The searched job's gain report: its best configuration retrained on ``n_seeds`` report
    seeds, as found and with the relaxation off (``service.report.run_report``)."""
    from search_spaces import parse_spec
    from service.report import run_report

    spec = parse_spec({**make_spec(task, preset, cfg), "report": {"seeds": n_seeds}})
    started = time.perf_counter()
    out = run_report(spec, f"bench-{task}-{preset}", db_url, artifacts, num_cpus=workers)
    report = out["report"]
    report["seconds"] = time.perf_counter() - started
    return report


def run_task(
    task: str,
    cfg: dict[str, Any],
    presets: tuple[str, ...],
    n_seeds: int,
    workers: int,
    tmp: Path,
) -> dict[str, Any]:
    db_url = f"sqlite:///{tmp}/{task}.db"
    out: dict[str, Any] = {"config": cfg, "seeds": [], "presets": {}}
    for preset in presets:
        print(
            f"[{time.strftime('%H:%M:%S')}] {task}: searching {preset} "
            f"({cfg['budget']['trials']} trials x {cfg['budget']['epochs']} epochs)",
            flush=True,
        )
        try:
            out["presets"][preset] = search(task, preset, cfg, db_url, tmp / "artifacts", workers)
        except Exception as exc:  # report what happened and go on with the other presets
            print(f"  {preset} search failed: {type(exc).__name__}: {exc}", flush=True)
            out["presets"][preset] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        r = out["presets"][preset]
        print(
            f"  best trial #{r['best_trial']} val {r['best_val']:.4f} in {r['seconds']:.0f}s; "
            f"{r['progress']}",
            flush=True,
        )
        print(f"  params: {json.dumps(r['best_params'], sort_keys=True)}", flush=True)
    # every preset's gain report: the best retrained on the report seeds, both arms
    for preset in presets:
        p = out["presets"][preset]
        if "best_params" not in p:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {task}: gain report of {preset}", flush=True)
        report = gain_report(task, preset, cfg, n_seeds, db_url, tmp / "artifacts", workers)
        p["report"] = report
        p["retrain"] = [
            {"seed": r["seed"], "test": r["as_found"]}
            for r in report["runs"]
            if r["as_found"] is not None
        ]
        p["ablation"] = [
            {"seed": r["seed"], "test": r["relaxation_off"]}
            for r in report["runs"]
            if r["relaxation_off"] is not None
        ]
        for r in report["runs"]:
            off = r["relaxation_off"]
            print(
                f"  {preset} seed {r['seed']}: test {r['as_found']}"
                + (f", relaxation off {off}" if off is not None else ""),
                flush=True,
            )
        print(f"  {report['verdict']} ({report['seconds']:.0f}s)", flush=True)
        out["seeds"] = report["seeds"]
    for preset in presets:
        p = out["presets"][preset]
        if p.get("retrain"):
            p["test_mean"], p["test_std"] = mean_std([r["test"] for r in p["retrain"]])
        if p.get("ablation"):
            p["ablation_mean"], p["ablation_std"] = mean_std([r["test"] for r in p["ablation"]])
    return out


def summarise(task: str, result: dict[str, Any]) -> tuple[str, float | None]:
    """The task's table and paired lines, over the presets it searched (baseline first)."""
    what = "test error (1 - accuracy)" if task == "rotated_mnist" else "test MSE"
    rows = []
    presets = result["presets"]
    for preset in presets:
        p = presets[preset]
        if "test_mean" not in p:
            rows.append([preset, "failed", "-", "-", "-", "-", "-", "-", p.get("error", "")])
            continue
        rows.append(
            [
                preset,
                p["best_val"],
                p["search_seed_test"],
                p["test_mean"],
                p["test_std"],
                statistics.median(r["test"] for r in p["retrain"]),
                ", ".join(f"{r['test']:.4g}" for r in p["retrain"]),
                p.get("ablation_mean", "-"),
                p["report"]["verdict"],
            ]
        )
    improvement = None
    if "test_mean" in presets["baseline"] and "test_mean" in presets.get("relax", {}):
        base, relax = presets["baseline"]["test_mean"], presets["relax"]["test_mean"]
        improvement = (base - relax) / base
        med_b = statistics.median(r["test"] for r in presets["baseline"]["retrain"])
        med_r = statistics.median(r["test"] for r in presets["relax"]["retrain"])
    text = (
        f"\n## {task}: {what} of the projected model, best config retrained with seeds "
        f"{result['seeds']}\n"
    )
    text += table(
        [
            "preset",
            "best val (search)",
            "test (search seed 0)",
            "test mean",
            "test std",
            "test median",
            "per seed",
            "relaxation off: test mean",
            "gain report",
        ],
        rows,
    )
    text += _paired_lines(task, presets)
    if improvement is not None:
        std_b, std_r = presets["baseline"]["test_std"], presets["relax"]["test_std"]
        goal = GOALS[task]
        text += (
            f"\nrelax vs baseline: relative {what} reduction {improvement:+.1%} "
            f"(goal >= {goal:.0%}: {'met' if improvement >= goal else 'MISSED by ' + format(goal - improvement, '.1%')}); "
            f"seed std {std_r:.4g} vs {std_b:.4g} ({'smaller' if std_r < std_b else 'NOT smaller'}); "
            f"on the medians (robust to one diverged seed): {(med_b - med_r) / med_b:+.1%}"
        )
    return text, improvement


def _paired_lines(task: str, presets: dict[str, Any]) -> str:
    """Each relaxing preset's retrained best against the baseline's, paired by report seed
    (every report uses the same seeds): the gain report's paired t interval."""
    from service._gain_stats import paired_difference

    base = {r["seed"]: r["test"] for r in presets.get("baseline", {}).get("retrain", [])}
    lines = ""
    for preset in [p for p in presets if p != "baseline"]:
        mine = {r["seed"]: r["test"] for r in presets.get(preset, {}).get("retrain", [])}
        seeds = sorted(set(base) & set(mine))
        if len(seeds) < 2:
            continue
        diff = paired_difference([mine[s] for s in seeds], [base[s] for s in seeds], "lower")
        presets[preset]["vs_baseline"] = diff.as_dict()
        lines += f"\n{preset} − baseline ({task}, paired by seed): "
        lines += difference_line(diff, preset, "baseline")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (about a minute)")
    parser.add_argument(
        "--tasks",
        default=None,
        help="comma-separated (default rotated_mnist,nbody; quick: rotated_mnist)",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="retraining seeds (default 3; quick 2)"
    )
    parser.add_argument("--workers", type=int, default=2, help="CPUs for Ray and retraining")
    parser.add_argument(
        "--presets",
        default=",".join(PRESETS),
        help=f"comma-separated, baseline first (default {','.join(PRESETS)})",
    )
    parser.add_argument(
        "--trials", type=int, default=None, help="trials per search (default 8; quick 2)"
    )
    args = parser.parse_args()
    chosen_presets = tuple(p for p in args.presets.split(",") if p)
    if chosen_presets[:1] != ("baseline",) or not set(chosen_presets) <= set(PRESETS):
        parser.error(f"--presets: baseline first, then any of {', '.join(PRESETS[1:])}")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_seeds = args.seeds or (2 if args.quick else 3)
    chosen = args.tasks or ("rotated_mnist" if args.quick else "rotated_mnist,nbody")
    tasks = [t for t in chosen.split(",") if t]
    # MNIST last, so its improvement is the last line
    tasks.sort(key=lambda t: t == "rotated_mnist")
    figures: dict[str, Any] = {"workers": args.workers}
    summaries: dict[str, str] = {}
    improvements: dict[str, float | None] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="relaxtune-bench-") as tmp:
        for task in tasks:
            t0 = time.perf_counter()
            cfg = sizes(args.quick)[task]
            if args.trials:
                cfg["budget"]["trials"] = args.trials
            result = run_task(task, cfg, chosen_presets, n_seeds, args.workers, Path(tmp))
            result["seconds"] = time.perf_counter() - t0
            summaries[task], improvements[task] = summarise(task, result)
            result["relax_vs_baseline"] = improvements[task]
            result["goal"] = GOALS[task]
            figures[task] = result
    try:
        import ray

        ray.shutdown()
    except Exception:
        pass
    figures["wall_seconds"] = time.perf_counter() - started
    for task in tasks:
        print(summaries[task])
    print(f"\ntotal wall time: {figures['wall_seconds'] / 60:.1f} min")
    name = "search_quality" + (f"_{args.trials}trials" if args.trials else "")
    if args.tasks:  # a subset of the tasks must not overwrite the full run's file
        name += "_" + "_".join(tasks)
    if args.presets != parser.get_default("presets"):  # nor a subset of the presets
        name += "_" + "_".join(chosen_presets)
    save_results(name, figures, args.quick)
    for task in tasks:
        imp = improvements[task]
        label = "rotated MNIST test-error" if task == "rotated_mnist" else "N-body test-MSE"
        if "relax" not in chosen_presets:
            why = "n/a (relax not among --presets)"
        else:
            why = "n/a (a search failed)" if imp is None else f"{imp:+.1%}"
        print(f"{label} reduction, relax vs baseline: {why}")


if __name__ == "__main__":
    main()
