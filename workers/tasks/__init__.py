"""The task registry: built-in tasks and plugins from the ``relaxtune.tasks`` entry points.

A third-party package adds a task by declaring, in its own ``pyproject.toml``::

    [project.entry-points."relaxtune.tasks"]
    my_task = "my_package.tasks:MyTask"

where ``MyTask`` implements :class:`workers.tasks.Task`.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from ._base import Splits, Task

ENTRY_POINT_GROUP = "relaxtune.tasks"


def task_names() -> list[str]:
    """Names of every registered task (built-in and plugins)."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def get_task_class(name: str) -> type:
    """The task class registered under ``name`` (``ValueError`` naming the known ones)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    raise ValueError(f"task: unknown task {name!r}; registered tasks: {', '.join(task_names())}")


def build_task(name: str, model_config: dict[str, Any], data_config: dict[str, Any]) -> Task:
    """Instantiate a registered task with its model and data options."""
    return get_task_class(name)(dict(model_config), dict(data_config))


__all__ = ["ENTRY_POINT_GROUP", "Splits", "Task", "build_task", "get_task_class", "task_names"]
