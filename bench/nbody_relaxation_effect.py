"""Is the N-body relaxation active? Paired trainings with relaxation on and off.

For each seed, the same task, data, model initialisation and optimiser are trained twice with
``workers.training.Trainer``: once with ``relax.schedule: none`` (standard equivariant
training) and once relaxed (by default ``linear_decay`` from θ_max to 0 at 75 % of training,
so the last quarter trains at θ = 0). Reported per seed: the projected model's test MSE of
both runs and their difference; for the relaxed run, the relaxed model's equivariance error
in the middle of training, and in the middle of training and at the last epoch with θ > 0 the
sizes of the free and the equivariant terms of every relaxed layer:

* weights: ``‖θ·W‖`` and ``‖θ·(W − Π W)‖`` (the part projection removes) against the dense
  equivariant map ``‖W_eq‖`` (Frobenius norms);
* activations on validation inputs: ``‖θ·W x‖`` and ``‖θ·(W − Π W) x‖`` against ``‖W_eq x‖``.

    .venv/bin/python bench/nbody_relaxation_effect.py [--seeds 1 2 3] [--epochs 20]
        [--train 1000] [--workers 2] [--theta-max 0.3] [--schedule linear_decay] [--tag NAME]

Results are printed as a table and saved under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from typing import Any

import _common  # noqa: F401  (puts the repository root on sys.path)
import torch
from _common import save_results, table

from workers.relax import RelaxedLayer, relaxed_layers
from workers.training import Trainer, TrialConfig


def _term_norms(trainer: Trainer) -> list[dict[str, float]]:
    """Per relaxed layer: free vs equivariant term sizes (weights and activations)."""
    layers = relaxed_layers(trainer.model)
    recorded: dict[int, torch.Tensor] = {}
    handles = [
        layer.register_forward_pre_hook(
            lambda m, args, i=i: recorded.__setitem__(i, args[0].detach())
        )
        for i, layer in enumerate(layers)
    ]
    trainer.model.eval()
    try:
        with torch.no_grad():
            trainer.model(*trainer.eval_inputs)
    finally:
        for handle in handles:
            handle.remove()
    out = []
    with torch.no_grad():
        for i, layer in enumerate(layers):
            theta = float(layer.theta)
            w_eq = layer.equivariant.dense_weight()
            free = theta * layer.free
            removed = free - theta * layer.projected_free()
            x = recorded[i].reshape(-1, recorded[i].shape[-1])
            out.append(
                {
                    "theta": theta,
                    "w_eq": float(w_eq.norm()),
                    "w_free": float(free.norm()),
                    "w_free_nonequivariant": float(removed.norm()),
                    "act_eq": float((x @ w_eq.t()).norm()),
                    "act_free": float((x @ free.t()).norm()),
                    "act_free_nonequivariant": float((x @ removed.t()).norm()),
                }
            )
    return out


class _Observer:
    """Keeps the last term norms measured while θ > 0 and the mid-training errors."""

    def __init__(self, epochs: int) -> None:
        self.mid_epoch = max(1, epochs // 2)
        self.norms_at_end_of_relaxation: list[dict[str, float]] | None = None
        self.epoch_of_norms: int | None = None
        self.mid: dict[str, float] = {}
        self.norms_mid: list[dict[str, float]] | None = None

    def on_epoch_end(self, report: Any, trainer: Trainer) -> None:
        if report.theta > 0 and any(isinstance(m, RelaxedLayer) for m in trainer.model.modules()):
            self.norms_at_end_of_relaxation = _term_norms(trainer)
            self.epoch_of_norms = report.epoch
        if report.epoch == self.mid_epoch:
            if report.theta > 0:
                self.norms_mid = _term_norms(trainer)
            self.mid = {
                "epoch": report.epoch,
                "theta": report.theta,
                "equivariance_error_relaxed": report.equivariance_error_relaxed,
                "equivariance_error_projected": report.equivariance_error_projected,
                "val_relaxed": report.val_relaxed,
                "val_projected": report.val_projected,
            }


def _run(job: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    config = TrialConfig(
        task="nbody",
        model=job["model"],
        data=job["data"],
        hparams=job["hparams"],
        epochs=job["epochs"],
        seed=job["seed"],
        device="cpu",
    )
    start = time.perf_counter()
    trainer = Trainer(config)
    observer = _Observer(job["epochs"])
    trainer.fit([observer])
    test = trainer.evaluate(trainer.projected_model(), trainer.test_loader)
    last = trainer.reports[-1]
    return {
        "arm": job["arm"],
        "seed": job["seed"],
        "test_mse": test,
        "val_mse": last.val_projected,
        "final_equivariance_error_projected": last.equivariance_error_projected,
        "mid": observer.mid,
        "norms_epoch": observer.epoch_of_norms,
        "norms": observer.norms_at_end_of_relaxation,
        "norms_mid": observer.norms_mid,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--schedule", default="linear_decay")
    parser.add_argument("--theta-max", type=float, default=0.3)
    parser.add_argument("--zero-at", type=float, default=0.75)
    parser.add_argument("--init-std", type=float, default=1e-2)
    parser.add_argument("--lambda-lie", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 3 epochs, 200/100/100 systems, hidden 32"
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.hidden = args.seeds[:1], 3, 32
        args.train, args.val, args.test = 200, 100, 100

    optimiser = {"optim.lr": args.lr, "optim.batch_size": args.batch}
    relaxed = {
        **optimiser,
        "relax.schedule": args.schedule,
        "relax.theta_max": args.theta_max,
        "relax.zero_at": args.zero_at,
        "relax.init": "normal",
        "relax.init_std": args.init_std,
        "relax.lambda_lie": args.lambda_lie,
        "relax.projection": "orthogonal",
    }
    common = {
        "model": {"hidden": args.hidden, "layers": args.layers},
        "data": {"train_size": args.train, "val_size": args.val, "test_size": args.test},
        "epochs": args.epochs,
    }
    jobs = [
        {**common, "arm": arm, "seed": seed, "hparams": hp}
        for seed in args.seeds
        for arm, hp in (("off", {**optimiser, "relax.schedule": "none"}), ("on", relaxed))
    ]
    # build the cached data once before the workers start, so they do not simulate it twice
    from workers.tasks.nbody import NBodyTask

    NBodyTask(common["model"], common["data"]).build_data(0)
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(_run, jobs)
    wall = time.perf_counter() - start

    by = {(r["arm"], r["seed"]): r for r in results}
    rows = []
    for seed in args.seeds:
        off, on = by[("off", seed)], by[("on", seed)]
        rows.append(
            [
                seed,
                f"{off['test_mse']:.5f}",
                f"{on['test_mse']:.5f}",
                f"{(on['test_mse'] - off['test_mse']) / off['test_mse']:+.1%}",
                f"{on['mid'].get('equivariance_error_relaxed', float('nan')):.3g}",
                f"{on['mid'].get('equivariance_error_projected', float('nan')):.2g}",
                f"{on['final_equivariance_error_projected']:.2g}",
            ]
        )
    print(
        f"N-body EGNN hidden {args.hidden}, {args.layers} layers; {args.train}/{args.val}/{args.test} "
        f"systems; {args.epochs} epochs; AdamW lr {args.lr}, batch {args.batch}; relaxed: "
        f"{args.schedule} θ_max {args.theta_max} zero_at {args.zero_at}, normal init std "
        f"{args.init_std}, λ_lie {args.lambda_lie}, orthogonal projection"
    )
    print(
        table(
            [
                "seed",
                "test MSE off",
                "test MSE on",
                "on vs off",
                "eq. err relaxed (mid)",
                "eq. err projected (mid)",
                "eq. err projected (end)",
            ],
            rows,
        )
    )
    offs = [by[("off", s)]["test_mse"] for s in args.seeds]
    ons = [by[("on", s)]["test_mse"] for s in args.seeds]
    print(f"mean test MSE off {statistics.mean(offs):.5f}, on {statistics.mean(ons):.5f}")
    print(
        "\nfree vs equivariant terms of the relaxed runs, mid-training and at the last epoch with θ > 0:"
    )
    norm_rows = []
    for seed in args.seeds:
        on = by[("on", seed)]
        measured = [(on["mid"].get("epoch"), on["norms_mid"]), (on["norms_epoch"], on["norms"])]
        for epoch, norms in measured:
            for i, n in enumerate(norms or []):
                norm_rows.append(
                    [
                        seed,
                        epoch,
                        i,
                        f"{n['theta']:.3g}",
                        f"{n['w_free'] / max(n['theta'], 1e-12) / n['w_eq']:.3g}",
                        f"{n['w_free'] / n['w_eq']:.3g}",
                        f"{n['w_free_nonequivariant'] / n['w_eq']:.3g}",
                        f"{n['act_free'] / n['act_eq']:.3g}",
                        f"{n['act_free_nonequivariant'] / n['act_eq']:.3g}",
                    ]
                )
    print(
        table(
            [
                "seed",
                "epoch",
                "layer",
                "θ",
                "‖W‖/‖W_eq‖",
                "‖θW‖/‖W_eq‖",
                "‖θ(W−ΠW)‖/‖W_eq‖",
                "‖θWx‖/‖W_eq x‖",
                "‖θ(W−ΠW)x‖/‖W_eq x‖",
            ],
            norm_rows,
        )
    )
    print(f"\nwall time {wall / 60:.1f} min ({args.workers} workers)")
    name = "nbody_relaxation_effect" + (f"_{args.tag}" if args.tag else "")
    save_results(name, {"args": vars(args), "results": results}, quick=args.quick)
    change = statistics.mean((on - off) / off for on, off in zip(ons, offs, strict=True))
    print(f"N-body test MSE, relaxation on vs off (paired, mean over seeds): {change:+.1%}")


if __name__ == "__main__":
    main()
