"""The ``relaxtune`` command.

Three kinds of commands:

- database commands (``serve``, ``controller``, ``db upgrade``, ``token``, ``run``, ``export``)
  work on ``--db`` / ``--artifacts`` directly;
- client commands (``submit``, ``status``, ``cancel``, ``best``, ``dashboard``, ``report``)
  talk to a running service at ``--url`` with ``--token`` (``report --local`` works on
  ``--db`` / ``--artifacts`` instead, in the foreground like ``run``);
- worker commands (``train``, ``verify``) run the training code in this process.

Exit codes: 0 success, 1 failure (service error, failed job, failed check), 2 bad input.
Heavy modules (torch, ray, uvicorn) are imported by the commands that need them only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import httpx

from service.errors import Conflict, NotFound, RelaxtuneError, SpecError
from service.settings import Settings

__all__ = ["CliError", "build_parser", "main"]

logger = logging.getLogger("relaxtune")

DEFAULT_DB = "sqlite:///relaxtune.db"
DEFAULT_ARTIFACTS = "./artifacts"
DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("succeeded", "failed", "cancelled")


class CliError(RelaxtuneError):
    """A failure to report in one line and exit with ``code`` (2 for bad input)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _err(message: str) -> None:
    print(message, file=sys.stderr)


# --- shared option groups ------------------------------------------------------------------


def _add_db_options(parser: argparse.ArgumentParser, *, create: bool = False) -> None:
    if create:
        parser.add_argument(
            "--create", action="store_true", help="create the database file if it is missing"
        )
    parser.add_argument(
        "--db",
        default=os.environ.get("RELAXTUNE_DB", DEFAULT_DB),
        help="database URL (env RELAXTUNE_DB; default %(default)s)",
    )
    parser.add_argument(
        "--artifacts",
        default=os.environ.get("RELAXTUNE_ARTIFACTS", DEFAULT_ARTIFACTS),
        help="artifact folder (env RELAXTUNE_ARTIFACTS; default %(default)s)",
    )


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("RELAXTUNE_URL", DEFAULT_URL),
        help="service URL (env RELAXTUNE_URL; default %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("RELAXTUNE_TOKEN"),
        help="API token (env RELAXTUNE_TOKEN)",
    )


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray-address",
        default=os.environ.get("RELAXTUNE_RAY_ADDRESS"),
        help="Ray cluster address (default: start a local Ray)",
    )
    parser.add_argument(
        "--storage-path",
        default=os.environ.get("RELAXTUNE_RAY_STORAGE"),
        help="Ray Tune storage path shared by the cluster (default: under --artifacts)",
    )


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    values: dict[str, Any] = {"db": args.db, "artifacts": Path(args.artifacts)}
    if getattr(args, "ray_address", None):
        values["ray_address"] = args.ray_address
    if getattr(args, "storage_path", None):
        values["ray_storage"] = args.storage_path
    values.update({k: v for k, v in extra.items() if v is not None})
    try:
        return Settings(**values)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise CliError(f"invalid settings: {exc}", 2) from exc


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (``None`` for other databases or a malformed URL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _open_store(args: argparse.Namespace, *, upgrade: bool = True, existing: bool = False) -> Any:
    """The job store of ``--db``. ``existing``: refuse a SQLite file that does not exist yet
    (unless ``--create``) and say on stderr which database the command uses."""
    from service.store import JobStore

    path = _sqlite_file(args.db)
    if path is not None:
        if not path.parent.is_dir():
            raise CliError(
                f"cannot open database {path}: its folder {path.parent} does not exist", 2
            )
        if existing and not path.exists() and not getattr(args, "create", False):
            raise CliError(
                f"database {path} does not exist (check --db / RELAXTUNE_DB); "
                "pass --create to make a new one",
                2,
            )
    try:
        store = JobStore(args.db)
    except (ValueError, ImportError) as exc:  # malformed URL, missing driver
        raise CliError(f"cannot use database {args.db!r}: {exc}", 2) from exc
    if existing:
        _err(f"database: {store.engine.url.render_as_string(hide_password=True)}")
    if upgrade:
        _upgrade_store(store)
    return store


def _upgrade_store(store: Any) -> Any:
    """``store.upgrade()``, its failure a :class:`CliError`; returns what it did."""
    try:
        return store.upgrade()
    except RelaxtuneError as exc:
        cause = str(exc.__cause__ or "").splitlines()[0][:200] if exc.__cause__ else ""
        path = _sqlite_file(store.url)
        where = path if path is not None else store.engine.url.render_as_string(True)
        raise CliError(f"cannot use database {where}: {exc}: {cause}") from exc


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# --- HTTP client ---------------------------------------------------------------------------


def _http_client(args: argparse.Namespace) -> httpx.Client:
    """The HTTP client of the client commands (tests replace this function)."""
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    return httpx.Client(base_url=args.url, headers=headers, timeout=60.0)


def _check_client_args(args: argparse.Namespace) -> None:
    """Catch the usual slips in ``--url`` and ``--token`` before any request (the token is
    never printed)."""
    from urllib.parse import urlsplit

    if args.token is not None:
        args.token = args.token.strip()  # a pasted token often ends with a space or newline
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in args.token):
            raise CliError(
                "the token (--token / RELAXTUNE_TOKEN) contains spaces or control characters; "
                "copy it again as `relaxtune token create` printed it",
                2,
            )
    parts = urlsplit(args.url)
    expected = f"expected the service's base URL, such as {DEFAULT_URL}"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"--url {args.url!r} is not an http(s) URL; {expected}", 2)
    if parts.path.rstrip("/").endswith("/v1") or "/v1/" in parts.path:
        raise CliError(f"--url {args.url!r} includes the API path /v1; {expected}", 2)


def _redact(text: str, args: argparse.Namespace) -> str:
    token = getattr(args, "token", None)
    return text.replace(token, "<token>") if token else text


def _detail(response: httpx.Response) -> tuple[str, str | None]:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:500] or response.reason_phrase, None
    if isinstance(detail, dict):
        return str(detail.get("message")), detail.get("field")
    if isinstance(detail, list):  # FastAPI's own validation errors
        return "; ".join(str(d.get("msg", d)) for d in detail), None
    return str(detail), None


def _check(response: httpx.Response) -> httpx.Response:
    """Return a successful response, else raise a :class:`CliError` that says why."""
    if response.is_success:
        return response
    message, field = _detail(response)
    code = response.status_code
    if code == 401:
        raise CliError("unauthorized: pass a valid token with --token or RELAXTUNE_TOKEN")
    if code == 404 and message == "Not Found":  # no such route: not a job that is missing
        raise CliError(
            f"{response.request.url.copy_with(query=None)}: no such endpoint (HTTP 404); "
            f"is --url the base URL of a relaxtune service, such as {DEFAULT_URL}?"
        )
    if code in (400, 413, 415, 422):
        where = f"spec field {field}: " if field else ""
        raise CliError(f"refused ({code}): {where}{message}", 2)
    raise CliError(f"{message} (HTTP {code})")


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> httpx.Response:
    _check_client_args(args)
    try:
        with _http_client(args) as client:
            return _check(client.request(method, path, **kwargs))
    except httpx.TransportError as exc:
        raise CliError(
            f"cannot reach the service at {args.url}: {_redact(str(exc), args)}"
        ) from exc


def _download(args: argparse.Namespace, path: str, out: Any) -> None:
    _check_client_args(args)
    try:
        with _http_client(args) as client, client.stream("GET", path) as response:
            if not response.is_success:
                response.read()
                _check(response)
            for chunk in response.iter_bytes():
                out.write(chunk)
    except httpx.TransportError as exc:
        raise CliError(
            f"cannot reach the service at {args.url}: {_redact(str(exc), args)}"
        ) from exc


# --- client commands -----------------------------------------------------------------------


def _read_spec_bytes(spec: str) -> bytes:
    if spec == "-":
        return sys.stdin.buffer.read()
    path = Path(spec)
    if not path.is_file():
        raise CliError(f"spec file not found: {spec}", 2)
    return path.read_bytes()


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a spec file to the service."""
    body = _read_spec_bytes(args.spec)
    content_type = "application/json" if args.spec.endswith(".json") else "application/yaml"
    job = _request(
        args, "POST", "/v1/jobs", content=body, headers={"Content-Type": content_type}
    ).json()
    if args.quiet:
        print(job["id"])
    else:
        print(f"submitted job {job['id']} ({job['name']}): {job['status']}")
        print(f"  follow it: relaxtune status {job['id']} --watch")
    return 0


def _progress_text(progress: dict[str, Any]) -> str:
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


def _show_job(job: dict[str, Any], report: dict[str, Any] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    for key in ("id", "name", "tenant", "status"):
        table.add_row(key, str(job.get(key)))
    table.add_row("progress", _progress_text(job.get("progress") or {}))
    if isinstance(job.get("queue"), dict):
        table.add_row("queue", _queue_text(job["queue"]))
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
        table.add_row("gain", _report_line(report))
    Console().print(table)


def _queue_text(queue: dict[str, Any]) -> str:
    """``#2: waiting for 2 CPUs (0 free); cluster busy with 3 jobs``"""
    position = queue.get("position")
    reason = queue.get("reason") or ""
    return f"#{position}: {reason}" if position is not None else reason


def _show_jobs(jobs: list[dict[str, Any]]) -> None:
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
            _queue_text(job["queue"])
            if isinstance(job.get("queue"), dict)
            else _progress_text(job.get("progress") or {}),
            str(job.get("created_at", ""))[:19],
        )
    Console().print(table)


def _watch(args: argparse.Namespace, job_id: str) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    job = _request(args, "GET", f"/v1/jobs/{job_id}").json()
    columns = (
        TextColumn("[bold]{task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(job["id"], total=None, status=job["status"], detail="")
        while True:
            progress = job.get("progress") or {}
            done = sum(int(progress.get(k) or 0) for k in ("complete", "pruned", "failed"))
            bar.update(
                task,
                completed=done,
                total=progress.get("total"),
                status=job["status"],
                detail=_progress_text(progress),
            )
            if job["status"] in TERMINAL:
                return job
            time.sleep(args.interval)
            job = _request(args, "GET", f"/v1/jobs/{job_id}").json()


def cmd_status(args: argparse.Namespace) -> int:
    """Show one job (optionally until it ends) or list the jobs."""
    if args.job is None:
        jobs = _request(args, "GET", "/v1/jobs").json()["data"]
        _print_json(jobs) if args.json else _show_jobs(jobs)
        return 0
    job = _watch(args, args.job) if args.watch else _request(args, "GET", f"/v1/jobs/{args.job}")
    if isinstance(job, httpx.Response):
        job = job.json()
    _print_json(job) if args.json else _show_job(job, _job_report(args, job["id"]))
    return 1 if args.watch and job["status"] == "failed" else 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Ask the service to cancel a job."""
    job = _request(args, "DELETE", f"/v1/jobs/{args.job}").json()
    if job["status"] == "cancelled":
        print(f"job {job['id']} cancelled")
    else:
        print(f"cancel requested for job {job['id']}; it stops at the next check")
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    """Download the best checkpoint archive and unpack it safely."""
    from service.artifacts import UnsafeArchive, safe_extract

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.force)):
        raise CliError(f"{out} exists and is not an empty folder (use --force to overwrite)", 2)
    with tempfile.TemporaryFile() as archive:
        _download(args, f"/v1/jobs/{args.job}/best/checkpoint", archive)
        archive.seek(0)
        try:
            files = safe_extract(archive, out)
        except UnsafeArchive as exc:
            raise CliError(f"refused the downloaded archive: {exc}") from exc
        except ValueError as exc:  # zipfile.BadZipFile
            raise CliError(f"the downloaded archive is not a zip file: {exc}") from exc
    print(f"best checkpoint of job {args.job} written to {out}:")
    for path in files:
        print(f"  {path.relative_to(out)}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Save a job's dashboard page."""
    html = _request(args, "GET", f"/v1/jobs/{args.job}/dashboard").text
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    print(f"dashboard of job {args.job} written to {out}")
    return 0


def _job_report(args: argparse.Namespace, job_id: str) -> dict[str, Any] | None:
    """The job's gain report, or ``None`` when the service cannot give one."""
    try:
        return _request(args, "GET", f"/v1/jobs/{job_id}/report").json()
    except CliError:  # a service without reports, a hiccup: the status still prints
        return None


def _report_line(report: dict[str, Any]) -> str:
    """The report in one line: its verdict, or how far it got."""
    if report.get("verdict") and report.get("status") != "running":
        return str(report["verdict"])
    progress = report.get("progress") or {}
    return (
        f"{report.get('status')}: {progress.get('done', 0)}/{progress.get('total', '?')} runs "
        f"on seeds {report.get('seeds')}"
    )


def _show_report(report: dict[str, Any]) -> None:
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
    console.print(_report_line(report))


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


_REPORT_SETTLED = ("complete", "incomplete", "nothing_to_compare")


def cmd_report(args: argparse.Namespace) -> int:
    """Did relaxation help? Ask for a job's gain report (--seeds K) and/or print it."""
    if args.local:
        return _report_local(args)
    if args.seeds is not None:
        report = _request(
            args, "POST", f"/v1/jobs/{args.job}/report", json={"seeds": args.seeds}
        ).json()
        if not args.watch:
            print(
                f"gain report of job {args.job} on {args.seeds} seeds requested "
                f"({report['status']}); see it with: relaxtune report {args.job}"
            )
            return 0
    report = _request(args, "GET", f"/v1/jobs/{args.job}/report").json()
    while args.watch and report["status"] not in _REPORT_SETTLED + ("not_requested",):
        job = _request(args, "GET", f"/v1/jobs/{args.job}").json()
        if job["status"] in ("failed", "cancelled"):
            break
        time.sleep(args.interval)
        report = _request(args, "GET", f"/v1/jobs/{args.job}/report").json()
    _print_json(report) if args.json else _show_report(report)
    return 0


def _foreground_report_runner(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """``service.report.run_report`` printing each run and the verdict (foreground commands)."""
    from service.report import run_report

    return run_report(*args, show_progress=True, **kwargs)


def _report_local(args: argparse.Namespace) -> int:
    """``report --local``: run the report in the foreground on --db/--artifacts (with
    --seeds), then print it from the database."""
    from search_spaces import parse_spec
    from service.controller import Controller
    from service.store import validate_job_id

    try:
        validate_job_id(args.job)
    except NotFound as exc:
        raise CliError(f"not a job id: {args.job!r}", 2) from exc
    store = _open_store(args)
    if args.seeds is not None:
        _setup_logging(args.log_level)
        job = store.request_report(args.job, args.seeds)
        worker = f"cli-{socket.gethostname()}-{os.getpid()}"
        job = store.claim(job.id, worker)
        controller = Controller(
            store,
            _settings(args),
            worker_id=worker,
            requeue_on_stop=False,
            report_runner=_foreground_report_runner,
        )
        _stop_on_signals(controller.stop)
        finished = controller.run_job(job)
        if finished.status == "failed":
            raise CliError(f"job {finished.id} failed: {finished.error}")
    from service.report import read_report

    job = store.get_job(args.job)
    report = read_report(parse_spec(job.spec), job.id, args.db)
    _print_json(report) if args.json else _show_report(report)
    return 0


# --- database commands ---------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Create or upgrade the service tables (their migrations) and Optuna's (Optuna's)."""
    store = _open_store(args, upgrade=False)
    done = _upgrade_store(store)
    for line in done.describe():
        print(line)
    print(f"database schema up to date: {store!r}")
    store.close()
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    """Create an API token and print it (once)."""
    store = _open_store(args, existing=True)
    try:
        token = store.create_token(args.name, tenant=args.tenant, admin=args.admin)
    except ValueError as exc:
        raise CliError(str(exc), 2) from exc
    except Conflict as exc:
        raise CliError(str(exc), 2) from exc
    _err(
        f"token {args.name!r} for tenant {args.tenant or args.name!r}"
        f"{' (admin)' if args.admin else ''}; it is shown only this once:"
    )
    print(token)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke an API token by name."""
    store = _open_store(args, existing=True)
    store.revoke_token(args.name)
    print(f"token {args.name!r} revoked")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    """List API tokens (names, tenants and the tenants' quotas; never the tokens)."""
    from service.quotas import list_overrides

    store = _open_store(args, existing=True)
    overrides = list_overrides(store)
    for t in store.list_tokens():
        state = "revoked" if t["revoked_at"] else "active"
        quota = overrides.get(t["tenant"])
        shown = ",".join(f"{k}={v:g}" for k, v in sorted(quota.items())) if quota else "default"
        print(f"{t['name']}\ttenant={t['tenant']}\tadmin={t['admin']}\t{state}\tquota={shown}")
    return 0


def cmd_quota_set(args: argparse.Namespace) -> int:
    """Raise or lower a tenant's limits (KEY=VALUE; VALUE 'default' removes an override)."""
    from service.quotas import parse_quota_items, set_overrides
    from service.store import _TOKEN_NAME_PATTERN

    if not _TOKEN_NAME_PATTERN.fullmatch(args.tenant):
        raise CliError("tenant: 1-64 characters of letters, digits, '_', '.', '@', '-'", 2)
    try:
        values = parse_quota_items(args.items)
    except ValueError as exc:
        raise CliError(str(exc), 2) from exc
    store = _open_store(args, existing=True)
    set_overrides(store, args.tenant, values)
    _show_quota(store, _settings(args), args.tenant)
    return 0


def _show_quota(store: Any, settings: Settings, tenant: str) -> None:
    from service.quotas import QUOTA_KEYS, tenant_overrides

    overrides = tenant_overrides(store, tenant)
    cells = []
    for key in QUOTA_KEYS:
        value = overrides.get(key, getattr(settings, key))
        cells.append(f"{key}={value:g}{'' if key not in overrides else ' (tenant)'}")
    print(f"{tenant}\t" + "\t".join(cells))


def cmd_quota_show(args: argparse.Namespace) -> int:
    """Show the limits of a tenant (or of every tenant with a token or a quota)."""
    from service.quotas import list_overrides

    store = _open_store(args, existing=True)
    settings = _settings(args)
    tenants = (
        [args.tenant]
        if args.tenant
        else sorted({t["tenant"] for t in store.list_tokens()} | set(list_overrides(store)))
    )
    for tenant in tenants:
        _show_quota(store, settings, tenant)
    return 0


def _stop_on_signals(stop: Callable[[], None]) -> None:
    """First SIGINT/SIGTERM stops gracefully; a second SIGINT interrupts at once."""

    def handler(signum: int, _frame: Any) -> None:
        _err(f"received {signal.Signals(signum).name}: stopping (again to abort)")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _wake_on_sigusr1(wake: Callable[[], None]) -> None:
    """Call ``wake`` whenever the process gets SIGUSR1 (``relaxtune serve`` sends it when its
    API accepts a job, so the controller claims it without waiting for the next poll).

    A Python signal handler alone is not enough: the kernel delivers a process signal to any
    thread that does not block it, and once Ray has started its threads the main thread's
    timed wait is usually not the one interrupted, so the handler would only run at the end
    of the wait. Instead SIGUSR1 is blocked here, before any other thread exists (threads
    inherit the mask), and one thread takes it with ``sigwait``. The handler stays installed
    so that the signal is never fatal.
    """
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: wake())
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})

    def listen() -> None:
        while True:
            signal.sigwait({signal.SIGUSR1})
            wake()

    threading.Thread(target=listen, name="wake-on-sigusr1", daemon=True).start()


def _stop_with_parent(parent_pid: int, stop: Callable[[], None]) -> None:
    # An embedded controller must not outlive `relaxtune serve` if that dies without cleanup.
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(2)
        stop()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def cmd_controller(args: argparse.Namespace) -> int:
    """Run the controller: claim queued jobs and run their searches, many at once (one driver
    process per job, as many as the cluster's resources and the tenants' shares allow)."""
    from service.pool import DriverPool

    _setup_logging(args.log_level)
    settings = _settings(
        args,
        worker_id=args.worker_id,
        ray_num_cpus=args.num_cpus,
        max_running_jobs=args.max_running_jobs,
    )
    store = _open_store(args)
    pool = DriverPool(store, settings)
    _wake_on_sigusr1(pool.wake)  # first: before any other thread exists
    _stop_on_signals(pool.stop)
    if args.parent_pid:
        _stop_with_parent(args.parent_pid, pool.stop)
    if args.once:
        pool.drain(poll_s=args.poll)
    else:
        pool.run_forever(poll_s=args.poll)
    return 0


def _controller_command(args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "service.cli", "controller", "--db", args.db]
    command += ["--artifacts", str(args.artifacts), "--parent-pid", str(os.getpid())]
    command += ["--log-level", args.log_level]
    if args.ray_address:
        command += ["--ray-address", args.ray_address]
    if args.storage_path:
        command += ["--storage-path", args.storage_path]
    return command


def _waker(controller: subprocess.Popen[bytes]) -> Callable[[], None]:
    """Wake the embedded controller up (SIGUSR1) when a job is submitted."""

    def wake() -> None:
        if controller.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(controller.pid, signal.SIGUSR1)

    return wake


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API (and, by default, a controller process on the same database)."""
    import uvicorn

    from service.api import create_app

    _setup_logging(args.log_level)
    settings = _settings(args)
    store = _open_store(args)
    controller: subprocess.Popen[bytes] | None = None
    if not args.no_controller:
        # A separate process: the controller imports Ray, the API process must not. It starts
        # with SIGUSR1 ignored (kept across exec) until it installs its wake-up handler, so an
        # early wake-up cannot kill it.
        controller = subprocess.Popen(
            _controller_command(args),
            preexec_fn=lambda: signal.signal(signal.SIGUSR1, signal.SIG_IGN),
        )
        logger.info("controller process %d started", controller.pid)
    try:
        uvicorn.run(
            create_app(settings, store, on_job_created=_waker(controller) if controller else None),
            host=args.host,
            port=args.port,
            log_level=args.log_level.lower(),
        )
    finally:
        if controller is not None and controller.poll() is None:
            controller.terminate()
            try:
                controller.wait(timeout=60)
            except subprocess.TimeoutExpired:
                controller.kill()
                controller.wait()
        store.close()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run one search in the foreground (a new job from SPEC, or resume --job ID)."""
    from search_spaces import parse_spec
    from service.controller import Controller

    _setup_logging(args.log_level)
    settings = _settings(args)
    # a local run may name paths (data_dir, cache_dir); the spec is checked before anything
    # is created
    spec = parse_spec(_read_spec_bytes(args.spec)) if args.spec and not args.job else None
    store = _open_store(args)
    worker = f"cli-{socket.gethostname()}-{os.getpid()}"
    if args.job:
        if args.spec:
            _err("note: resuming --job uses the spec stored with the job; SPEC is ignored")
        try:
            job = store.claim(args.job, worker, allow_running=True)
        except (NotFound, Conflict) as exc:  # one line: missing, finished or being cancelled
            raise CliError(str(exc), 2) from exc
        print(f"resuming job {job.id} ({job.name})", file=sys.stderr)
    elif spec is not None:
        job = store.create_job("local", spec.to_dict(), spec.name)
        job = store.claim(job.id, worker)
        _err(f"job {job.id} ({job.name}); resume it with: relaxtune run --job {job.id}")
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
        report_runner=_foreground_report_runner,
    )
    _stop_on_signals(controller.stop)
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
        _err(f"interrupted; resume with: relaxtune run --job {job.id}")
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
    _print_json(best.to_dict())
    return 0


def _record_export(args: argparse.Namespace, best: dict[str, Any]) -> None:
    """A job that failed at its export succeeds once re-exported: say so on its row.

    The one documented way a finished job changes state (``failed`` → ``succeeded``); a job
    that is queued, running or cancelled keeps its state (checked in the same statement).
    """
    store = _open_store(args, upgrade=False)
    try:
        store.finish(args.job, "succeeded", best=best, from_statuses=("failed", "succeeded"))
    except NotFound:  # a study without a job row (exported from another database)
        pass
    except RelaxtuneError as exc:  # the export itself is done; only the row is stale
        _err(f"note: the job row was not updated: {exc}")
    finally:
        store.close()


# --- worker commands -----------------------------------------------------------------------


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
    _print_json(cli_train(args.spec, args.set, args.seed, args.out, args.epochs))
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
    _print_json(report)
    return 0 if report.get("passed") else 1


# --- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``relaxtune``."""
    parser = argparse.ArgumentParser(
        prog="relaxtune",
        description="Hyperparameter search for equivariant networks trained with "
        "constraint relaxation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], **kw: Any) -> Any:
        p = sub.add_parser(name, help=func.__doc__, description=func.__doc__, **kw)
        p.set_defaults(func=func)
        return p

    def log_level(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])

    p = command("serve", cmd_serve)
    _add_db_options(p)
    _add_ray_options(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-controller", action="store_true", help="API only (no controller)")
    log_level(p)

    p = command("controller", cmd_controller)
    _add_db_options(p)
    _add_ray_options(p)
    p.add_argument("--worker-id", help="controller identity (default: host name)")
    p.add_argument("--poll", type=float, default=1.0, help="queue poll period in seconds")
    p.add_argument("--once", action="store_true", help="run queued jobs, then exit")
    p.add_argument(
        "--num-cpus", type=int, help="CPUs of the local Ray (env RELAXTUNE_RAY_NUM_CPUS)"
    )
    p.add_argument(
        "--max-running-jobs",
        type=int,
        help="most jobs run at once (env RELAXTUNE_MAX_RUNNING_JOBS, default 4)",
    )
    p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    log_level(p)

    db = sub.add_parser("db", help="database schema commands").add_subparsers(
        dest="db_command", required=True, metavar="COMMAND"
    )
    p = db.add_parser("upgrade", help=cmd_db_upgrade.__doc__)
    p.set_defaults(func=cmd_db_upgrade)
    _add_db_options(p)

    token = sub.add_parser("token", help="API token commands").add_subparsers(
        dest="token_command", required=True, metavar="COMMAND"
    )
    p = token.add_parser("create", help=cmd_token_create.__doc__)
    p.set_defaults(func=cmd_token_create)
    p.add_argument("name")
    p.add_argument("--tenant", help="tenant of the token (default: its name)")
    p.add_argument("--admin", action="store_true", help="may see every tenant's jobs")
    _add_db_options(p, create=True)
    p = token.add_parser("revoke", help=cmd_token_revoke.__doc__)
    p.set_defaults(func=cmd_token_revoke)
    p.add_argument("name")
    _add_db_options(p)
    p = token.add_parser("list", help=cmd_token_list.__doc__)
    p.set_defaults(func=cmd_token_list)
    _add_db_options(p)

    quota = sub.add_parser("quota", help="per-tenant limits (admin)").add_subparsers(
        dest="quota_command", required=True, metavar="COMMAND"
    )
    p = quota.add_parser("set", help=cmd_quota_set.__doc__, description=cmd_quota_set.__doc__)
    p.set_defaults(func=cmd_quota_set)
    p.add_argument("tenant")
    p.add_argument("items", nargs="+", metavar="KEY=VALUE", help="e.g. max_trials=512")
    _add_db_options(p)
    p = quota.add_parser("show", help=cmd_quota_show.__doc__)
    p.set_defaults(func=cmd_quota_show)
    p.add_argument("tenant", nargs="?")
    _add_db_options(p)

    p = command("submit", cmd_submit)
    p.add_argument("spec", help="job spec file (YAML or JSON; - for stdin)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the job id")
    _add_client_options(p)

    p = command("status", cmd_status)
    p.add_argument("job", nargs="?", help="job id (default: list jobs)")
    p.add_argument("--watch", action="store_true", help="follow the job until it ends")
    p.add_argument("--interval", type=float, default=2.0, help="--watch poll period (s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_client_options(p)

    p = command("cancel", cmd_cancel)
    p.add_argument("job")
    _add_client_options(p)

    p = command("best", cmd_best)
    p.add_argument("job")
    p.add_argument("--out", required=True, help="folder to unpack the checkpoint into")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    _add_client_options(p)

    p = command("dashboard", cmd_dashboard)
    p.add_argument("job")
    p.add_argument("--out", required=True, help="HTML file to write")
    _add_client_options(p)

    p = command("report", cmd_report)
    p.add_argument("job")
    p.add_argument("--seeds", type=int, help="ask for the report on this many seeds")
    p.add_argument("--watch", action="store_true", help="wait until the report is done")
    p.add_argument("--interval", type=float, default=5.0, help="--watch poll period (s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--local",
        action="store_true",
        help="run (with --seeds) or read the report on --db/--artifacts, not via the service",
    )
    _add_client_options(p)
    _add_db_options(p)
    _add_ray_options(p)
    log_level(p)

    p = command("run", cmd_run)
    p.add_argument("spec", nargs="?", help="job spec file (YAML or JSON)")
    p.add_argument("--job", help="resume this job instead of creating one")
    _add_db_options(p)
    _add_ray_options(p)
    log_level(p)

    p = command("export", cmd_export)
    p.add_argument("job")
    _add_db_options(p)

    p = command("train", cmd_train)
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

    p = command("verify", cmd_verify)
    p.add_argument("dir", help="checkpoint folder")
    p.add_argument(
        "--tolerance",
        type=_positive_float,
        help="largest accepted equivariance error on the exact group elements (default 1e-4); "
        "the tolerance written in the folder's certificate.json is reported, never used",
    )
    return parser


def _fail(message: str, code: int) -> NoReturn:
    _err(f"relaxtune: error: {message}")
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relaxtune`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        _fail(str(exc), exc.code)
    except (NotFound, Conflict) as exc:
        _fail(str(exc), 2)
    except SpecError as exc:
        _fail(f"spec field {exc.field}: {exc.message}", 2)
    except RelaxtuneError as exc:
        _fail(str(exc), 1)
    except ValueError as exc:  # bad input the caller gave (a malformed URL, a quota value)
        _fail(str(exc), 2)


if __name__ == "__main__":
    sys.exit(main())
