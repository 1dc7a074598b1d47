"""``relaxtune run`` end to end with the ``adaptive`` preset on a tiny N-body spec: a real
two-stage search (Ray + Optuna), the learned strengths and dual variables in the trial
history, a certified best checkpoint, and the dashboard's strengths chart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from service import dashboard
from service.dashboard._strengths import STRENGTHS_CHART_ID
from workers.training import verify_checkpoint

pytestmark = pytest.mark.slow

SPEC = """\
name: tiny-adaptive
task: nbody
model: {hidden: 16, layers: 2}
data: {train_size: 100, val_size: 50, test_size: 50}
search_space: adaptive
budget: {trials: 2, epochs: 3, max_concurrent: 1}
objective: {metric: val_mse, mode: min}
resources: {cpu: 1, gpu: 0}
scheduler: none
seed: 0
"""


def test_relaxtune_run_with_the_adaptive_preset(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    cli = Path(sys.executable).with_name("relaxtune")
    proc = subprocess.run(
        [str(cli), "run", str(spec), "--db", db, "--artifacts", str(tmp_path / "artifacts")],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "RELAXTUNE_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    (summary,) = optuna.get_all_study_summaries(db)
    study = optuna.load_study(study_name=summary.study_name, storage=db)
    trials = study.get_trials()
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials)
    # two stages: the optimiser with θ = 0, then the adaptive relaxation with it fixed
    baseline, adaptive = sorted(trials, key=lambda t: t.user_attrs["stage"])
    assert all(h["strengths"] is None for h in baseline.user_attrs["history"])
    history = adaptive.user_attrs["history"]
    assert adaptive.params["relax.dual_lr"] > 0 and len(history) == 3
    first, last = history[0], history[-1]
    assert len(first["strengths"]) == len(first["duals"]) == 2  # one per relaxed layer
    assert first["theta"] > 0 and any(v != 0 for v in first["duals"])
    assert last["strengths"] == [0.0, 0.0] and last["theta"] == 0.0  # the tail
    assert adaptive.user_attrs["equivariance_error_projected"] < 1e-4
    best = tmp_path / "artifacts" / "jobs"
    (folder,) = best.glob("*/best")
    assert json.loads((folder / "certificate.json").read_text())["passed"]
    assert verify_checkpoint(folder)["passed"]
    page = dashboard.render_dashboard(study, {"id": "j", "name": "tiny", "status": "succeeded"})
    assert f'id="{STRENGTHS_CHART_ID}"' in page
