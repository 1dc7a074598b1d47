"""The API process must not import torch, escnn or ray, not even transitively.

Checked in a fresh interpreter that builds the app, serves every kind of request (submit,
status, trials, dashboard, best) and then looks at ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import service.cli  # `relaxtune serve` runs the API from here
    import service.controller  # the embedded controller is imported lazily by serve
    from fastapi.testclient import TestClient
    from service.api import create_app
    from service.settings import Settings
    from service.store import JobStore

    tmp = Path(sys.argv[1])
    store = JobStore(f"sqlite:///{tmp / 'jobs.db'}")
    store.upgrade()
    headers = {"Authorization": "Bearer " + store.create_token("alice")}
    client = TestClient(create_app(Settings(db=store.url, artifacts=tmp / "artifacts"), store))
    spec = (
        "name: t\\ntask: rotated_mnist\\nmodel: {group: C4}\\nsearch_space: relax\\n"
        "budget: {trials: 2, epochs: 1}\\nobjective: {metric: val_accuracy, mode: max}\\n"
    )
    job = client.post("/v1/jobs", content=spec, headers=headers).json()
    codes = [client.post("/v1/jobs", content=spec, headers=headers).status_code]
    for route in ("", "/trials", "/dashboard", "/best", "/best/checkpoint", "/report"):
        codes.append(client.get(f"/v1/jobs/{job['id']}{route}", headers=headers).status_code)
    codes.append(client.get("/v1/dashboard", headers=headers).status_code)
    codes.append(client.get("/v1/jobs", headers=headers).status_code)
    banned = sorted(
        m for m in sys.modules if m.split(".")[0] in {"torch", "escnn", "ray", "workers"}
    )
    print(json.dumps({"codes": codes, "banned": banned}))
    """
)


def test_api_process_imports_no_torch_escnn_or_ray(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["codes"] == [201, 200, 200, 200, 409, 409, 200, 200, 200], report
    assert report["banned"] == []
