"""Ray's fractional-GPU placement of a search, on a machine without a GPU.

Ray schedules GPUs as a declared resource: a local Ray started with ``num_gpus=2`` offers two
GPU ids whether or not a GPU is there, and gives each trial that asks for ``gpu: 0.5`` half
of one of them (``ray.get_gpu_ids()``, ``CUDA_VISIBLE_DEVICES``). The trainable reports both
with every epoch (``gpu_ids``, ``cuda_visible_devices``); this test runs four concurrent
trials and reads them back from Tune's ``result.json``: two trials per GPU id. Torch sees no
GPU here, so the workers train on the CPU (``RELAXTUNE_DEVICE=cpu``), while the spec still
asks for GPUs (a trial's device from such a spec is ``cuda``; without the override it would
fail, as the second test checks).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from search_spaces import SpecError, parse_spec
from service.search import run_search, trial_base
from workers.training import DEVICE_ENV, TrialConfig, pick_device

pytestmark = pytest.mark.slow

SPEC = {
    "name": "fake-gpus",
    "task": "rotated_mnist",
    "model": {"group": "C4", "width": 4, "depth": 2, "head_hidden": 16},
    "data": {"train_size": 128, "val_size": 64, "test_size": 64},
    "search_space": "relax",
    "strategy": "joint",  # one Tune run: all four trials in it
    # four trials at once: with 0.5 GPU each they fill both declared GPUs exactly
    "budget": {"trials": 4, "epochs": 1, "max_concurrent": 4},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "resources": {"cpu": 1, "gpu": 0.5},
    "scheduler": "none",
    "seed": 5,
}


def _spec():
    # the spec check refuses GPUs on a host without nvidia-smi: declare them available
    return parse_spec(SPEC, gpu_available=lambda: True)


@pytest.fixture
def fake_gpu_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local Ray declaring 2 GPUs and 4 CPUs; its workers train on the CPU."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # set before ray.init: the worker processes inherit it
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    ray.init(
        address="local",
        num_cpus=4,
        num_gpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=80 * 1024 * 1024,
    )
    try:
        yield
    finally:
        ray.shutdown()


def _results(storage: Path) -> list[dict]:
    rows = []
    for path in storage.glob("run-*/*/result.json"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def test_half_gpu_trials_are_placed_two_per_gpu(fake_gpu_ray, tmp_path: Path) -> None:
    import ray

    assert ray.cluster_resources().get("GPU") == 2
    storage = tmp_path / "ray"
    result = run_search(
        _spec(),
        "gpujob",
        f"sqlite:///{tmp_path / 'jobs.db'}",
        tmp_path / "art",
        storage_path=str(storage),
    )
    assert result["status"] == "succeeded"
    rows = _results(storage)
    assert rows, f"no result.json under {storage}"
    per_trial = {row["trial_id"]: row for row in rows}
    assert len(per_trial) == 4
    placement = {t: (r["gpu_ids"], r["cuda_visible_devices"]) for t, r in per_trial.items()}
    print("\ntrial -> (ray.get_gpu_ids(), CUDA_VISIBLE_DEVICES):")
    for trial, where in sorted(placement.items()):
        print(f"  {trial}  {where}")
    for gpu_ids, visible in placement.values():
        # half a GPU is one GPU id, and CUDA_VISIBLE_DEVICES shows the trial only that one
        assert len(gpu_ids.split(",")) == 1 and gpu_ids == visible, placement
    # Tune launches the four trials at once (max_concurrent 4, resources for 4): Ray gives
    # their actors GPU shares when they are created, seconds before any trial can finish, so
    # the two declared GPUs hold two trials each (their training may start far apart on a
    # busy machine; the allocation does not wait for it)
    assert Counter(g for g, _ in placement.values()) == {"0": 2, "1": 2}, placement
    # the GPU spec made cuda trials; the override kept them on the CPU of this machine
    assert {r["device"] for r in per_trial.values()} == {"cpu"}
    base = trial_base(_spec())
    assert base["trial"]["device"] == "cuda"


def test_a_cuda_trial_without_a_visible_gpu_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    config = TrialConfig.from_spec(_spec(), {})
    assert config.device == "cuda"
    with pytest.raises(SpecError, match="no GPU is visible"):
        pick_device(config.device)
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert pick_device(config.device).type == "cpu"
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(SpecError, match=DEVICE_ENV):
        pick_device("auto")
    monkeypatch.delenv(DEVICE_ENV)
    # no device string falls back to the CPU unnoticed
    with pytest.raises(SpecError, match="no GPU is visible"):
        pick_device("cuda:1")
    with pytest.raises(SpecError, match="unknown device"):
        pick_device("gpu")
    assert pick_device("auto").type == "cpu"
