"""``scripts/gpu_check.py`` in CPU mode: every part at tiny sizes, as it runs on a GPU.

On a machine with a GPU the same script runs with ``--device cuda`` at full sizes
(docs/SCALE.md, "GPU"); here the parts, the figures file and the recommendation logic are
checked on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_mode_runs_every_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "gpu_check: OK" in proc.stdout
    figures = json.loads((out / "gpu_check.json").read_text())
    assert figures["problems"] == []
    assert figures["environment"]["device"] == "cpu"

    contract = figures["contract"]
    # 2 tasks × 2 precisions × (θ = 0 drop, θ = 0 orthogonal, export, certificate)
    assert len(contract) == 16
    assert all(r["passed"] for r in contract if not r.get("informational"))
    assert [r["precision"] for r in contract if r.get("informational")] == ["bf16"] * 2
    assert {(r["task"], r["precision"]) for r in contract} == {
        (t, p) for t in ("rotated_mnist", "nbody") for p in ("float32", "bf16")
    }
    # the certificate is only worth something if the relaxed model is not equivariant
    certs = [
        r for r in contract if r["check"].startswith("certificate") and r["precision"] == "float32"
    ]
    assert all(r["relaxed_max_error_exact"] > 10 * r["value"] for r in certs)

    steps = figures["step_cost"]
    assert set(steps) == {"rotated_mnist/batch16", "nbody/batch16"}
    for step in steps.values():
        assert set(step["median_ms"]) == {"standard", "relaxed", "relaxed+pen"}
        assert step["ratio"]["standard"] == 1.0

    training = figures["training"]
    assert set(training) == {"rotated_mnist", "nbody"}
    for run in training.values():
        assert run["device"] == "cpu" and run["epochs"] == 1
        assert run["certificate_passed"] and run["samples_per_s"] > 0
        assert (Path(run["checkpoint"]) / "model.ts").is_file()

    levels = figures["concurrency"]
    assert set(levels) == {"1", "2"}
    for level in levels.values():
        assert "errors" not in level
        for task in ("rotated_mnist", "nbody"):
            assert level[task]["per_trial_samples_per_s"] > 0
    for rec in figures["recommendation"].values():
        assert (
            rec["trials_per_device"] in (1, 2) and rec["fraction"] == 1 / rec["trials_per_device"]
        )


def test_cuda_without_a_gpu_fails_saying_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no GPU, even on a machine with one
    )
    assert proc.returncode == 1
    assert "sees no CUDA device" in proc.stderr


def test_recommendation_takes_the_fewest_trials_near_the_best_throughput() -> None:
    gc = _module()
    env = {"gpu_memory_mib": 80_000.0, "cpu_count": 16}

    def level(total: float, mib: float) -> dict:
        return {t: {"total_samples_per_s": total, "per_trial_device_mib": mib} for t in gc.TASKS}

    levels = {
        "1": level(1000, 900),
        "4": level(3000, 900),
        "8": level(3500, 900),
        "16": level(3600, 900),
    }
    rec = gc.recommend(levels, "cuda", env)
    # 8 processes reach 3500 / 3600 = 97 % of the best; 4 only 83 %
    assert rec["rotated_mnist"]["trials_per_device"] == 8
    assert rec["rotated_mnist"]["fraction"] == 0.125
    # memory: 16 × 6000 MiB exceeds 80 % of the device, 8 × 6000 does not
    levels = {"8": level(3000, 6000), "16": level(3300, 6000)}
    assert gc.recommend(levels, "cuda", env)["nbody"]["trials_per_device"] == 8
    # CPUs: one per trial
    assert gc.recommend(levels, "cuda", {**env, "cpu_count": 4})["nbody"]["fraction"] is None
    assert gc.recommend({}, "cuda", env)["nbody"]["fraction"] is None
