"""Task schemas: a spec's model/data/objective checked completely when it is read (no torch),
with the closest valid key for a misspelt one; plugins declare their schema the same way."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from search_spaces import SpecError, parse_spec
from search_spaces.tasks import SCHEMA_ENTRY_POINT_GROUP, resolve_dataset, task_schema

TASKS = ("rotated_mnist", "nbody", "toy")


def spec(task: str = "rotated_mnist", **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "t",
        "task": task,
        "search_space": "relax",
        "budget": {"trials": 2, "epochs": 1},
        "objective": (
            {"metric": "val_mse", "mode": "min"}
            if task == "nbody"
            else {"metric": "val_accuracy", "mode": "max"}
        ),
    }
    return base | changes


def refusal(data: dict[str, Any], **kwargs: Any) -> SpecError:
    kwargs.setdefault("tasks", TASKS)
    with pytest.raises(SpecError) as info:
        parse_spec(data, **kwargs)
    return info.value


@pytest.mark.parametrize(
    ("data", "field", "hint"),
    [
        (spec(model={"widht": 4}), "model.widht", "did you mean 'width'?"),
        (spec(model={"kernal_size": 3}), "model.kernal_size", "did you mean 'kernel_size'?"),
        (spec(data={"train_sise": 10}), "data.train_sise", "did you mean 'train_size'?"),
        (spec("nbody", model={"hiden": 8}), "model.hiden", "did you mean 'hidden'?"),
        (spec(budjet={"trials": 2, "epochs": 1}), "budjet", "did you mean 'budget'?"),
        (
            spec(objective={"metric": "val_acuracy", "mode": "max"}),
            "objective.metric",
            "did you mean 'val_accuracy'?",
        ),
        (
            spec(search_space={"relax.theta_mx": {"low": 0.0, "high": 1.0}}),
            "search_space.relax.theta_mx",
            "did you mean 'relax.theta_max'?",
        ),
        (spec(resources={"cpus": 1}), "resources.cpus", "did you mean 'cpu'?"),
    ],
)
def test_misspelt_keys_name_the_field_and_the_closest_valid_one(
    data: dict[str, Any], field: str, hint: str
) -> None:
    error = refusal(data)
    assert error.field == field
    assert hint in error.message
    assert str(error).startswith(f"{field}: ")


def test_model_widht_reads_as_the_issue_asks() -> None:
    assert str(refusal(spec(model={"widht": 4}))).startswith(
        "model.widht: unknown key; did you mean 'width'?"
    )


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (spec(model={"width": "8"}), "model.width", "integer"),
        (spec(model={"width": 8.5}), "model.width", "integer"),
        (spec(model={"group": "C7"}), "model.group", "C8"),
        (spec(model={"width": 100_000}), "model.width", "<= 64"),
        (spec(model={"depth": 200}), "model.depth", "<= 12"),
        (spec(model={"kernel_size": 99}), "model.kernel_size", "<= 13"),
        (spec(model={"kernel_size": 4}), "model.kernel_size", "odd"),
        (spec(model={"group": "SO2", "nonlinearity": "relu"}), "model.nonlinearity", "fourier"),
        (spec(data={"train_size": 10**9}), "data.train_size", "<= 60000"),
        (spec(data={"rotate": "yes"}), "data.rotate", "boolean"),
        (spec(data={"train_size": 4000, "val_size": 1000}), "data.train_size", "5000"),
        (spec("nbody", model={"layers": 200}), "model.layers", "<= 12"),
        (spec("nbody", data={"val_size": 0}), "data.val_size", ">= 1"),
        (spec(objective={"metric": "val_accuracy", "mode": "min"}), "objective.mode", "max"),
        (
            spec("nbody", objective={"metric": "val_accuracy", "mode": "min"}),
            "objective.metric",
            "val_mse",
        ),
    ],
)
def test_wrong_types_ranges_and_metrics_are_refused(
    data: dict[str, Any], field: str, words: str
) -> None:
    error = refusal(data)
    assert error.field == field, error
    assert words in error.message, error


def test_valid_task_options_are_kept_as_given() -> None:
    model = {"group": "SO2", "width": 4, "nonlinearity": "fourier_relu", "fourier_samples": 8}
    parsed = parse_spec(spec(model=model, data={"train_size": 100}), tasks=TASKS)
    assert parsed.model == model and parsed.data == {"train_size": 100}
    assert parse_spec(parsed.to_dict(), tasks=TASKS).to_dict() == parsed.to_dict()


def test_every_example_spec_passes_its_schema_as_a_tenant_spec() -> None:
    import search_spaces as ss

    for name in ss.list_examples():
        parse_spec(ss.example_path(name).read_text(), local=False)


def test_local_specs_may_name_paths_tenant_specs_may_not(tmp_path: Path) -> None:
    data = spec(data={"cache_dir": str(tmp_path)})
    assert parse_spec(data, tasks=TASKS).data == {"cache_dir": str(tmp_path)}
    assert refusal(data, local=False).field == "data.cache_dir"


def test_a_task_without_a_schema_runs_locally_only() -> None:
    data = spec("toy", model={"anything": 1}, objective={"metric": "val_x", "mode": "max"})
    assert parse_spec(data, tasks=TASKS).model == {"anything": 1}
    error = refusal(data, local=False)
    assert error.field == "task" and "schema" in error.message


def test_resolve_dataset_stays_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "rotated_mnist" / "fashion").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "rotated_mnist" / "escape").symlink_to(outside)
    found = resolve_dataset(root, "rotated_mnist", "fashion", "data.dataset")
    assert found == (root / "rotated_mnist" / "fashion").resolve()
    with pytest.raises(SpecError, match="leaves the dataset root"):
        resolve_dataset(root, "rotated_mnist", "escape", "data.dataset")
    with pytest.raises(SpecError, match="did you mean 'fashion'"):
        resolve_dataset(root, "rotated_mnist", "fashon", "data.dataset")
    for bad in ("..", "../x", "/etc", "~", ".hidden", "a/b", "%2e%2e"):
        with pytest.raises(SpecError, match="not a path"):
            resolve_dataset(root, "rotated_mnist", bad, "data.dataset")


PLUGIN = """
from pydantic import BaseModel, ConfigDict, Field
from search_spaces.tasks import TaskSchema

class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(4, strict=True, ge=1, le=32)

class Data(BaseModel):
    model_config = ConfigDict(extra="forbid")
    points: int = Field(10, strict=True, ge=1, le=1000)

SCHEMA = TaskSchema(name="toy", model=Model, data=Data, metric="loss", mode="min")
"""


def test_a_plugin_declares_its_schema_through_the_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real installed distribution (a dist-info folder on sys.path) registering a schema."""
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""
            [{SCHEMA_ENTRY_POINT_GROUP}]
            toy = toy_plugin:SCHEMA
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "toy_plugin", raising=False)
    assert task_schema("toy") is not None
    ok = spec("toy", model={"size": 8}, objective={"metric": "val_loss", "mode": "min"})
    assert parse_spec(ok, tasks=TASKS, local=False).model == {"size": 8}
    error = refusal(ok | {"model": {"sise": 8}}, local=False)
    assert (error.field, "did you mean 'size'?" in error.message) == ("model.sise", True)
    error = refusal(ok | {"data": {"points": 10**6}}, local=False)
    assert error.field == "data.points" and "<= 1000" in error.message
    error = refusal(ok | {"objective": {"metric": "val_los", "mode": "min"}})
    assert error.field == "objective.metric" and "val_loss" in error.message


def test_the_documented_task_options_are_the_schemas() -> None:
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md").read_text()
    for name in ("rotated_mnist", "nbody"):
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{name}` |"))
        _, model_cell, data_cell = (cell.strip() for cell in row.strip("|").split("|"))
        schema = task_schema(name)
        assert schema is not None
        for cell, section in ((model_cell, schema.model), (data_cell, schema.data)):
            # the keys are the backticked words that open each comma-separated item
            keys = {m for m in re.findall(r"(?:^|, )`(\w+)`", cell)}
            assert keys == set(section.model_fields), (name, keys)
            for key, info in section.model_fields.items():
                caps = [m.le for m in info.metadata if getattr(m, "le", None) is not None]
                if caps:
                    assert (
                        f"`{key}` (" in cell
                        and f"≤ {caps[0]})" in cell.split(f"`{key}`")[1].split("`")[0]
                    ), (name, key)
