"""Shared pieces of the reliability tests: tiny specs, subprocess services, waiting, Ray
worker discovery and a real (tiny) checkpoint folder.

Imported by the ``tests/reliability/test_*.py`` modules (their folder is on ``sys.path``).
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]

#: The smallest real search: N-body, hidden 16, 2 layers, 100/50/50 systems.
TINY_NBODY: dict[str, Any] = {
    "name": "tiny-nbody",
    "task": "nbody",
    "model": {"hidden": 16, "layers": 2},
    "data": {"train_size": 100, "val_size": 50, "test_size": 50},
    "search_space": {
        "optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "relax.schedule": "none",
    },
    "budget": {"trials": 2, "epochs": 3, "max_concurrent": 1},
    "objective": {"metric": "val_mse", "mode": "min"},
    "resources": {"cpu": 1, "gpu": 0},
    "scheduler": "none",
    "seed": 0,
}


def tiny_spec(**changes: Any) -> dict[str, Any]:
    """A copy of :data:`TINY_NBODY` with top-level keys replaced."""
    spec = copy.deepcopy(TINY_NBODY)
    spec.update(copy.deepcopy(changes))
    return spec


def wait_for(condition: Callable[[], Any], timeout: float, what: str, period: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(period)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def start_process(args: list[str], log: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so a kill of its group takes its Ray along)."""
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        args,
        cwd=REPO,
        env=child_env(**extra_env),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def relaxtune_args(*argv: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *argv]


def start_api(
    db: str, artifacts: Path, port: int, log: Path, **env: str
) -> subprocess.Popen[bytes]:
    """``relaxtune serve --no-controller`` on ``port``; returns once ``/healthz`` answers."""
    proc = start_process(
        relaxtune_args(
            "serve",
            "--no-controller",
            "--db",
            db,
            "--artifacts",
            str(artifacts),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ),
        log,
        **env,
    )

    def up() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 60, "the API to answer /healthz")
    return proc


def _parent_pid(pid: int) -> int | None:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the command name


def ray_trial_workers(root: int | None = None) -> list[int]:
    """PIDs of Ray worker processes running a trial (``ray::ImplicitFunc...`` titles) that
    descend from ``root`` (default: this process, whose local Ray starts the raylet that
    forks them). Only this test's own: another test's Ray (another pytest worker, a bench)
    runs trial workers with the same title."""
    root = os.getpid() if root is None else root
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ")
        except OSError:
            continue
        if not cmdline.startswith(b"ray::ImplicitFunc"):
            continue
        ancestor: int | None = int(entry.name)
        while ancestor not in (None, 0, 1, root):
            ancestor = _parent_pid(ancestor)
        if ancestor == root:
            pids.append(int(entry.name))
    return pids


def study_trials(db: str, job_id: str) -> list[Any]:
    """The Optuna trials (``FrozenTrial``) of job ``job_id``'s study; ``[]`` before the
    study exists."""
    import optuna

    from service.artifacts import study_name

    try:
        return optuna.load_study(study_name=study_name(job_id), storage=db).get_trials()
    except KeyError:
        return []


def make_checkpoint(out: Path, epochs: int = 1) -> Path:
    """Train the tiny N-body model for ``epochs`` (no Ray) and write its checkpoint folder."""
    from workers.training import TrialConfig, train

    config = TrialConfig(
        task="nbody",
        model=dict(TINY_NBODY["model"]),
        data=dict(TINY_NBODY["data"]),
        hparams={"optim.lr": 3e-3},
        epochs=epochs,
        seed=0,
        device="cpu",
    )
    train(config, out_dir=out)
    return out
