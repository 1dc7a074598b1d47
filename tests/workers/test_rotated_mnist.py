"""The rotated_mnist task: data, steerable CNN, projection exactness, export."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import escnn.nn as enn
import numpy as np
import pytest
import torch
from escnn import gspaces

from workers.relax import (
    NotExportableError,
    check_exportable,
    export_module,
    project_model,
    register_exporter,
    relaxed_layers,
    reset_free_terms,
    set_theta,
    to_torchscript,
)
from workers.relax._escnn_exporters import ExportedFourierPointwise, export_fourier_pointwise
from workers.tasks._base import Task
from workers.tasks._mnist_data import (
    RotatedMNISTConfig,
    build_rotated_splits,
    load_rotated_mnist,
    parse_idx,
    rotate_images,
)
from workers.tasks._steerable_cnn import SteerableCNN, SteerableCNNConfig
from workers.tasks.rotated_mnist import EXACT_ELEMENTS, RotatedMNISTTask

TINY_DATA = {"train_size": 60, "val_size": 30, "test_size": 30}


def _task(tmp_path: Path, group: str = "C4", **model: object) -> RotatedMNISTTask:
    model_config = {"group": group, "width": 2, "depth": 2, "kernel_size": 3, **model}
    return RotatedMNISTTask(model_config, {**TINY_DATA, "cache_dir": str(tmp_path)})


def _train_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 3) -> None:
    """A few optimiser steps so weights and batch-norm statistics are not at their init."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---- data ----------------------------------------------------------------------------------
def test_data_deterministic_disjoint_and_stratified(tmp_path: Path) -> None:
    config = RotatedMNISTConfig(train_size=200, val_size=100, test_size=100, data_seed=3)
    a = build_rotated_splits(config)
    b = build_rotated_splits(config)
    for key, value in vars(a).items():
        np.testing.assert_array_equal(value, getattr(b, key))
    # stratified: every digit equally often in each split (500 per class in the source)
    for split in ("train", "val", "test"):
        counts = np.bincount(getattr(a, f"{split}_labels"), minlength=10)
        assert counts.max() - counts.min() <= 1, counts
    # disjoint: no image of one split appears in another (compare unrotated sources)
    plain = build_rotated_splits(RotatedMNISTConfig(**{**vars(config), "rotate": False}))
    keys = [
        {img.tobytes() for img in getattr(plain, f"{s}_images")} for s in ("train", "val", "test")
    ]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    other = build_rotated_splits(RotatedMNISTConfig(**{**vars(config), "data_seed": 4}))
    assert not np.array_equal(other.train_labels, a.train_labels)


def test_items_and_dtypes(tmp_path: Path) -> None:
    task = _task(tmp_path)
    splits = task.build_data(seed=123)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [60, 30, 30]
    image, label = splits.train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert label.dtype == torch.int64 and 0 <= int(label) < 10
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    # the trial seed does not change the data
    again = task.build_data(seed=7)
    assert torch.equal(again.train.tensors[0], splits.train.tensors[0])


def test_rotation_angles_seeded_and_applied() -> None:
    config = RotatedMNISTConfig(train_size=50, val_size=20, test_size=20, data_seed=0)
    a, b = build_rotated_splits(config), build_rotated_splits(config)
    np.testing.assert_array_equal(a.train_angles, b.train_angles)
    assert a.train_angles.min() >= 0 and a.train_angles.max() < 2 * np.pi
    assert len(np.unique(a.train_angles)) == 50  # continuous angles, one per image
    c = build_rotated_splits(RotatedMNISTConfig(**{**vars(config), "data_seed": 1}))
    assert not np.allclose(a.train_angles, c.train_angles)
    # the stored image is the source image rotated by its angle
    plain = build_rotated_splits(RotatedMNISTConfig(**{**vars(config), "rotate": False}))
    again = rotate_images(plain.train_images[:5, 0], a.train_angles[:5])
    np.testing.assert_allclose(again, a.train_images[:5, 0], atol=1e-6)


def test_rotate_images_quarter_turn_is_exact() -> None:
    x = np.random.default_rng(0).random((2, 28, 28))
    out = rotate_images(x, np.array([np.pi / 2, np.pi]))
    np.testing.assert_allclose(out[0], np.rot90(x[0]), atol=1e-12)
    np.testing.assert_allclose(out[1], np.rot90(x[1], 2), atol=1e-12)


def test_cache_roundtrip_without_pickle(tmp_path: Path) -> None:
    config = RotatedMNISTConfig(train_size=20, val_size=10, test_size=10)
    first = load_rotated_mnist(config, tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    with np.load(files[0], allow_pickle=False) as data:
        assert set(data.files) == set(vars(first))
    second = load_rotated_mnist(config, tmp_path)
    np.testing.assert_array_equal(first.val_images, second.val_images)
    load_rotated_mnist(RotatedMNISTConfig(train_size=21, val_size=10, test_size=10), tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2  # keyed by the parameters


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_idx_data_dir(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix, n in (("train", 40), ("t10k", 20)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    assert parse_idx(
        gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    ).shape == (20,)
    task = RotatedMNISTTask(
        {"group": "C4"},
        {
            "train_size": 20,
            "val_size": 10,
            "test_size": 10,
            "data_dir": str(folder),
            "cache_dir": str(tmp_path / "cache"),
        },
    )
    splits = task.build_data(0)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [20, 10, 10]
    with pytest.raises(ValueError, match="only 40 available"):
        RotatedMNISTTask(
            {},
            {"train_size": 35, "val_size": 10, "data_dir": str(folder), "cache_dir": str(tmp_path)},
        ).build_data(0)


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        RotatedMNISTTask({"groups": "C4"}, {})
    with pytest.raises(ValueError, match="group"):
        RotatedMNISTTask({"group": "D4"}, {})
    with pytest.raises(ValueError, match="kernel_size"):
        RotatedMNISTTask({"kernel_size": 4}, {})
    with pytest.raises(ValueError, match="fourier_samples"):
        RotatedMNISTTask({"group": "SO2", "fourier_samples": 10}, {})


# ---- model ---------------------------------------------------------------------------------
def test_protocol_and_attributes(tmp_path: Path) -> None:
    task = _task(tmp_path, group="C8")
    assert isinstance(task, Task)
    assert (task.name, task.metric, task.mode, task.group) == (
        "rotated_mnist",
        "accuracy",
        "max",
        "C8",
    )
    assert task.exact_elements == EXACT_ELEMENTS
    out = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    assert task.metric_sums(out, torch.tensor([0, 1, 1])) == (2.0, 3)


@pytest.mark.parametrize("group", ["C4", "C8", "SO2"])
def test_forward_shapes_and_relaxed(tmp_path: Path, group: str) -> None:
    task = _task(tmp_path, group=group)
    model = task.build_model(seed=0)
    assert len(relaxed_layers(model)) == 2  # one per conv block
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    features = model.features(x)
    assert features.type == model.feature_type and features.shape[-2:] == (7, 7)
    # the trial seed sets the initialisation, reproducibly
    again = task.build_model(seed=0)
    for p, q in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("group", ["C4", "C8", "SO2"])
def test_projected_exact_on_rot90_relaxed_not(tmp_path: Path, group: str) -> None:
    task = _task(tmp_path, group=group)
    model = task.build_model(seed=0)
    x, y = task.build_data(0).val[:8]
    reset_free_terms(model, "normal", 0.1, seed=0)
    set_theta(model, 0.5)
    _train_steps(model, x, y)
    relaxed = task.equivariance_errors(model, (x,), seed=0)
    for name in ("rot90", "rot180", "rot270"):
        assert relaxed[name] > 1e-3, relaxed
    projected = project_model(model, "orthogonal")
    errors = task.equivariance_errors(projected, (x,), seed=0)
    expected = {"C4": 4, "C8": 8, "SO2": 12}[group]
    assert len(errors) == expected and set(EXACT_ELEMENTS) <= set(errors)
    for name in EXACT_ELEMENTS:
        assert errors[name] < 1e-5, errors
    # the same model measured through logits only (e.g. after export) agrees
    exported = projected.export()
    logit_errors = task.equivariance_errors(exported, (x,), seed=0)
    assert max(logit_errors[n] for n in EXACT_ELEMENTS) < 1e-5


@pytest.mark.parametrize("group", ["C4", "C8", "SO2"])
def test_export_matches_and_traces(tmp_path: Path, group: str) -> None:
    task = _task(tmp_path, group=group)
    model = task.build_model(seed=1)
    x, y = task.build_data(0).train[:16]
    reset_free_terms(model, "normal", 0.05, seed=1)
    set_theta(model, 0.3)
    _train_steps(model, x, y)
    projected = project_model(model, "orthogonal").eval()
    exported = projected.export()
    assert not any(type(m).__module__.startswith("escnn") for m in exported.modules())
    with torch.no_grad():
        reference = projected(x)
        assert _rel(exported(x), reference) < 1e-5
        traced = to_torchscript(exported, (x,))
        assert _rel(traced(x), reference) < 1e-5
        # exporting works on a copy: the source model is unchanged
        assert torch.equal(projected(x), reference)


def test_relaxed_model_export_names_the_layer(tmp_path: Path) -> None:
    model = _task(tmp_path).build_model(seed=0)
    with pytest.raises(NotExportableError, match=r"body\.conv1.*project"):
        model.export()


def test_fourier_elu_export_after_training() -> None:
    gspace = gspaces.rot2dOnR2(-1, maximum_frequency=3)
    act = enn.FourierELU(gspace, 3, irreps=gspace.fibergroup.bl_irreps(2), N=12)
    in_type = enn.FieldType(gspace, [gspace.trivial_repr])
    net = enn.SequentialModule(
        enn.R2Conv(in_type, act.in_type, kernel_size=3, padding=1),
        enn.IIDBatchNorm2d(act.in_type),
        act,
        enn.PointwiseAvgPool2D(act.in_type, 2),
    )
    pool = enn.NormPool(act.in_type)
    x = torch.randn(8, 1, 12, 12)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        loss = pool(net(enn.GeometricTensor(x, in_type))).tensor.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    exported = export_module(net, "net")
    exported_pool = export_module(pool, "pool")
    assert isinstance(exported[2], ExportedFourierPointwise)
    with torch.no_grad():
        reference = pool(net(enn.GeometricTensor(x, in_type))).tensor
        assert _rel(exported_pool(exported(x)), reference) < 1e-5


def test_fourier_relu_export_with_out_irreps() -> None:
    gspace = gspaces.rot2dOnR2(-1, maximum_frequency=4)
    G = gspace.fibergroup
    act = enn.FourierPointwise(
        gspace,
        2,
        G.bl_irreps(3),
        function="p_relu",
        out_irreps=G.bl_irreps(1),
        type="regular",
        N=16,
    )
    x = torch.randn(4, act.in_type.size, 5, 5)
    exported = export_fourier_pointwise(act)
    with torch.no_grad():
        reference = act(enn.GeometricTensor(x, act.in_type)).tensor
        assert _rel(exported(x), reference) < 1e-5


def test_unexportable_module_is_named() -> None:
    gspace = gspaces.rot2dOnR2(-1, maximum_frequency=2)
    field = enn.FieldType(gspace, [gspace.irrep(1)] * 2)
    net = enn.SequentialModule(
        enn.R2Conv(enn.FieldType(gspace, [gspace.trivial_repr]), field, kernel_size=3),
        enn.NormNonLinearity(field, function="n_relu"),
    )
    with pytest.raises(NotExportableError, match=r"net\.1.*NormNonLinearity"):
        export_module(net, "net")


def test_build_model_rejects_unexportable_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``build_model`` runs the export check: an unexportable block fails at build time."""
    original = SteerableCNN._activation

    def norm_relu(self: SteerableCNN) -> enn.EquivariantModule:
        if self.config.group != "SO2":
            return original(self)
        field = enn.FieldType(self.gspace, [self.gspace.irrep(1)] * 2)
        return enn.NormNonLinearity(field, function="n_relu")

    monkeypatch.setattr(SteerableCNN, "_activation", norm_relu)
    task = _task(tmp_path, group="SO2", max_frequency=2, fourier_samples=8)
    with pytest.raises(NotExportableError, match=r"body\.act1.*NormNonLinearity"):
        task.build_model(seed=0)


def test_check_exportable_accepts_all_groups() -> None:
    for group in ("C4", "C16", "SO2"):
        model = SteerableCNN(SteerableCNNConfig(group=group, width=1, depth=1, kernel_size=3))
        check_exportable(model)


def test_shipped_export_goes_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SteerableCNN.export`` (what a checkpoint ships) runs ``export_module`` and its
    registry: an exporter registered for ``GroupPooling`` is the one the export uses."""
    from workers.relax import _export

    monkeypatch.setattr(_export, "_EXPORTERS", dict(_export._EXPORTERS))

    class Marker(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1]

    register_exporter(enn.GroupPooling, lambda module: Marker())
    model = SteerableCNN(SteerableCNNConfig(group="C4", width=1, depth=1, kernel_size=3))
    assert isinstance(model.export().invariant, Marker)


@pytest.mark.slow
def test_short_training_learns(tmp_path: Path) -> None:
    """A quick C4 model learns the rotated digits well above chance in a few epochs."""
    task = RotatedMNISTTask(
        {"group": "C4", "width": 8, "depth": 2},
        {"train_size": 1000, "val_size": 300, "test_size": 100, "cache_dir": str(tmp_path)},
    )
    splits = task.build_data(0)
    model = task.build_model(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(splits.train, batch_size=64, shuffle=True)
    for _ in range(4):
        model.train()
        for x, y in loader:
            loss = task.loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        x, y = splits.val[:]
        correct, total = task.metric_sums(model(x), y)
    assert correct / total > 0.3
