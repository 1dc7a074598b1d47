"""Did-you-mean hints for misspelt keys and names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: object, options: Iterable[str]) -> str | None:
    """The option closest to ``word`` (``difflib``, cutoff 0.6), or ``None``."""
    if not isinstance(word, str):
        return None
    matches = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: object, options: Iterable[str]) -> str:
    """``"; did you mean 'width'?"`` for the closest option, else ``""``."""
    match = closest(word, options)
    return f"; did you mean {match!r}?" if match is not None else ""
