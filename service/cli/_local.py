"""The local commands, run in this process on ``--db``/``--artifacts``: a search in the
foreground (``run``), re-exporting its best trial (``export``), the gain report
(``report --local``), and the training code itself (``train``, ``verify``)."""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

from service.cli._options import (
    add_command,
    add_db_options,
    add_log_level,
    add_ray_options,
    open_store,
    read_spec_bytes,
    settings_from,
    setup_logging,
)
from service.cli._output import CliError, err, print_json
from service.cli._supervise import stop_on_signals
from service.cli._views import show_report
from service.errors import Conflict, NotFound, RelaxtuneError


def foreground_report_runner(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """``service.report.run_report`` printing each run and the verdict (foreground commands)."""
    from service.report import run_report

    return run_report(*args, show_progress=True, **kwargs)


def report_local(args: argparse.Namespace) -> int:
    """``report --local``: run the report in the foreground on --db/--artifacts (with
    --seeds), then print it from the database."""
    from search_spaces import parse_spec
    from service.controller import Controller
    from service.store import validate_job_id

    try:
        validate_job_id(args.job)
    except NotFound as exc:
        raise CliError(f"not a job id: {args.job!r}", 2) from exc
    store = open_store(args)
    if args.seeds is not None:
        setup_logging(args.log_level)
        job = store.request_report(args.job, args.seeds)
        worker = f"cli-{socket.gethostname()}-{os.getpid()}"
        job = store.claim(job.id, worker)
        controller = Controller(
            store,
            settings_from(args),
            worker_id=worker,
            requeue_on_stop=False,
            report_runner=foreground_report_runner,
        )
        stop_on_signals(controller.stop)
        finished = controller.run_job(job)
        if finished.status == "failed":
            raise CliError(f"job {finished.id} failed: {finished.error}")
    from service.report import read_report

    job = store.get_job(args.job)
    report = read_report(parse_spec(job.spec, gpu_available=lambda: True), job.id, args.db)
    print_json(report) if args.json else show_report(report)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run one search in the foreground (a new job from SPEC, or resume --job ID)."""
    from search_spaces import parse_spec
    from service.controller import Controller

    setup_logging(args.log_level)
    settings = settings_from(args)
    # a local run may name paths (data_dir, cache_dir); the spec is checked before anything
    # is created
    spec = parse_spec(read_spec_bytes(args.spec)) if args.spec and not args.job else None
    store = open_store(args)
    worker = f"cli-{socket.gethostname()}-{os.getpid()}"
    if args.job:
        if args.spec:
            err("note: resuming --job uses the spec stored with the job; SPEC is ignored")
        try:
            job = store.claim(args.job, worker, allow_running=True)
        except (NotFound, Conflict) as exc:  # one line: missing, finished or being cancelled
            raise CliError(str(exc), 2) from exc
        print(f"resuming job {job.id} ({job.name})", file=sys.stderr)
    elif spec is not None:
        job = store.create_job("local", spec.to_dict(), spec.name)
        job = store.claim(job.id, worker)
        err(f"job {job.id} ({job.name}); resume it with: relaxtune run --job {job.id}")
    else:
        raise CliError("give a SPEC file, or --job ID to resume a job", 2)

    from service.search import run_search

    summary: dict[str, Any] = {}

    def runner(*a: Any, **kw: Any) -> dict[str, Any]:
        result = run_search(*a, show_progress=True, **kw)
        summary.update(result)
        return result

    controller = Controller(
        store,
        settings,
        runner=runner,
        worker_id=worker,
        requeue_on_stop=False,
        report_runner=foreground_report_runner,
    )
    stop_on_signals(controller.stop)
    try:
        finished = controller.run_job(job)
    except KeyboardInterrupt:
        try:
            store.finish(
                job.id,
                "failed",
                error=f"interrupted; resume with `relaxtune run --job {job.id}`",
                worker_id=worker,
            )
        except Conflict:  # it had ended (cancelled, taken over) meanwhile: keep that
            pass
        err(f"interrupted; resume with: relaxtune run --job {job.id}")
        return 130
    if finished.status == "failed":
        raise CliError(f"job {finished.id} failed: {finished.error}")
    best = summary.get("best") or {}
    checkpoint = f"; best checkpoint: {best['checkpoint']}" if best.get("checkpoint") else ""
    print(f"job {finished.id} {finished.status}{checkpoint}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export (or re-export) a finished job's best trial as a checkpoint folder."""
    from service.export import export_best
    from service.store import validate_job_id

    try:
        validate_job_id(args.job)
    except NotFound as exc:
        raise CliError(f"not a job id: {args.job!r}", 2) from exc
    try:
        best = export_best(args.job, args.db, Path(args.artifacts))
    except KeyError as exc:
        raise CliError(f"no search study for job {args.job} in {args.db}", 2) from exc
    except RelaxtuneError:
        raise
    except Exception as exc:  # disk full, unwritable folder, ...: the trials are kept
        first_line = (str(exc).splitlines() or [""])[0][:300]
        raise CliError(
            f"export failed: {type(exc).__name__}: {first_line} (the trials are kept; "
            "fix the cause and run `relaxtune export` again)"
        ) from exc
    _record_export(args, best.to_dict())
    print_json(best.to_dict())
    return 0


def _record_export(args: argparse.Namespace, best: dict[str, Any]) -> None:
    """A job that failed at its export succeeds once re-exported: say so on its row.

    The one documented way a finished job changes state (``failed`` → ``succeeded``); a job
    that is queued, running or cancelled keeps its state (checked in the same statement).
    """
    store = open_store(args, upgrade=False)
    try:
        store.finish(args.job, "succeeded", best=best, from_statuses=("failed", "succeeded"))
    except NotFound:  # a study without a job row (exported from another database)
        pass
    except RelaxtuneError as exc:  # the export itself is done; only the row is stale
        err(f"note: the job row was not updated: {exc}")
    finally:
        store.close()


def _key_value(text: str) -> str:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    """Train one model from a spec (its search space's defaults, overridden by --set)."""
    from workers.training import cli_train

    if not Path(args.spec).is_file():
        raise CliError(f"spec file not found: {args.spec}", 2)
    print_json(cli_train(args.spec, args.set, args.seed, args.out, args.epochs))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-check a checkpoint folder; exit 1 unless it passes."""
    from workers.training import CheckpointError, verify_checkpoint

    if not Path(args.dir).is_dir():
        raise CliError(f"not a folder: {args.dir}", 2)
    kwargs = {} if args.tolerance is None else {"tolerance": args.tolerance}
    try:
        report = verify_checkpoint(args.dir, **kwargs)
    except CheckpointError as exc:
        raise CliError(f"checkpoint refused: {exc}") from exc
    except Exception as exc:  # an unreadable file (corrupt model.ts, bad safetensors header)
        first_line = (str(exc).splitlines() or [""])[0][:300]
        raise CliError(
            f"checkpoint refused: unreadable file: {type(exc).__name__}: {first_line}"
        ) from exc
    print_json(report)
    return 0 if report.get("passed") else 1


def add_commands(sub: Any) -> None:
    """The parsers of the local commands (``report --local`` is an option of ``report``)."""
    p = add_command(sub, "run", cmd_run)
    p.add_argument("spec", nargs="?", help="job spec file (YAML or JSON)")
    p.add_argument("--job", help="resume this job instead of creating one")
    add_db_options(p)
    add_ray_options(p)
    add_log_level(p)

    p = add_command(sub, "export", cmd_export)
    p.add_argument("job")
    add_db_options(p)

    p = add_command(sub, "train", cmd_train)
    p.add_argument("spec", help="job spec file (YAML or JSON)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="override one hyperparameter (repeatable), e.g. relax.schedule=triangular",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="checkpoint folder")
    p.add_argument("--epochs", type=int)

    p = add_command(sub, "verify", cmd_verify)
    p.add_argument("dir", help="checkpoint folder")
    p.add_argument(
        "--tolerance",
        type=_positive_float,
        help="largest accepted equivariance error on the exact group elements (default 1e-4); "
        "the tolerance written in the folder's certificate.json is reported, never used",
    )
