"""Normalisation statistics of the projected model are recomputed, not inherited."""

from __future__ import annotations

import pytest
import torch

from workers.relax import (
    normalisation_layers,
    project_model,
    recompute_normalisation,
    sample_batches,
)
from workers.tasks._steerable_cnn import SteerableCNN, SteerableCNNConfig
from workers.training import Trainer, TrialConfig


def _corrupt(model: torch.nn.Module, seed: int = 7) -> None:
    """Overwrite every running mean / variance with nonsense of the right shape."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in normalisation_layers(model):
            for name, buf in layer.named_buffers(recurse=False):
                if "running_mean" in name:
                    buf.copy_(torch.randn(buf.shape, generator=g) * 3)
                elif "running_var" in name:
                    buf.copy_(torch.rand(buf.shape, generator=g) * 5 + 0.1)


@pytest.mark.parametrize("group", ["C4", "SO2"])
def test_corrupted_statistics_score_like_clean_ones_after_the_step(group):
    torch.manual_seed(0)
    config = SteerableCNNConfig(
        group=group, width=2, depth=2, head_hidden=8, max_frequency=2, fourier_samples=8
    )
    clean = SteerableCNN(config)
    corrupted = SteerableCNN(config)
    corrupted.load_state_dict(clean.state_dict())
    kinds = {type(m).__name__ for m in normalisation_layers(clean)}
    assert "BatchNorm1d" in kinds and kinds & {"BatchNorm3d", "IIDBatchNorm2d"}
    _corrupt(corrupted)
    images = torch.rand(96, 1, 28, 28)
    batches = [(images[i : i + 32],) for i in range(0, 96, 32)]
    probe = torch.rand(16, 1, 28, 28)

    def out(model):
        model.eval()
        with torch.no_grad():
            return model(probe)

    assert not torch.allclose(out(clean), out(corrupted), atol=1e-3)
    assert recompute_normalisation(clean, batches) == 96
    assert recompute_normalisation(corrupted, batches) == 96
    torch.testing.assert_close(out(corrupted), out(clean), rtol=1e-5, atol=1e-5)
    # momentum is restored; the statistics are the plain average over the three batches
    assert all(m.momentum == 0.1 for m in normalisation_layers(clean))
    head_bn = clean.head[1]
    assert int(head_bn.num_batches_tracked) == 3


def test_no_normalisation_layers_is_a_no_op():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    assert recompute_normalisation(model, [(torch.rand(4, 3),)]) == 0


def test_sample_batches_are_fixed_and_sized():
    data = torch.utils.data.TensorDataset(torch.arange(1025.0).unsqueeze(1), torch.zeros(1025))
    first = sample_batches(data, 1024, batch_size=256, seed=3)
    again = sample_batches(data, 1024, batch_size=256, seed=3)
    assert [b[0].shape[0] for b in first] == [256] * 4
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    assert len({float(x) for b in first for x in b[0]}) == 1024
    # a lone last sample is left out (a batch norm cannot measure its variance)
    assert [b[0].shape[0] for b in sample_batches(data, 257, batch_size=256)] == [256]


def test_trainer_validates_the_projected_model_with_recomputed_statistics():
    config = TrialConfig(
        task="rotated_mnist",
        model={"group": "C4", "width": 2, "depth": 1, "head_hidden": 8},
        data={"train_size": 64, "val_size": 32, "test_size": 32},
        hparams={"relax.schedule": "constant", "relax.theta": 0.5, "optim.batch_size": 32},
        epochs=1,
        seed=0,
        device="cpu",
        norm_samples=64,
    )
    trainer = Trainer(config)
    trainer.fit()
    clean = trainer.evaluate(trainer.projected_model(), trainer.val_loader)
    clean_logits = trainer.projected_model()(*trainer.eval_inputs)
    _corrupt(trainer.model)
    stale = project_model(trainer.model, trainer.projection).eval()
    assert not torch.allclose(stale(*trainer.eval_inputs), clean_logits, atol=1e-3)
    assert trainer.evaluate(trainer.projected_model(), trainer.val_loader) == clean
    torch.testing.assert_close(trainer.projected_model()(*trainer.eval_inputs), clean_logits)
