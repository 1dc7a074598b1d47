"""The HTTP client commands (``submit``, ``status``, ``cancel``, ``best``, ``dashboard``,
``report``): they talk to a running service at ``--url`` with ``--token``."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from service.cli._local import report_local
from service.cli._options import (
    DEFAULT_URL,
    add_client_options,
    add_command,
    add_db_options,
    add_log_level,
    add_ray_options,
    read_spec_bytes,
)
from service.cli._output import CliError, print_json
from service.cli._views import progress_text, show_job, show_jobs, show_report

TERMINAL = ("succeeded", "failed", "cancelled")


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


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a spec file to the service."""
    body = read_spec_bytes(args.spec)
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
                detail=progress_text(progress),
            )
            if job["status"] in TERMINAL:
                return job
            time.sleep(args.interval)
            job = _request(args, "GET", f"/v1/jobs/{job_id}").json()


def cmd_status(args: argparse.Namespace) -> int:
    """Show one job (optionally until it ends) or list the jobs."""
    if args.job is None:
        jobs = _request(args, "GET", "/v1/jobs").json()["data"]
        print_json(jobs) if args.json else show_jobs(jobs)
        return 0
    job = _watch(args, args.job) if args.watch else _request(args, "GET", f"/v1/jobs/{args.job}")
    if isinstance(job, httpx.Response):
        job = job.json()
    print_json(job) if args.json else show_job(job, _job_report(args, job["id"]))
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


_REPORT_SETTLED = ("complete", "incomplete", "nothing_to_compare")


def cmd_report(args: argparse.Namespace) -> int:
    """Did relaxation help? Ask for a job's gain report (--seeds K) and/or print it."""
    if args.local:
        return report_local(args)
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
    print_json(report) if args.json else show_report(report)
    return 0


def add_commands(sub: Any) -> None:
    """The client commands' parsers."""
    p = add_command(sub, "submit", cmd_submit)
    p.add_argument("spec", help="job spec file (YAML or JSON; - for stdin)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the job id")
    add_client_options(p)

    p = add_command(sub, "status", cmd_status)
    p.add_argument("job", nargs="?", help="job id (default: list jobs)")
    p.add_argument("--watch", action="store_true", help="follow the job until it ends")
    p.add_argument("--interval", type=float, default=2.0, help="--watch poll period (s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_client_options(p)

    p = add_command(sub, "cancel", cmd_cancel)
    p.add_argument("job")
    add_client_options(p)

    p = add_command(sub, "best", cmd_best)
    p.add_argument("job")
    p.add_argument("--out", required=True, help="folder to unpack the checkpoint into")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    add_client_options(p)

    p = add_command(sub, "dashboard", cmd_dashboard)
    p.add_argument("job")
    p.add_argument("--out", required=True, help="HTML file to write")
    add_client_options(p)

    p = add_command(sub, "report", cmd_report)
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
    add_client_options(p)
    add_db_options(p)
    add_ray_options(p)
    add_log_level(p)
