"""Process supervision: ``serve`` (the HTTP API, and a controller in a child process) and
``controller`` (the scheduling controller), with the signals that stop and wake them."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from service.cli._options import (
    add_command,
    add_db_options,
    add_log_level,
    add_ray_options,
    open_store,
    settings_from,
    setup_logging,
)
from service.cli._output import err

logger = logging.getLogger("relaxtune")


def stop_on_signals(stop: Callable[[], None]) -> None:
    """First SIGINT/SIGTERM stops gracefully; a second SIGINT interrupts at once."""

    def handler(signum: int, _frame: Any) -> None:
        err(f"received {signal.Signals(signum).name}: stopping (again to abort)")
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

    setup_logging(args.log_level)
    settings = settings_from(
        args,
        worker_id=args.worker_id,
        ray_num_cpus=args.num_cpus,
        max_running_jobs=args.max_running_jobs,
    )
    store = open_store(args)
    pool = DriverPool(store, settings)
    _wake_on_sigusr1(pool.wake)  # first: before any other thread exists
    stop_on_signals(pool.stop)
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

    setup_logging(args.log_level)
    settings = settings_from(args)
    store = open_store(args)
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


def add_commands(sub: Any) -> None:
    """The parsers of ``serve`` and ``controller``."""
    p = add_command(sub, "serve", cmd_serve)
    add_db_options(p)
    add_ray_options(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-controller", action="store_true", help="API only (no controller)")
    add_log_level(p)

    p = add_command(sub, "controller", cmd_controller)
    add_db_options(p)
    add_ray_options(p)
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
    add_log_level(p)
