"""Torch-free schemas of the tasks: what a spec's ``model``/``data`` may hold, and the metric.

Each task (built-in or plugin) declares a :class:`TaskSchema` next to its heavy task class,
through the entry point group ``relaxtune.task_schemas`` (same name as in ``relaxtune.tasks``)::

    [project.entry-points."relaxtune.task_schemas"]
    my_task = "my_package.schema:SCHEMA"

The schema is what the API process checks a spec against (it never imports torch): unknown
keys (with the closest valid one), wrong types, out-of-range values, the size caps of the
model and data, the objective's metric and direction, and which options are filesystem paths
(accepted only from a local ``relaxtune run``/``train``, never from a tenant over HTTP).

Data on a server lives under the dataset root (``RELAXTUNE_DATA_ROOT``); a spec names a
dataset (``data: {dataset: NAME}``) and :func:`resolve_dataset` finds ``<root>/<task>/<NAME>``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from search_spaces._errors import SpecError
from search_spaces._suggest import did_you_mean

__all__ = [
    "DATASET_NAME",
    "DATA_ROOT_ENV",
    "SCHEMA_ENTRY_POINT_GROUP",
    "TaskSchema",
    "check_task_config",
    "data_root_from_env",
    "resolve_dataset",
    "task_schema",
]

#: Entry point group through which tasks declare their schema.
SCHEMA_ENTRY_POINT_GROUP = "relaxtune.task_schemas"

#: Environment variable of the dataset root (``Settings.data_root``; workers read it).
DATA_ROOT_ENV = "RELAXTUNE_DATA_ROOT"

#: A dataset name: one path component, no dots, so never ``..``, hidden, or a path.
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

# Keys and values that look like a filesystem location. Over the API such an option is
# refused even when a (plugin) schema forgot to declare it in ``path_keys``.
_PATH_KEY = re.compile(r"(^|_)(dir|path|file|root|folder|url|uri|location)$", re.IGNORECASE)
_PATH_VALUE = re.compile(r"[/\\]|^[~.]|%2[ef]|%5c|^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


@dataclass(frozen=True)
class TaskSchema:
    """What a task accepts, declared without importing the task.

    ``model``/``data`` are pydantic models (``extra="forbid"``); their field bounds are the
    task's size caps. ``check`` (optional) runs cross-field checks on the validated pair and
    raises :class:`SpecError`. ``metric``/``mode`` are the validation metric the task reports
    (the objective is ``val_<metric>``) and its direction. ``path_keys`` are ``data`` keys
    that name local filesystem paths.
    """

    name: str
    model: type[BaseModel]
    data: type[BaseModel]
    metric: str
    mode: Literal["max", "min"]
    path_keys: tuple[str, ...] = ()
    check: Callable[[BaseModel, BaseModel], None] | None = None
    metrics: tuple[str, ...] = field(default=())

    def objective_metrics(self) -> tuple[str, ...]:
        """Metric names an objective may use (``val_<metric>``)."""
        return (f"val_{self.metric}", *self.metrics)


def _builtin() -> dict[str, TaskSchema]:
    from search_spaces.tasks.nbody import SCHEMA as NBODY
    from search_spaces.tasks.rotated_mnist import SCHEMA as ROTATED_MNIST

    return {ROTATED_MNIST.name: ROTATED_MNIST, NBODY.name: NBODY}


def task_schema(name: str) -> TaskSchema | None:
    """The schema declared for task ``name`` (entry points first, then the built-ins), or
    ``None`` when the task declares none."""
    for ep in entry_points(group=SCHEMA_ENTRY_POINT_GROUP):
        if ep.name == name:
            schema = ep.load()
            if not isinstance(schema, TaskSchema):
                raise SpecError(
                    "task", f"the schema registered for task {name!r} is not a TaskSchema"
                )
            return schema
    return _builtin().get(name)


def _section_error(section: str, model: type[BaseModel], exc: ValidationError) -> SpecError:
    error = exc.errors(include_url=False)[0]
    inner = (error.get("ctx") or {}).get("error")
    if isinstance(inner, SpecError):
        return inner
    loc = [str(part) for part in error["loc"]]
    where = ".".join([section, *loc])
    if error["type"] == "extra_forbidden":
        known = list(model.model_fields)
        return SpecError(
            where,
            f"unknown key{did_you_mean(loc[-1], known)} (known: {', '.join(known)})",
        )
    shown = repr(error.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    ctx = error.get("ctx") or {}
    if error["type"] in ("less_than_equal", "less_than"):
        limit = ctx.get("le", ctx.get("lt"))
        op = "<=" if "le" in ctx else "<"
        return SpecError(where, f"must be {op} {limit}, the task's size cap (got {shown})")
    if error["type"] in ("greater_than_equal", "greater_than"):
        limit = ctx.get("ge", ctx.get("gt"))
        op = ">=" if "ge" in ctx else ">"
        return SpecError(where, f"must be {op} {limit} (got {shown})")
    return SpecError(where, f"{error['msg']} (got {shown})")


def _refuse_paths(section: str, values: Mapping[str, Any], path_keys: tuple[str, ...]) -> None:
    for key, value in values.items():
        where = f"{section}.{key}"
        if key in path_keys or _PATH_KEY.search(str(key)):
            raise SpecError(
                where,
                "a filesystem path is not accepted from a tenant: data lives under the "
                "server's dataset root and cache (RELAXTUNE_DATA_ROOT, RELAXTUNE_CACHE); "
                "name a dataset with data.dataset instead",
            )
        if isinstance(value, str) and _PATH_VALUE.search(value):
            raise SpecError(where, f"looks like a filesystem path or URL ({value[:80]!r})")
        if isinstance(value, Mapping):
            _refuse_paths(where, value, ())
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str) and _PATH_VALUE.search(item):
                    raise SpecError(f"{where}.{i}", "looks like a filesystem path or URL")
                if isinstance(item, Mapping):
                    _refuse_paths(f"{where}.{i}", item, ())


def resolve_dataset(root: str | Path | None, task: str, name: str, field: str) -> Path:
    """The folder of dataset ``name`` of ``task``: ``<root>/<task>/<name>``, which must exist
    and, symlinks resolved, stay inside ``<root>/<task>``. Raises :class:`SpecError`."""
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        raise SpecError(field, "a dataset name is 1-64 characters of A-Z a-z 0-9 _ - (not a path)")
    if root is None or str(root) == "":
        raise SpecError(
            field, f"no dataset root is configured here ({DATA_ROOT_ENV}); cannot use {name!r}"
        )
    base = Path(root).expanduser().resolve() / task
    folder = (base / name).resolve()
    if not folder.is_relative_to(base) or folder == base:
        raise SpecError(field, f"dataset {name!r} leaves the dataset root")
    if not folder.is_dir():
        available = (
            sorted(p.name for p in base.iterdir() if p.is_dir() and DATASET_NAME.fullmatch(p.name))
            if base.is_dir()
            else []
        )
        hint = did_you_mean(name, available)
        listed = f" (available: {', '.join(available)})" if available else " (none available)"
        raise SpecError(field, f"unknown dataset {name!r}{hint}{listed}")
    return folder


def data_root_from_env() -> str | None:
    """The dataset root workers use (``$RELAXTUNE_DATA_ROOT``), or ``None``."""
    return os.environ.get(DATA_ROOT_ENV) or None


def check_task_config(
    schema: TaskSchema,
    model: Mapping[str, Any],
    data: Mapping[str, Any],
    *,
    local: bool = True,
    data_root: str | Path | None = None,
) -> None:
    """Check a spec's ``model``/``data`` against ``schema``; raise :class:`SpecError` naming
    the field. ``local=False`` (a tenant over HTTP) refuses every filesystem path; a dataset
    name is then checked under ``data_root`` (when given)."""
    if not local:
        _refuse_paths("model", model, ())
        _refuse_paths("data", data, schema.path_keys)
    try:
        model_values = schema.model.model_validate(dict(model))
    except ValidationError as exc:
        raise _section_error("model", schema.model, exc) from None
    try:
        data_values = schema.data.model_validate(dict(data))
    except ValidationError as exc:
        raise _section_error("data", schema.data, exc) from None
    if schema.check is not None:
        schema.check(model_values, data_values)
    dataset = data.get("dataset")
    if dataset is not None and (data_root is not None or not local):
        resolve_dataset(data_root, schema.name, dataset, "data.dataset")
