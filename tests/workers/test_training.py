"""The training loop and the checkpoint folder, on tiny versions of both tasks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from search_spaces import Hyperparameters, SpecError
from workers.training import (
    CheckpointError,
    Trainer,
    TrialConfig,
    TrialDivergedError,
    export_trial,
    train,
    trial_config_from_spec,
    verify_checkpoint,
)

TINY = {
    "nbody": dict(
        model={"hidden": 16, "layers": 2},
        data={"train_size": 64, "val_size": 32, "test_size": 32},
    ),
    "rotated_mnist": dict(
        model={"group": "C4", "width": 4, "depth": 2, "head_hidden": 16},
        data={"train_size": 128, "val_size": 64, "test_size": 64},
    ),
}
RELAXED = {
    "relax.schedule": "triangular",
    "relax.theta_max": 1.0,
    "relax.lambda_norm": 0.01,
    "relax.lambda_proj": 0.01,
    "optim.batch_size": 32,
}


def _config(task: str, epochs: int = 1, **hparams) -> TrialConfig:
    return TrialConfig(
        task=task, hparams={**RELAXED, **hparams}, epochs=epochs, seed=0, device="cpu", **TINY[task]
    )


# A check that runs with torch alone: no relaxtune package on the path or in sys.modules.
_PLAIN_TORCH_CHECK = textwrap.dedent(
    """
    import json, math, sys
    import torch
    from safetensors.torch import load_file
    folder = sys.argv[1]
    model = torch.jit.load(folder + "/model.ts")
    inputs = load_file(folder + "/inputs.safetensors")
    xs = [inputs[f"input_{i}"] for i in range(len(inputs))]
    task = json.load(open(folder + "/config.json"))["task"]
    with torch.no_grad():
        out = model(*xs)
        if task == "rotated_mnist":   # logits are invariant under 90° rotations
            err = max(float((model(torch.rot90(xs[0], k, (2, 3))) - out).norm() / out.norm()) for k in (1, 2, 3))
        else:                         # positions rotate with the inputs
            q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
            rot = model(xs[0] @ q.T, xs[1] @ q.T, xs[2])
            err = float(((rot - out @ q.T).norm()) / (out - xs[0]).norm())
    leaked = [m for m in ("workers", "service", "search_spaces", "escnn") if m in sys.modules]
    print(json.dumps({"error": err, "leaked": leaked, "finite": bool(torch.isfinite(out).all())}))
    """
)


@pytest.mark.parametrize("task", ["nbody", "rotated_mnist"])
def test_one_epoch_writes_a_checkpoint_that_loads_in_plain_torch(task, tmp_path):
    out = tmp_path / "ckpt"
    result = train(_config(task), out_dir=out)
    assert result.checkpoint_dir == out
    for name in (
        "model.safetensors",
        "model.ts",
        "config.json",
        "certificate.json",
        "metrics.json",
    ):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.pt"))
    certificate = json.loads((out / "certificate.json").read_text())
    # float32 rounding only: the head's batch norm, with its statistics recomputed on the
    # projected model, divides invariants of small spread (std ~0.1 after one epoch), which
    # scales the rounding of the logits up to ~1e-5; the feature map stays near 5e-7
    assert certificate["passed"] and certificate["max_error_exact"] < 5e-5
    assert certificate["relaxed_errors"], "relaxed model's errors are recorded too"
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"test_{metrics['metric']}" in metrics and len(metrics["history"]) == 1
    # every hyperparameter the run used is recorded, those it took as defaults included
    recorded = json.loads((out / "config.json").read_text())["hparams"]
    assert recorded == Hyperparameters.from_flat(RELAXED).flat()
    assert set(recorded) > set(RELAXED) and recorded["optim.grad_clip"] == 1.0
    # a fresh interpreter outside the repository, with only torch (+ safetensors) imported
    proc = subprocess.run(
        [sys.executable, "-c", _PLAIN_TORCH_CHECK, str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["leaked"] == [] and report["finite"]
    assert report["error"] < 1e-5
    assert verify_checkpoint(out)["passed"]


class _EventHook:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, bool]] = []

    def on_first_batch(self, trainer: Trainer) -> None:
        self.events.append(("first_batch", trainer.epoch, trainer.model.training))

    def on_epoch_end(self, report, trainer: Trainer) -> None:
        self.events.append(("epoch_end", report.epoch, trainer.model.training))


def test_epoch_reports_track_projected_and_relaxed(tmp_path):
    trainer = Trainer(_config("nbody", epochs=3, **{"relax.init": "normal", "relax.init_std": 0.1}))
    hook = _EventHook()
    reports = trainer.fit([hook]).reports
    # on_first_batch: once per fit, in training mode, before anything was trained
    assert [e[:2] for e in hook.events] == [
        ("first_batch", 0),
        ("epoch_end", 1),
        ("epoch_end", 2),
        ("epoch_end", 3),
    ]
    assert hook.events[0][2] is True
    assert [r.epoch for r in reports] == [1, 2, 3]
    # the triangle is squeezed into [0, 2/3]: the last epoch (min_tail, one epoch at least)
    # trains at θ = 0, and the peak is at 1/3
    mid, _, end = reports
    assert mid.theta == pytest.approx(1.0)
    assert mid.equivariance_error_relaxed > 1e-3 > 1e-5 > mid.equivariance_error_projected
    assert end.theta == 0.0 and end.equivariance_error_relaxed < 1e-5  # θ = 0: equivariant again
    assert mid.penalty_norm is not None and mid.penalty_proj is not None
    assert mid.penalty_grad_ratio is not None and mid.penalty_grad_ratio > 0
    # at θ = 0 the penalties are not computed (the free term does not act)
    assert end.penalty_norm is None and end.penalty_grad_ratio is None


def test_free_weights_have_their_own_optimiser_group():
    config = _config(
        "nbody",
        **{
            "optim.lr": 2e-3,
            "optim.weight_decay": 1e-4,
            "relax.free_lr_mult": 0.1,
            "relax.free_weight_decay": 0.5,
        },
    )
    trainer = Trainer(config)
    main, free = trainer.optimizer.param_groups
    assert (main["lr"], main["weight_decay"]) == (2e-3, 1e-4)
    assert free["lr"] == pytest.approx(2e-4) and free["weight_decay"] == 0.5
    layer_free = {
        id(p)
        for m in trainer.model.modules()
        if hasattr(m, "free_parameters")
        for p in m.free_parameters()
    }
    assert {id(p) for p in free["params"]} == layer_free
    assert not layer_free & {id(p) for p in main["params"]}


def _gradient_norms_at_each_step(trainer: Trainer) -> list[float]:
    norms: list[float] = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.fit()
    return norms


def test_gradient_norm_is_clipped_before_each_step():
    clipped = _gradient_norms_at_each_step(Trainer(_config("nbody", **{"optim.grad_clip": 1e-3})))
    free = _gradient_norms_at_each_step(Trainer(_config("nbody", **{"optim.grad_clip": 0.0})))
    assert len(clipped) == len(free) > 1
    assert max(clipped) <= 1e-3 * (1 + 1e-5)
    assert min(free) > 1e-3  # without clipping the same steps see larger gradients


def test_deterministic_for_a_seed_and_resume_continues_the_same_run(tmp_path):
    config = _config("nbody", epochs=3, **{"relax.init": "normal"})
    straight = [r.val_projected for r in Trainer(config).fit().reports]
    again = [r.val_projected for r in Trainer(config).fit().reports]
    assert straight == again
    first = Trainer(config)
    first.config.epochs = 3
    first.fit(should_stop=lambda: first.epoch == 1)  # stop after one epoch, keep the state
    first.save_state(tmp_path / "state")
    state = torch.load(tmp_path / "state/state.pt", weights_only=True)  # no pickle needed
    assert state["epoch"] == 1
    resumed = Trainer(config)
    assert resumed.load_state(tmp_path / "state")
    rest = [r.val_projected for r in resumed.fit().reports]
    assert rest == pytest.approx(straight, rel=1e-6)


def test_divergence_is_an_error_naming_the_step():
    with pytest.raises(TrialDivergedError, match="epoch 1"):
        Trainer(_config("nbody", **{"optim.lr": 1e12})).fit()


def test_bad_set_keys_fail_before_training():
    spec = Path(__file__).parents[2] / "search_spaces/examples/quick_nbody.yaml"
    with pytest.raises(SpecError) as err:
        trial_config_from_spec(spec, ["relax.shedule=triangular"])
    assert "relax.shedule" in str(err.value)
    with pytest.raises(SpecError) as err:
        trial_config_from_spec(spec, ["relax.schedule=zigzag"])
    assert "triangular" in str(err.value)  # the allowed values are listed
    config = trial_config_from_spec(
        spec, ["relax.schedule=cosine", "optim.lr=0.01"], seed=3, epochs=2
    )
    assert config.hparams["relax.schedule"] == "cosine" and config.seed == 3 and config.epochs == 2


def test_export_trial_writes_a_verified_folder_from_a_saved_state(tmp_path):
    config = _config("nbody", epochs=2)
    trainer = Trainer(config)
    trainer.fit()
    trainer.save_state(tmp_path / "state")
    metrics = export_trial(config, tmp_path / "state", tmp_path / "best")
    assert verify_checkpoint(tmp_path / "best")["passed"]
    assert metrics["epochs"] == 2 and metrics == json.loads(
        (tmp_path / "best/metrics.json").read_text()
    )
    with pytest.raises(CheckpointError, match="no saved state"):
        export_trial(config, tmp_path / "nothing", tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_trial_config_from_spec_takes_the_spec_unless_told():
    from search_spaces import example_path, parse_spec

    spec = parse_spec(example_path("quick_nbody").read_text())
    config = TrialConfig.from_spec(spec, {"optim.lr": 0.01})
    assert (config.task, config.model, config.data) == (
        spec.task,
        dict(spec.model),
        dict(spec.data),
    )
    assert (config.epochs, config.seed, config.device) == (spec.budget.epochs, spec.seed, "cpu")
    assert config.hparams == {"optim.lr": 0.01} and config.data_seed is None
    other = TrialConfig.from_spec(spec, {}, seed=7, epochs=3, data_seed=0, device="auto")
    assert (other.seed, other.epochs, other.data_seed, other.device) == (7, 3, 0, "auto")


def test_the_loop_and_the_checkpoint_writer_do_not_import_each_other():
    """``train`` (``_train.py``) joins them; an import of one by the other at run time
    (a lazy one inside a function included) would be a circle."""
    import ast

    folder = Path(__file__).resolve().parents[2] / "workers" / "training"

    def runtime_imports(name: str) -> set[str]:
        tree = ast.parse((folder / name).read_text())
        typing_only = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for stmt in block.body
            for node in ast.walk(stmt)
        }
        return {
            node.module or ""
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and id(node) not in typing_only
        }

    assert not any(m.endswith("_checkpoint") for m in runtime_imports("_loop.py"))
    assert not any(m.endswith("_loop") for m in runtime_imports("_checkpoint.py"))
