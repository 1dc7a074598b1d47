"""The console output of a foreground search (``relaxtune run``): a live progress bar and
the final summary table (rich, imported when used)."""

from __future__ import annotations

import threading
from typing import Any

import optuna

from service.best_trial import BestTrial
from service.strategy import stage_summary


class ProgressBar:
    """A rich progress bar: trials done/total, best projected metric, running trials."""

    def __init__(self, total: int, mode: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
        )
        self.task = self.progress.add_task("search", total=total, info="starting Ray")
        self.progress.start()
        self.mode = mode
        self._lock = threading.Lock()

    def update(self, p: dict[str, Any]) -> None:
        best = "-" if p["best_value"] is None else f"{p['best_value']:.4f}"
        info = (
            f"best {best} · running {p['running']} · "
            f"complete {p['complete']} pruned {p['pruned']} failed {p['failed']}"
        )
        if p.get("stage"):
            info = f"stage {p['stage']} · {info}"
        with self._lock:
            self.progress.update(
                self.task, completed=p["complete"] + p["pruned"] + p["failed"], info=info
            )

    def close(self) -> None:
        self.progress.stop()


def print_summary(result: dict[str, Any], study: optuna.Study) -> None:
    """The final summary table: best parameters, projected vs relaxed, certificate, path."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    p = result["progress"]
    console.print(
        f"job {result['job_id']}: {result['status']} in {result['seconds']:.0f}s — "
        f"{p['complete']} complete, {p['pruned']} pruned, {p['failed']} failed of {p['total']}"
    )
    for stage in stage_summary(study):
        best_value = "-" if stage["best_value"] is None else f"{stage['best_value']:.4f}"
        console.print(
            f"stage {stage['stage']} ({stage['searches']}): {stage['finished']} trials, "
            f"best {best_value} (#{stage['best_trial']})"
        )
    if not result.get("best"):
        return
    best = BestTrial.from_dict(result["best"])
    table = Table(title=f"best trial #{best.trial}")
    table.add_column("what")
    table.add_column("value")
    if best.stage is not None:
        table.add_row("stage", str(best.stage))
    for key, value in sorted(best.searched_params.items()):
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    metric = best.metrics.get("metric", "metric")
    if best.value is not None:
        table.add_row(f"val_{metric} (projected)", f"{best.value:.4f}")
    if best.val_relaxed is not None:
        table.add_row(f"val_{metric} (relaxed)", f"{best.val_relaxed:.4f}")
    test = best.metrics.get(f"test_{metric}")
    if test is not None:
        table.add_row(f"test_{metric} (projected)", f"{test:.4f}")
    cert = best.certificate
    table.add_row(
        "equivariance error",
        f"{cert['max_error_exact']:.2e} (tol {cert['tolerance']:.0e}, "
        f"{'PASS' if cert['passed'] else 'FAIL'}, {cert['group']})",
    )
    table.add_row("checkpoint", str(best.checkpoint))
    console.print(table)
