"""Step time of the full-batch norm penalty against standard equivariant training.

The norm penalty is computed on the whole batch (the authors' form,
``relax.penalty_form: paper``, or the batch-size-independent ``per_sample``; both cost the
same). On the C8 rotated-MNIST CNN of ``search_spaces/examples/rotmnist_c8.yaml``, batch 64,
three training steps are timed side by side, interleaved (one step of each in turn, after a
warm-up), each built the way ``Trainer.fit`` builds it:

* ``standard``   the projected (``drop``) model: plain escnn network, no free term
* ``relaxed``    θ > 0, no penalty
* ``paper``      θ > 0 with the authors' penalty ``0.01·sqrt(Σ_batch,layers ‖W x‖²)``

    .venv/bin/python bench/penalty_cost.py [--rounds 60] [--threads 1]

Prints the median step times and their ratios to ``standard``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import _common  # noqa: F401  (puts the repository root on sys.path)
import torch  # noqa: E402
import yaml  # noqa: E402
from _common import ROOT, table  # noqa: E402

from workers.relax import project_model, set_theta  # noqa: E402
from workers.training import Trainer, TrialConfig  # noqa: E402


def _trainer(**hparams: Any) -> Trainer:
    spec = yaml.safe_load((ROOT / "search_spaces/examples/rotmnist_c8.yaml").read_text())
    config = TrialConfig(
        task="rotated_mnist",
        model=dict(spec["model"]),
        data={"train_size": 256, "val_size": 64, "test_size": 64},
        hparams={
            "relax.schedule": "constant",
            "relax.theta": 0.5,
            "optim.batch_size": 64,
            **hparams,
        },
        epochs=1,
        seed=0,
        device="cpu",
        norm_samples=0,
    )
    return Trainer(config)


def _step(
    trainer: Trainer, model: torch.nn.Module, optimizer: torch.optim.Optimizer, relaxed: bool
):
    def step(inputs: list[torch.Tensor], target: torch.Tensor) -> None:
        if relaxed:
            set_theta(model, 0.5)
        loss = trainer.task.loss(model(*inputs).float(), target)
        penalties = trainer._penalties() if relaxed else {}
        total = loss + sum(trainer.penalty_weights[k] * v for k, v in penalties.items())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    paper = _trainer(**{"relax.lambda_norm": 0.01, "relax.penalty_form": "paper"})
    relaxed = _trainer()
    standard_model = project_model(paper.model, "drop").train()
    standard_opt = torch.optim.AdamW(standard_model.parameters(), lr=1e-3)
    variants = {
        "standard": _step(paper, standard_model, standard_opt, relaxed=False),
        "relaxed": _step(relaxed, relaxed.model, relaxed.optimizer, relaxed=True),
        "paper": _step(paper, paper.model, paper.optimizer, relaxed=True),
    }
    *inputs, target = next(iter(paper.train_loader))
    for _ in range(args.warmup):
        for step in variants.values():
            step(inputs, target)
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            start = time.perf_counter()
            variants[name](inputs, target)
            times[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    rows = [[k, medians[k] * 1e3, medians[k] / medians["standard"]] for k in names]
    print(
        f"C8 rotated-MNIST CNN {dict(paper.config.model)}, batch {target.shape[0]}, "
        f"{args.rounds} interleaved rounds, {args.threads} thread(s)"
    )
    print(table(["variant", "median ms", "ratio to standard"], rows))
    print(
        f"full-batch paper penalty step / standard step: {medians['paper'] / medians['standard']:.2f}"
    )


if __name__ == "__main__":
    main()
