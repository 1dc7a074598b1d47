"""Hooks that observe a run (they never change the maths)."""

from __future__ import annotations

import sys
from typing import TextIO

from ._loop import EpochReport, Trainer


def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def _adaptive(report: EpochReport) -> str:
    """``γ=[…] λ=[…]`` of an ``adaptive`` trial (per layer), else nothing."""
    if report.strengths is None or report.duals is None:
        return ""
    gammas = ",".join(format(g, ".3g") for g in report.strengths)
    duals = ",".join(format(v, ".3g") for v in report.duals)
    return f"γ=[{gammas}] λ=[{duals}]  "


class ConsoleHook:
    """Prints one line per epoch: θ, projected vs relaxed metric, penalties, equivariance."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def on_epoch_end(self, report: EpochReport, trainer: Trainer) -> None:
        metric = trainer.task.metric
        print(
            f"epoch {report.epoch:>3}/{trainer.config.epochs}  θ={report.theta:.3f}  "
            f"loss={report.train_loss:.4f}  val_{metric} projected={report.val_projected:.4f} "
            f"relaxed={report.val_relaxed:.4f}  eq.err relaxed={report.equivariance_error_relaxed:.2e} "
            f"projected={report.equivariance_error_projected:.2e}  "
            f"pen lie={_fmt(report.penalty_lie)} norm={_fmt(report.penalty_norm)} proj={_fmt(report.penalty_proj)} "
            f"grad ratio={_fmt(report.penalty_grad_ratio)}  "
            f"{_adaptive(report)}{report.epoch_seconds:.1f}s",
            file=self.stream,
            flush=True,
        )
