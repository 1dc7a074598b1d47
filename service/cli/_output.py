"""How a command reports: JSON on stdout, notes on stderr, and :class:`CliError`, a failure
told in one line with its exit code."""

from __future__ import annotations

import json
import sys
from typing import Any

from service.errors import RelaxtuneError


class CliError(RelaxtuneError):
    """A failure to report in one line and exit with ``code`` (2 for bad input)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def err(message: str) -> None:
    print(message, file=sys.stderr)
