"""JobSpec / parse_spec: examples, every refusal names its field, document limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from search_spaces import (
    MAX_DOCUMENT_BYTES,
    JobSpec,
    SearchSpace,
    SpecError,
    example_path,
    list_examples,
    load_preset,
    parse_spec,
    registered_tasks,
)

TASKS = ("rotated_mnist", "nbody")


def valid() -> dict[str, Any]:
    return {
        "name": "rotmnist-c8",
        "task": "rotated_mnist",
        "model": {"group": "C8"},
        "search_space": "relax",
        "budget": {"trials": 16, "epochs": 8, "max_concurrent": 2},
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "resources": {"cpu": 1, "gpu": 0},
        "scheduler": "asha",
        "seed": 0,
    }


def parse(data: Any, **kwargs: Any) -> JobSpec:
    kwargs.setdefault("tasks", TASKS)
    return parse_spec(data, **kwargs)


def refused(data: Any, **kwargs: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(data, **kwargs)
    assert info.value.field
    assert str(info.value).startswith(f"{info.value.field}: ")
    return info.value


# -- accepted specs --------------------------------------------------------------------------


def test_design_example_parses_with_defaults_filled_in() -> None:
    spec = parse(valid())
    assert spec.resources.cpu == 1.0 and spec.resources.gpu == 0.0
    assert spec.asha is not None and spec.asha.grace_period == 1
    assert spec.retries == 0 and spec.timeout_s is None
    assert spec.resolved_space() == load_preset("relax")


@pytest.mark.parametrize("name", ["quick_rotmnist", "rotmnist_c8", "quick_nbody", "nbody"])
def test_examples_parse_with_the_registered_tasks(name: str) -> None:
    assert name in list_examples()
    spec = parse_spec(example_path(name).read_text(), tasks=registered_tasks() or TASKS)
    assert spec.budget.max_concurrent <= spec.budget.trials
    assert spec.objective.metric.startswith("val_")
    assert isinstance(spec.resolved_space(), SearchSpace)


def test_quick_rotmnist_is_small() -> None:
    spec = parse_spec(example_path("quick_rotmnist").read_bytes(), tasks=TASKS)
    assert (spec.task, spec.search_space) == ("rotated_mnist", "relax")
    # `make run` runs it: a couple of minutes on 2 CPU cores
    assert spec.budget.trials * spec.budget.epochs <= 32 and spec.budget.max_concurrent == 2
    assert spec.data["train_size"] <= 2000


def test_entry_point_task_names_are_read_without_loading() -> None:
    # pyproject declares both built-in tasks (the package is installed: `make setup`);
    # reading the names imports nothing heavy.
    names = registered_tasks()
    assert {"rotated_mnist", "nbody"} <= set(names)
    parse_spec(valid())


def test_to_dict_round_trips_through_json_and_yaml() -> None:
    for source in (valid(), example_path("nbody").read_text()):
        spec = parse(source)
        canonical = spec.to_dict()
        assert json.loads(spec.to_json()) == canonical
        assert parse(canonical).to_dict() == canonical
        assert parse(json.dumps(canonical)).to_dict() == canonical
        assert parse(yaml.safe_dump(canonical)).to_dict() == canonical
        assert parse(canonical).resolved_space() == spec.resolved_space()


def test_spec_does_not_alias_the_callers_data() -> None:
    data = valid()
    spec = parse(data)
    data["model"]["group"] = "C4"
    assert spec.model == {"group": "C8"}


def test_preset_with_override_and_explicit_spaces() -> None:
    data = valid() | {
        "search_space": {
            "preset": "paper",
            "override": {"relax.lambda_norm": {"low": 1e-4, "high": 1e-1, "log": True}},
        }
    }
    spec = parse(data)
    space = spec.resolved_space()
    assert "relax.lambda_norm" in space.searched_keys()
    assert spec.to_dict()["search_space"]["override"]["relax.lambda_norm"]["type"] == "float"
    explicit = parse(valid() | {"search_space": {"optim.lr": {"low": 1e-4, "high": 1e-2}}})
    assert explicit.resolved_space().searched_keys() == ("optim.lr",)


def test_gpu_is_accepted_where_one_is_available() -> None:
    data = valid() | {"resources": {"cpu": 2, "gpu": 0.25}}
    spec = parse(data, gpu_available=lambda: True)
    assert spec.resources.gpu == 0.25
    error = refused(data, gpu_available=lambda: False)
    assert error.field == "resources.gpu"


def test_json_and_yaml_text_and_bytes_are_accepted() -> None:
    assert parse(json.dumps(valid())).name == "rotmnist-c8"
    assert parse(yaml.safe_dump(valid()).encode()).name == "rotmnist-c8"
    assert parse("\ufeff" + json.dumps(valid())).name == "rotmnist-c8"


# -- refusals --------------------------------------------------------------------------------


def _with(path: str, value: Any) -> dict[str, Any]:
    data = valid()
    *parents, last = path.split("/")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    if value is _DROP:
        del node[last]
    else:
        node[last] = value
    return data


_DROP = object()

REFUSALS = [
    ("name", "", "name"),
    ("name", "a" * 65, "name"),
    ("name", "bad name!", "name"),
    ("name", 7, "name"),
    ("name", _DROP, "name"),
    ("task", "mnist", "task"),
    ("model", [1, 2], "model"),
    ("data", "big", "data"),
    ("model/width", 4, None),  # a valid model option (control)
    ("model/when", "2024-01-01", "model.when"),  # the task's schema knows no 'when'
    ("model/width", "8", "model.width"),
    ("model/width", 100_000, "model.width"),  # the task's size cap
    ("model/kernel_size", 4, "model.kernel_size"),
    ("data/train_size", 10**9, "data.train_size"),
    ("data/train_size", 4900, "data.train_size"),  # more than the embedded 5,000 digits
    ("objective/metric", "val_acuracy", "objective.metric"),
    ("search_space", "turbo", "search_space"),
    ("search_space", 3, "search_space"),
    ("search_space", _DROP, "search_space"),
    ("search_space", {"preset": "relax", "extra": {}}, "search_space.extra"),
    ("search_space", {"preset": 1}, "search_space.preset"),
    ("search_space", {"preset": "nope"}, "search_space.preset"),
    ("search_space", {"preset": "relax", "override": [1]}, "search_space.override"),
    (
        "search_space",
        {"preset": "relax", "override": {"relax.theta_max": {"low": 0, "high": 1, "log": True}}},
        "search_space.override.relax.theta_max.low",
    ),
    (
        "search_space",
        {"relax.theta_max": {"low": 2, "high": 1}},
        "search_space.relax.theta_max.low",
    ),
    ("budget", _DROP, "budget"),
    ("budget/trials", 0, "budget.trials"),
    ("budget/trials", 2.5, "budget.trials"),
    ("budget/trials", "3", "budget.trials"),
    ("budget/epochs", 0, "budget.epochs"),
    ("budget/max_concurrent", 0, "budget.max_concurrent"),
    ("budget/max_concurrent", 17, "budget.max_concurrent"),
    ("budget/patience", 3, "budget.patience"),
    ("objective/metric", "accuracy", "objective.metric"),
    ("objective/mode", "maximise", "objective.mode"),
    ("objective", _DROP, "objective"),
    ("resources/cpu", 0, "resources.cpu"),
    ("resources/cpu", True, "resources.cpu"),
    ("resources/gpu", -0.5, "resources.gpu"),
    ("resources/gpu", 0.5, "resources.gpu"),  # no GPU in these tests
    ("resources/memory", 4, "resources.memory"),
    ("scheduler", "hyperband", "scheduler"),
    ("asha", {"grace_period": 9}, "asha.grace_period"),
    ("asha", {"reduction_factor": 1}, "asha.reduction_factor"),
    ("asha", {"brackets": 2}, "asha.brackets"),
    ("seed", -1, "seed"),
    ("seed", 1.5, "seed"),
    ("retries", -1, "retries"),
    ("timeout_s", 0, "timeout_s"),
    ("timeout_s", "1h", "timeout_s"),
    ("priority", "high", "priority"),
]


@pytest.mark.parametrize(("path", "value", "field"), REFUSALS)
def test_every_refusal_names_its_field(path: str, value: Any, field: str | None) -> None:
    data = _with(path, value)
    if field is None:
        parse(data, gpu_available=lambda: False)
        return
    assert refused(data, gpu_available=lambda: False).field == field


def test_asha_options_without_asha_are_refused() -> None:
    assert refused(valid() | {"scheduler": "none", "asha": {"grace_period": 1}}).field == "asha"
    assert parse(valid() | {"scheduler": "none"}).asha is None


def test_unknown_field_lists_the_allowed_ones() -> None:
    error = refused(valid() | {"trails": 3})
    assert error.field == "trails"
    assert "budget" in str(error) and "search_space" in str(error)


def test_unknown_task_lists_the_registered_ones() -> None:
    error = refused(valid() | {"task": "cifar"})
    assert "rotated_mnist" in str(error) and "nbody" in str(error)


@pytest.mark.parametrize(
    "text",
    [
        b"\xff\xfe not utf-8",
        "name: a\nname: b\n",  # duplicate key
        '{"name": "a", "name": "b"}',
        "base: &b {trials: 1}\nbudget: *b\n",  # anchors and aliases
        "a: 1\n---\nb: 2\n",  # two documents
        "[1, 2, 3]",
        "just text",
        "",
        "name: [unclosed",
        "x: !!python/object:os.system {}\n",
        "d: !!binary aGVsbG8=\n",
        "when: 2024-01-01\n",
        '{"seed": NaN}',
        "seed: .nan\n",
        "? [1, 2]\n: x\n",  # non-text key
    ],
)
def test_document_refusals(text: str | bytes) -> None:
    error = refused(text)
    assert error.field in {"spec", "when", "d", "seed"}


def test_size_and_depth_limits() -> None:
    big = "# " + "x" * MAX_DOCUMENT_BYTES + "\n" + yaml.safe_dump(valid())
    assert "limit" in str(refused(big))
    assert "limit" in str(refused(big.encode()))
    deep_yaml = "a: " + "[" * 25 + "]" * 25 + "\n"
    assert "deeper" in str(refused(deep_yaml))
    deep_json = '{"a": ' + "[" * 5000 + "]" * 5000 + "}"
    assert "deeper" in str(refused(deep_json))
    nested: dict[str, Any] = {}
    node = nested
    for _ in range(30):
        node["k"] = {}
        node = node["k"]
    assert "deeper" in str(refused(valid() | {"model": nested}))


def test_deep_value_errors_name_the_full_path() -> None:
    error = refused(valid() | {"model": {"layers": [{"width": float("inf")}]}})
    assert error.field == "model.layers.0.width"


def test_spec_error_pickles_with_its_field() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(SpecError("budget.trials", "too many")))
    assert (error.field, error.message, str(error)) == (
        "budget.trials",
        "too many",
        "budget.trials: too many",
    )


def test_messages_quoting_huge_values_stay_short() -> None:
    error = refused(valid() | {"search_space": "x" * 100_000})
    assert len(str(error)) < 1100
