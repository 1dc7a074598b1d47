"""Cost of a relaxed training step against the standard equivariant step of the same network.

For each task a :class:`workers.training.Trainer` builds the relaxed model, its optimiser and
its penalty weights from a :class:`~workers.training.TrialConfig`; the standard network is
``workers.relax.project_model(model, "drop")`` (the unrelaxed escnn / EGNN model) with the
same optimiser settings. One training step is what ``Trainer.fit`` does per batch:
``set_theta`` → forward → task loss + weighted ``compute_penalties`` → backward → AdamW step.

Variants are timed interleaved (one step of each in turn, many rounds, after a warm-up) on the
same fixed batch with ``torch.set_num_threads`` fixed, and each is reported as the median
step time and its ratio to the standard step:

* ``standard``       projected (drop) model, no relaxation term, no penalties
* ``relaxed``        θ > 0, no penalties (``K_eq + θ·K_free`` as one kernel)
* ``relaxed+pen``    θ > 0 with the task's penalties (the headline figure)

    .venv/bin/python bench/step_cost.py [--quick] [--threads 1] [--rounds 200]

The last line printed is the rotated-MNIST C8 ratio ``relaxed+pen / standard``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import _common  # noqa: F401  (puts the repository root on sys.path)
import torch  # noqa: E402
import yaml  # noqa: E402
from _common import ROOT, save_results, table

from workers.relax import (  # noqa: E402
    compute_penalties,
    project_model,
    relaxed_layers,
    set_theta,
)
from workers.training import Trainer, TrialConfig  # noqa: E402

TARGET_C8 = 1.15


def _c8_model_config() -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "search_spaces/examples/rotmnist_c8.yaml").read_text())
    return dict(spec["model"])


def _base_hparams(batch_size: int = 64, **extra: Any) -> dict[str, Any]:
    # a constant θ keeps the relaxation term active on every timed step
    return {
        "relax.schedule": "constant",
        "relax.theta": 0.5,
        "relax.projection": "drop",
        "optim.batch_size": batch_size,
        **extra,
    }


def make_step(
    trainer: Trainer,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    weights: dict[str, float],
    theta: float | None,
) -> Callable[[list[torch.Tensor], torch.Tensor], None]:
    """One optimisation step as ``Trainer.fit`` does it (θ set, loss + penalties, step; on
    CUDA the forward pass under bf16 autocast, as there); ``theta=None`` is a plain step of a
    model without relaxed layers."""
    wanted = tuple(k for k, w in weights.items() if w > 0)
    device = trainer.device

    def step(inputs: list[torch.Tensor], target: torch.Tensor) -> None:
        if theta is not None:
            set_theta(model, theta)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=trainer.amp):
            output = model(*inputs)
            loss = trainer.task.loss(output.float(), target)
        penalties = compute_penalties(model, wanted) if wanted else {}
        total = loss + sum(weights[k] * v for k, v in penalties.items())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    return step


def build_variants(
    task: str,
    model_cfg: dict[str, Any],
    data_cfg: dict[str, Any],
    penalties: dict[str, float],
    device: str = "cpu",
    batch_size: int = 64,
) -> tuple[dict[str, Callable], tuple, dict[str, Any], dict[str, Any]]:
    """The three step functions of one task and the fixed batch they train on (on
    ``device``)."""
    hp = _base_hparams(batch_size, **{f"relax.lambda_{k}": v for k, v in penalties.items()})
    config = TrialConfig(
        task=task, model=model_cfg, data=data_cfg, hparams=hp, epochs=1, seed=0, device=device
    )
    trainer = Trainer(config)  # relaxed model + optimiser + penalty weights, as in a trial
    *inputs, target = (t.to(trainer.device) for t in next(iter(trainer.train_loader)))
    theta = trainer.theta_at(0.5)
    lr = float(hp.get("optim.lr", 1e-3))

    relaxed_pen = make_step(
        trainer, trainer.model, trainer.optimizer, trainer.penalty_weights, theta
    )

    # a second relaxed copy without penalties (recording off, as the Trainer does then)
    plain_trainer = Trainer(
        TrialConfig(
            task=task,
            model=model_cfg,
            data=data_cfg,
            hparams=_base_hparams(batch_size),
            epochs=1,
            seed=0,
            device=device,
        )
    )
    relaxed = make_step(
        plain_trainer,
        plain_trainer.model,
        plain_trainer.optimizer,
        plain_trainer.penalty_weights,
        theta,
    )

    standard_model = project_model(trainer.model, "drop")
    standard_model.train()
    standard_opt = torch.optim.AdamW(
        [p for p in standard_model.parameters() if p.requires_grad], lr=lr
    )
    standard = make_step(trainer, standard_model, standard_opt, {}, None)

    params = {
        "standard": sum(p.numel() for p in standard_model.parameters()),
        "relaxed": sum(p.numel() for p in trainer.model.parameters()),
        "penalty_samples": "full batch",
        "batch_size": int(target.shape[0]),
        "penalty_weights": {k: v for k, v in trainer.penalty_weights.items() if v > 0},
        "theta": theta,
    }
    variants = {"standard": standard, "relaxed": relaxed, "relaxed+pen": relaxed_pen}
    models = {
        "relaxed": trainer.model,
        "standard": standard_model,
        "weights": trainer.penalty_weights,
    }
    return variants, (inputs, target), params, models


def breakdown(
    models: dict[str, Any], batch: tuple, repeats: int, sync: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """Median ms of the pieces a relaxed step adds: the relaxed-layer lookup that
    ``set_theta`` and ``compute_penalties`` each do once per step, and each penalty's
    forward + backward on the inputs recorded by one forward pass."""
    model = models["relaxed"]
    inputs, _ = batch
    wanted = [k for k, w in models["weights"].items() if w > 0]

    def median_ms(fn: Callable[[], Any]) -> float:
        fn()
        sync()
        ts = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - start)
        return statistics.median(ts) * 1e3

    out = {
        "relaxed_layers(relaxed model)": median_ms(lambda: relaxed_layers(model)),
        "relaxed_layers(projected model)": median_ms(lambda: relaxed_layers(models["standard"])),
    }
    model(*inputs)  # records the penalty inputs
    for name in wanted:
        out[f"penalty {name} fwd+bwd"] = median_ms(
            lambda name=name: compute_penalties(model, (name,))[name].backward()
        )
    model.zero_grad(set_to_none=True)
    return out


def time_interleaved(
    variants: dict[str, Callable],
    batch: tuple,
    warmup: int,
    rounds: int,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Per-step wall times of each variant, one step of each in turn per round (``sync``
    waits for queued device work: ``torch.cuda.synchronize`` on a GPU)."""
    inputs, target = batch
    for _ in range(warmup):
        for step in variants.values():
            step(inputs, target)
    sync()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        # rotate the order so no variant always runs right after the same other one
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            variants[name](inputs, target)
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def run_task(
    label: str,
    task: str,
    model_cfg: dict[str, Any],
    data_cfg: dict[str, Any],
    penalties: dict[str, float],
    warmup: int,
    rounds: int,
    device: str = "cpu",
    batch_size: int = 64,
    sync: Callable[[], None] = lambda: None,
    breakdown_repeats: int | None = None,
) -> dict[str, Any]:
    variants, batch, params, models = build_variants(
        task, model_cfg, data_cfg, penalties, device, batch_size
    )
    times = time_interleaved(variants, batch, warmup, rounds, sync)
    repeats = max(10, rounds // 4) if breakdown_repeats is None else breakdown_repeats
    pieces = breakdown(models, batch, repeats, sync)
    medians = {k: statistics.median(v) for k, v in times.items()}
    base = medians["standard"]
    rows = []
    for name, t in times.items():
        q = statistics.quantiles(t, n=4)
        rows.append([name, medians[name] * 1e3, q[0] * 1e3, q[2] * 1e3, medians[name] / base])
    print(
        f"\n## {label}: model {model_cfg}, batch {params['batch_size']}, penalties "
        f"{params['penalty_weights']} on {params['penalty_samples']} samples, θ={params['theta']}, "
        f"{rounds} interleaved rounds after {warmup} warm-up"
    )
    print(table(["variant", "median ms", "p25 ms", "p75 ms", "ratio to standard"], rows))
    print("\nwhere the extra time goes (median ms, measured apart after the interleaved rounds):")
    print(table(["piece", "ms"], [[k, v] for k, v in pieces.items()]))
    return {
        "breakdown_ms": pieces,
        "model": model_cfg,
        "params": params,
        "median_ms": {k: v * 1e3 for k, v in medians.items()},
        "ratio": {k: v / base for k, v in medians.items()},
        "rounds": rounds,
        "warmup": warmup,
        "device": device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (under a minute)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per task")
    parser.add_argument("--warmup", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (25 if args.quick else 200)
    warmup = args.warmup or (3 if args.quick else 10)

    figures: dict[str, Any] = {"threads": args.threads}
    data_small = {"train_size": 256, "val_size": 64, "test_size": 64}
    figures["rotated_mnist_c8"] = run_task(
        "rotated MNIST, C8 steerable CNN",
        "rotated_mnist",
        _c8_model_config(),
        data_small,
        {"norm": 0.01, "proj": 0.01},
        warmup,
        rounds,
    )
    figures["nbody_egnn"] = run_task(
        "N-body, EGNN",
        "nbody",
        {"hidden": 64, "layers": 4},
        {"train_size": 256, "val_size": 64, "test_size": 64},
        {"lie": 0.01},
        warmup,
        rounds,
    )
    ratio = figures["rotated_mnist_c8"]["ratio"]["relaxed+pen"]
    figures["c8_ratio"] = ratio
    figures["c8_target"] = TARGET_C8
    figures["c8_target_met"] = ratio <= TARGET_C8
    save_results("step_cost", figures, args.quick)
    nb = figures["nbody_egnn"]["ratio"]["relaxed+pen"]
    print(f"N-body EGNN relaxed+lie / standard step: {nb:.3f}")
    print(
        f"C8 relaxed step with penalties / standard equivariant step: {ratio:.3f} "
        f"(target <= {TARGET_C8}: {'met' if ratio <= TARGET_C8 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
