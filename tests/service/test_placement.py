"""Whether one trial's resources fit on some node (``service/_placement.py``)."""

from __future__ import annotations

import os

import pytest

from service._placement import local_nodes, placement_problem

NODES = [{"CPU": 4.0, "GPU": 0.0}, {"CPU": 2.0, "GPU": 1.0}]


@pytest.mark.parametrize(
    ("cpu", "gpu", "field", "words"),
    [
        (4, 0, None, None),
        (2, 1, None, None),
        (0.5, 0.25, None, None),
        (5, 0, "resources.cpu", "asks for 5 CPUs but the largest node of C has 4"),
        (1, 2, "resources.gpu", "asks for 2 GPUs but the largest node of C has 1"),
        # each alone fits somewhere, but not together on one node
        (3, 1, "resources", "no node of C has both 3 CPUs and 1 GPUs"),
    ],
)
def test_placement_needs_one_node_with_both(
    cpu: float, gpu: float, field: str | None, words: str | None
) -> None:
    problem = placement_problem(cpu, gpu, NODES, "C")
    if field is None:
        assert problem is None
    else:
        assert problem is not None and problem[0] == field and words in problem[1]


def test_no_node_alive_is_a_problem() -> None:
    assert placement_problem(1, 0, [], "C") == (
        "resources",
        "C has no node alive: no trial can start",
    )


def test_the_local_node_is_this_machine() -> None:
    (node,) = local_nodes()
    assert node["CPU"] == len(os.sched_getaffinity(0))
    assert placement_problem(node["CPU"], 0, [node], "here") is None
    assert placement_problem(node["CPU"] + 1, 0, [node], "here")[0] == "resources.cpu"
