"""The charged N-body task: simulator, cache, data, EGNN equivariance, projection and export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from workers.relax import (
    NotExportableError,
    check_exportable,
    project_model,
    relaxed_layers,
    reset_free_terms,
    set_theta,
    to_torchscript,
)
from workers.tasks import _nbody_sim
from workers.tasks._base import Task
from workers.tasks._egnn import EXPORTABLE_MODULES
from workers.tasks._nbody_sim import NBodySimConfig, load_or_simulate, simulate_charged
from workers.tasks.nbody import ELEMENT_NAMES, NBodyTask

TINY_MODEL = {"hidden": 16, "layers": 2, "vector_channels": 3}


def _reference_trajectory(
    charges: np.ndarray, pos: np.ndarray, vel: np.ndarray, cfg: NBodySimConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Straightforward per-system transcription of the NRI/EGNN generator loop."""

    def forces(x: np.ndarray) -> np.ndarray:
        diff = x[:, None] - x[None]
        r = np.sqrt((diff**2).sum(-1))
        np.fill_diagonal(r, 1.0)
        size = charges * charges.T / r**3
        np.fill_diagonal(size, 0.0)
        return np.clip((size[..., None] * diff).sum(1), -cfg.max_force, cfg.max_force)

    locs, vels = [], []
    vel = vel + cfg.dt * forces(pos)
    for step in range(1, cfg.n_steps):
        pos = pos + cfg.dt * vel
        if step % cfg.sample_every == 0:
            locs.append(pos)
            vels.append(vel)
        vel = vel + cfg.dt * forces(pos)
    return np.array(locs), np.array(vels)


def _task(tmp_path: Path, size: int = 16, **model: int) -> NBodyTask:
    sizes = {"train_size": size, "val_size": size, "test_size": size}
    return NBodyTask({**TINY_MODEL, **model}, {**sizes, "cache_dir": str(tmp_path)})


def _random_inputs(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 5, 3, generator=gen)
    vel = torch.randn(n, 5, 3, generator=gen) * 0.5
    charges = torch.randint(0, 2, (n, 5, 1), generator=gen).float() * 2 - 1
    return pos, vel, charges


def _relax_randomly(model: nn.Module, theta: float = 0.5) -> None:
    with torch.no_grad():
        for layer in relaxed_layers(model):
            layer.free.normal_(std=0.3)
    set_theta(model, theta)


# ---- simulator ------------------------------------------------------------------------
def test_simulator_matches_reference_loop() -> None:
    cfg = NBodySimConfig(n_steps=1000, frames=(2, 7))
    out = simulate_charged(3, seed=5, config=cfg)
    rng = np.random.default_rng(5)
    charges = rng.choice(np.array([-1.0, 1.0]), size=(3, 5, 1))
    pos = rng.standard_normal((3, 5, 3))
    vel = rng.standard_normal((3, 5, 3))
    vel *= 0.5 / np.linalg.norm(vel, axis=-1, keepdims=True)
    np.testing.assert_array_equal(out["charges"], charges)
    for s in range(3):
        locs, vels = _reference_trajectory(charges[s], pos[s], vel[s], cfg)
        assert len(locs) == cfg.n_frames
        np.testing.assert_allclose(out["positions"][s], locs[[2, 7]], atol=1e-12)
        np.testing.assert_allclose(out["velocities"][s], vels[[2, 7]], atol=1e-12)


def test_simulator_is_deterministic_per_seed() -> None:
    cfg = NBodySimConfig(n_steps=500, frames=(1, 3))
    a, b = simulate_charged(4, 1, cfg), simulate_charged(4, 1, cfg)
    c = simulate_charged(4, 2, cfg)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["positions"], c["positions"])
    assert a["positions"].shape == (4, 2, 5, 3) and a["charges"].shape == (4, 5, 1)
    assert set(np.unique(a["charges"])) <= {-1.0, 1.0}


def test_simulator_rejects_frames_out_of_range() -> None:
    with pytest.raises(ValueError, match="frames"):
        simulate_charged(1, 0, NBodySimConfig(frames=(49,)))


def test_cache_hit_skips_simulation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = NBodySimConfig(n_steps=300, frames=(0, 1))
    first = load_or_simulate(5, 3, cfg, tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left behind
    with np.load(files[0], allow_pickle=False) as stored:
        assert sorted(stored.files) == ["charges", "positions", "velocities"]

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("simulated again despite a cached file")

    monkeypatch.setattr(_nbody_sim, "simulate_charged", fail)
    second = load_or_simulate(5, 3, cfg, tmp_path)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    # any other parameter (or seed) is another key
    with pytest.raises(AssertionError, match="simulated again"):
        load_or_simulate(5, 4, cfg, tmp_path)
    with pytest.raises(AssertionError, match="simulated again"):
        load_or_simulate(5, 3, NBodySimConfig(n_steps=300, frames=(0, 1), speed=0.4), tmp_path)


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RELAXTUNE_CACHE", str(tmp_path))
    assert _nbody_sim.default_cache_dir() == tmp_path / "nbody"


def test_sanity_baselines(tmp_path: Path) -> None:
    """docs/METHOD.md §7: copying x30 gives MSE ≈ 0.27, x30 + v·1.0 gives ≈ 0.11."""
    task = NBodyTask(
        {}, {"train_size": 400, "val_size": 1, "test_size": 1, "cache_dir": str(tmp_path)}
    )
    pos30, vel30, _, pos40 = task.build_data(0).train.tensors
    still = float((pos30 - pos40).pow(2).mean())
    inertial = float((pos30 + vel30 - pos40).pow(2).mean())
    assert 0.2 < still < 0.35
    assert 0.07 < inertial < 0.15


# ---- task -----------------------------------------------------------------------------
def test_task_data_shapes_and_independence_from_trial_seed(tmp_path: Path) -> None:
    task = _task(tmp_path, size=8)
    assert isinstance(task, Task)
    assert (task.name, task.metric, task.mode, task.group) == ("nbody", "mse", "min", "E3")
    assert task.exact_elements == ELEMENT_NAMES
    splits = task.build_data(seed=1)
    item = splits.train[0]
    assert [tuple(t.shape) for t in item] == [(5, 3), (5, 3), (5, 1), (5, 3)]
    assert all(t.dtype == torch.float32 for t in item)
    other = task.build_data(seed=2)
    torch.testing.assert_close(splits.val.tensors[0], other.val.tensors[0], rtol=0, atol=0)
    assert not torch.equal(splits.train.tensors[0], splits.val.tensors[0])
    # growing the training split leaves validation untouched
    bigger = NBodyTask(
        TINY_MODEL, {"train_size": 12, "val_size": 8, "test_size": 8, "cache_dir": str(tmp_path)}
    ).build_data(0)
    torch.testing.assert_close(bigger.val.tensors[0], splits.val.tensors[0], rtol=0, atol=0)


def test_task_rejects_unknown_config_keys() -> None:
    with pytest.raises(ValueError, match="hiden"):
        NBodyTask({"hiden": 3}, {})
    with pytest.raises(ValueError, match="train"):
        NBodyTask({}, {"train": 3})


def test_loss_and_metric_sums() -> None:
    task = NBodyTask({}, {})
    out, target = torch.zeros(2, 5, 3), torch.ones(2, 5, 3) * 2
    assert float(task.loss(out, target)) == pytest.approx(4.0)
    assert task.metric_sums(out, target) == (pytest.approx(120.0), 30)


def test_build_model_is_seeded_and_starts_unrelaxed() -> None:
    task = NBodyTask(TINY_MODEL, {})
    a, b, c = task.build_model(0), task.build_model(0), task.build_model(1)
    inputs = _random_inputs()
    torch.testing.assert_close(a(*inputs), b(*inputs))
    assert not torch.allclose(a(*inputs), c(*inputs))
    layers = relaxed_layers(a)
    assert len(layers) == TINY_MODEL["layers"]
    assert all(int(torch.count_nonzero(layer.free)) == 0 for layer in layers)


# ---- equivariance, projection, export --------------------------------------------------
def test_equivariant_at_theta_zero() -> None:
    task = NBodyTask(TINY_MODEL, {})
    model = task.build_model(0)
    errors = task.equivariance_errors(model, _random_inputs(), seed=0)
    assert sorted(errors) == sorted(ELEMENT_NAMES)
    assert max(errors.values()) < 1e-5


def test_relaxed_breaks_and_projection_restores_equivariance() -> None:
    task = NBodyTask(TINY_MODEL, {})
    model = task.build_model(0)
    _relax_randomly(model)
    inputs = _random_inputs()
    errors = task.equivariance_errors(model, inputs, seed=0)
    assert min(errors[f"rot{i}"] for i in range(8)) > 1e-3
    assert min(errors["refl0"], errors["refl1"]) > 1e-3
    # the relaxed term acts on differences and velocities: translations stay exact
    assert errors["trans"] < 1e-5
    for mode in ("orthogonal", "drop"):
        projected = project_model(model, mode)
        assert max(task.equivariance_errors(projected, inputs, seed=1).values()) < 1e-5


def test_equivariance_errors_restore_training_mode() -> None:
    task = NBodyTask(TINY_MODEL, {})
    model = task.build_model(0)
    model.train()
    task.equivariance_errors(model, _random_inputs(), seed=0)
    assert model.training


def test_export_requires_projection_and_matches_after_it() -> None:
    task = NBodyTask(TINY_MODEL, {})
    model = task.build_model(0)
    _relax_randomly(model)
    with pytest.raises(NotExportableError, match="project"):
        model.export()
    projected = project_model(model)
    projected.train()
    exported = projected.export()
    assert projected.training  # export works on a copy
    inputs = _random_inputs(seed=3)
    expected = projected(*inputs)
    torch.testing.assert_close(exported(*inputs), expected)
    traced = to_torchscript(exported, _random_inputs(n=4, seed=4))
    torch.testing.assert_close(traced(*inputs), expected)
    with torch.no_grad():
        next(exported.parameters()).add_(1.0)
    torch.testing.assert_close(projected(*inputs), expected)  # no shared storage


def test_a_few_adam_steps_reduce_the_loss(tmp_path: Path) -> None:
    task = _task(tmp_path, size=64)
    pos, vel, charges, target = task.build_data(0).train.tensors
    model = task.build_model(0)
    _relax_randomly(model, theta=0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(task.loss(model(pos, vel, charges), target))
    for _ in range(20):
        optimizer.zero_grad()
        task.loss(model(pos, vel, charges), target).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(task.loss(model(pos, vel, charges), target))
    assert after < 0.7 * before


def test_free_term_reads_raw_node_features_and_writes_velocity_and_scalars() -> None:
    """The relaxed node update is dense over [h, (C + 3) vectors as xyz] → [h, velocity]."""
    hidden, channels = TINY_MODEL["hidden"], TINY_MODEL["vector_channels"]
    layer = relaxed_layers(NBodyTask(TINY_MODEL, {}).build_model(0))[0]
    assert tuple(layer.free.shape) == (hidden + 3, hidden + 3 * (channels + 3))


def test_vector_components_leaking_into_invariant_features_break_equivariance() -> None:
    """Only the vector → scalar block of W is set: the projection removes it entirely (so
    both projections equal the unrelaxed model), yet the relaxed model is not rotation
    equivariant, because xyz components reach h and every later message."""
    task = NBodyTask(TINY_MODEL, {})
    model = task.build_model(0)
    hidden = TINY_MODEL["hidden"]
    with torch.no_grad():
        for layer in relaxed_layers(model):
            layer.free.zero_()
            layer.free[:hidden, hidden:].normal_(std=0.3)
    set_theta(model, 0.5)
    inputs = _random_inputs()
    errors = task.equivariance_errors(model, inputs, seed=0)
    assert min(errors[f"rot{i}"] for i in range(8)) > 1e-3
    assert errors["trans"] < 1e-5
    unrelaxed = task.build_model(0)
    for mode in ("orthogonal", "drop"):
        torch.testing.assert_close(project_model(model, mode)(*inputs), unrelaxed(*inputs))
    assert not torch.allclose(model(*inputs), unrelaxed(*inputs), atol=1e-4)


def test_library_free_term_reset_reaches_every_node_update() -> None:
    model = NBodyTask(TINY_MODEL, {}).build_model(0)
    reset_free_terms(model, "normal", 0.01, seed=0)
    assert all(int(torch.count_nonzero(layer.free)) > 0 for layer in relaxed_layers(model))


def test_exportability_check_names_the_module() -> None:
    model = NBodyTask(TINY_MODEL, {}).build_model(0)
    model.layers[1].extra = nn.Dropout()
    with pytest.raises(NotExportableError, match=r"layers\.1\.extra"):
        check_exportable(model, allowed=EXPORTABLE_MODULES)
