"""The torch-free schemas (search_spaces/tasks) describe exactly what the tasks accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_spaces.tasks import task_schema
from workers.tasks import nbody, rotated_mnist


@pytest.mark.parametrize("module", [rotated_mnist, nbody])
def test_schema_keys_defaults_and_metric_match_the_task(module) -> None:
    task_cls = {"rotated_mnist": rotated_mnist.RotatedMNISTTask, "nbody": nbody.NBodyTask}[
        module.__name__.rsplit(".", 1)[1]
    ]
    schema = task_schema(task_cls.name)
    assert schema is not None
    assert (schema.metric, schema.mode) == (task_cls.metric, task_cls.mode)
    for section, defaults in (("model", module.MODEL_DEFAULTS), ("data", module.DATA_DEFAULTS)):
        fields = getattr(schema, section).model_fields
        assert set(fields) == set(defaults), section
        assert {k: f.default for k, f in fields.items()} == defaults, section


def test_a_dataset_name_resolves_under_the_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "rotated_mnist" / "fashion"
    folder.mkdir(parents=True)
    monkeypatch.setenv("RELAXTUNE_DATA_ROOT", str(tmp_path))
    task = rotated_mnist.RotatedMNISTTask({}, {"dataset": "fashion"})
    assert task.rotmnist_config.data_dir == str(folder.resolve())
    with pytest.raises(ValueError, match="unknown dataset"):
        rotated_mnist.RotatedMNISTTask({}, {"dataset": "digits"})
    monkeypatch.delenv("RELAXTUNE_DATA_ROOT")
    with pytest.raises(ValueError, match="no dataset root"):
        rotated_mnist.RotatedMNISTTask({}, {"dataset": "fashion"})
