"""Example job specs shipped in ``search_spaces/examples/`` (``relaxtune run`` accepts them)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from search_spaces._errors import SpecError


def list_examples() -> list[str]:
    """Names of the example specs, sorted (``quick_rotmnist``, ``nbody``, ...)."""
    folder = resources.files("search_spaces").joinpath("examples")
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".yaml")
    )


def example_path(name: str) -> Path:
    """Path of the example spec ``name`` (raises :class:`SpecError` listing the examples)."""
    if name not in list_examples():
        raise SpecError(
            "example", f"unknown example {name!r}; examples: {', '.join(list_examples())}"
        )
    return Path(str(resources.files("search_spaces").joinpath("examples", f"{name}.yaml")))
