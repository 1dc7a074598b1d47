"""End to end with a real server process: `relaxtune serve` (API + embedded controller)."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from workers.training import verify_checkpoint

pytestmark = pytest.mark.slow

SPEC = """
name: e2e-nbody
task: nbody
model: {hidden: 16, layers: 2}
data: {train_size: 100, val_size: 50, test_size: 50}
search_space: paper
budget: {trials: 2, epochs: 2, max_concurrent: 2}
objective: {metric: val_mse, mode: min}
resources: {cpu: 1, gpu: 0}
scheduler: none
seed: 0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_serve_submit_watch_dashboard_download_verify(tmp_path):
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    common = ["--db", db]
    _cli("db", "upgrade", *common, cwd=tmp_path)
    alice = _cli("token", "create", "alice", *common, cwd=tmp_path).splitlines()[-1]
    bob = _cli("token", "create", "bob", *common, cwd=tmp_path).splitlines()[-1]
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - the server writes to it
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            *common,
            "--artifacts",
            str(tmp_path / "art"),
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    a = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {alice}"}, timeout=30)
    b = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {bob}"}, timeout=30)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail((tmp_path / "serve.log").read_text()[-3000:])
        bad = a.post(
            "/v1/jobs",
            content=SPEC.replace("trials: 2", "trials: 0"),
            headers={"Content-Type": "application/yaml"},
        )
        assert bad.status_code == 422 and "budget.trials" in bad.text
        assert httpx.post(f"{url}/v1/jobs", content=SPEC).status_code == 401
        created = a.post("/v1/jobs", content=SPEC, headers={"Content-Type": "application/yaml"})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert b.get(f"/v1/jobs/{job_id}").status_code == 404  # another tenant: not found
        assert b.get(f"/v1/jobs/{job_id}/best/checkpoint").status_code == 404
        deadline = time.time() + 240
        status = {}
        while time.time() < deadline:
            status = a.get(f"/v1/jobs/{job_id}").json()
            if status["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(1)
        assert status.get("status") == "succeeded", (
            status,
            (tmp_path / "serve.log").read_text()[-3000:],
        )
        assert status["progress"]["complete"] + status["progress"]["pruned"] == 2
        trials = a.get(f"/v1/jobs/{job_id}/trials").json()
        assert trials["count"] == 2 and {t["state"] for t in trials["data"]} <= {
            "COMPLETE",
            "PRUNED",
        }
        page = a.get(f"/v1/jobs/{job_id}/dashboard")
        assert page.status_code == 200 and "chart-history" in page.text
        assert not re.search(r"<script[^>]+src=", page.text)  # plotly.js embedded, no CDN
        best = a.get(f"/v1/jobs/{job_id}/best").json()
        assert best["certificate"]["passed"]
        archive = a.get(f"/v1/jobs/{job_id}/best/checkpoint")
        assert archive.status_code == 200
        with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
            names = z.namelist()
            assert not [n for n in names if n.endswith((".pkl", ".pt", ".pickle"))]
            z.extractall(tmp_path / "download")
        assert verify_checkpoint(tmp_path / "download")["passed"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
