"""How jobs and gain reports look on the console (rich, imported when drawn): what the client
commands and ``report --local`` print."""

from __future__ import annotations

from typing import Any


def progress_text(progress: dict[str, Any]) -> str:
    done = sum(int(progress.get(k) or 0) for k in ("complete", "pruned", "failed"))
    total = progress.get("total")
    best = progress.get("best_value")
    text = f"{done}/{total if total is not None else '?'} trials"
    text += f" ({progress.get('running', 0) or 0} running)"
    if progress.get("stage"):  # a two-stage job
        text += f", stage {progress['stage']} of 2"
    if best is not None:
        text += f", best {best:.4g}" if isinstance(best, int | float) else f", best {best}"
    report = progress.get("report")
    if isinstance(report, dict):  # the gain report's runs, once the search has finished
        text += f"; gain report {report.get('done', 0)}/{report.get('total', '?')} runs"
    return text


def show_job(job: dict[str, Any], report: dict[str, Any] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    for key in ("id", "name", "tenant", "status"):
        table.add_row(key, str(job.get(key)))
    table.add_row("progress", progress_text(job.get("progress") or {}))
    if isinstance(job.get("queue"), dict):
        table.add_row("queue", queue_text(job["queue"]))
    if job.get("cancel_requested") and job.get("status") == "running":
        table.add_row("cancel", "requested")
    for key in ("created_at", "started_at", "finished_at"):
        if job.get(key):
            table.add_row(key.removesuffix("_at"), str(job[key]))
    best = job.get("best")
    if isinstance(best, dict):
        trial = best.get("trial", best.get("number"))
        value = best.get("value")
        table.add_row("best", f"trial {trial}, value {value}")
        certificate = best.get("certificate")
        if isinstance(certificate, dict) and "passed" in certificate:
            table.add_row("equivariant", "passed" if certificate["passed"] else "FAILED")
        if best.get("checkpoint"):
            table.add_row("checkpoint", str(best["checkpoint"]))
    if job.get("error"):
        table.add_row("error", str(job["error"]))
    if report and report.get("status") != "not_requested":
        table.add_row("gain", report_line(report))
    Console().print(table)


def queue_text(queue: dict[str, Any]) -> str:
    """``#2: waiting for 2 CPUs (0 free); cluster busy with 3 jobs``"""
    position = queue.get("position")
    reason = queue.get("reason") or ""
    return f"#{position}: {reason}" if position is not None else reason


def show_jobs(jobs: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not jobs:
        print("no jobs")
        return
    table = Table("id", "name", "status", "progress", "created")
    for job in jobs:
        table.add_row(
            job["id"],
            job["name"],
            job["status"],
            queue_text(job["queue"])
            if isinstance(job.get("queue"), dict)
            else progress_text(job.get("progress") or {}),
            str(job.get("created_at", ""))[:19],
        )
    Console().print(table)


def report_line(report: dict[str, Any]) -> str:
    """The report in one line: its verdict, or how far it got."""
    if report.get("verdict") and report.get("status") != "running":
        return str(report["verdict"])
    progress = report.get("progress") or {}
    return (
        f"{report.get('status')}: {progress.get('done', 0)}/{progress.get('total', '?')} runs "
        f"on seeds {report.get('seeds')}"
    )


def show_report(report: dict[str, Any]) -> None:
    """Per seed both arms and their difference, each arm's summary, and the verdict."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    quantity = report.get("quantity", "test metric")
    console.print(
        f"gain report of job {report.get('job_id')} ({report.get('status')}): {quantity} of "
        f"the projected model, best trial #{report.get('source_trial')} retrained on seeds "
        f"{report.get('seeds')} (search seed {report.get('search_seed')}; "
        f"{report.get('better')} is better)"
    )
    rows = report.get("runs") or []
    if rows:
        table = Table("seed", "as found", "relaxation off", "difference")
        for row in rows:
            table.add_row(
                str(row["seed"]),
                *(_cell(row.get(k)) for k in ("as_found", "relaxation_off", "difference")),
            )
        for label, key in (("mean", "mean"), ("median", "median"), ("std", "std")):
            arms = report.get("arms") or {}
            table.add_row(
                label,
                *(_cell((arms.get(arm) or {}).get(key)) for arm in ("as_found", "relaxation_off")),
                _cell((report.get("difference") or {}).get(key)) if key != "median" else "",
            )
        console.print(table)
    difference = report.get("difference")
    if difference:
        low, high = difference["ci"]
        method = difference["method"]
        console.print(f"95 % CI of the difference: [{low:.4g}, {high:.4g}] ({method})")
    for failure in report.get("failures") or []:
        console.print(f"failed: {failure['arm']} seed {failure['seed']}: {failure['reason']}")
    console.print(report_line(report))


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
