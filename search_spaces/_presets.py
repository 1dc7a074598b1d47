"""Named search spaces shipped as YAML files in ``search_spaces/presets/``."""

from __future__ import annotations

import functools
from importlib import resources

from search_spaces._errors import SpecError
from search_spaces._params import SearchSpace

_PACKAGE = "search_spaces"
_FOLDER = "presets"


def list_presets() -> list[str]:
    """Names of the shipped presets, sorted (``baseline``, ``paper``, ``relax``, ...)."""
    folder = resources.files(_PACKAGE).joinpath(_FOLDER)
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".yaml")
    )


def load_preset(name: str, path: str = "search_space") -> SearchSpace:
    """Return the preset ``name`` as a validated :class:`SearchSpace`.

    An unknown name raises :class:`SpecError` at ``path`` listing the presets. The name is
    looked up in :func:`list_presets` first, so it can never address a file outside the folder.
    """
    if not isinstance(name, str) or name not in list_presets():
        raise SpecError(
            path, f"unknown search space preset {name!r}; presets: {', '.join(list_presets())}"
        )
    return _load(name)


@functools.cache
def _load(name: str) -> SearchSpace:
    # Presets ship with the package and never change while it runs; a SearchSpace is
    # immutable, so sharing one instance is safe.
    text = resources.files(_PACKAGE).joinpath(_FOLDER, f"{name}.yaml").read_text("utf-8")
    return SearchSpace.from_yaml(text, path=f"presets.{name}")
