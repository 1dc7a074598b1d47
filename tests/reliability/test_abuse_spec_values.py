"""Exhaustive hostile values at every position of every example spec and of every
search-space parameter field: the validator refuses with a ``SpecError`` naming a field, and
never raises anything else.

``tests/search_spaces/test_spec_properties.py`` samples such mutations at random (hypothesis);
this walks all of them deterministically with values chosen to break type assumptions
(unhashable containers where text is expected, 2**100, NaN-free huge floats, long text), which
is how an unhashable ``type: [float]`` was found crashing the reader with ``TypeError``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from search_spaces import (
    SpecError,
    default_hparams,
    example_path,
    list_examples,
    parse_spec,
)

HOSTILE: list[Any] = [
    None,
    [],
    {},
    ["float"],
    {"type": "float"},
    [[1]],
    True,
    -1,
    0,
    2**100,
    -(2**100),
    1e308,
    -1e-320,
    "",
    "x" * 5000,
    "../../etc/passwd",
    "\x00",
]
PARAM_FIELDS = ["type", "low", "high", "log", "step", "choices", "value", "when"]
TASKS = ("rotated_mnist", "nbody")


def paths(tree: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))


def replaced(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(tree)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def check(spec: Any) -> None:
    try:
        parse_spec(spec, tasks=TASKS, gpu_available=lambda: False)
    except SpecError as error:
        assert error.field and str(error).startswith(f"{error.field}: "), error


@pytest.mark.parametrize("example", list_examples())
def test_hostile_value_at_every_position_of_an_example(example: str) -> None:
    base = yaml.safe_load(example_path(example).read_text())
    for path in paths(base):
        for value in HOSTILE:
            check(replaced(base, path, value))


def test_hostile_value_in_every_parameter_field() -> None:
    base = yaml.safe_load(example_path(list_examples()[0]).read_text())
    for key in default_hparams():
        for field in PARAM_FIELDS:
            for value in HOSTILE:
                check({**base, "search_space": {key: {field: value}}})
                check({**base, "search_space": {key: {"type": "float", field: value}}})
                check(
                    {**base, "search_space": {"preset": "relax", "override": {key: {field: value}}}}
                )
