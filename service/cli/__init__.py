"""The ``relaxtune`` command.

Three programs behind one command, each in its own module:

- the HTTP client (``_client``: ``submit``, ``status``, ``cancel``, ``best``, ``dashboard``,
  ``report``) talks to a running service at ``--url`` with ``--token``;
- the admin commands (``_admin``: ``db upgrade``, ``token``, ``quota``) and process
  supervision (``_supervise``: ``serve``, ``controller``) work on ``--db`` / ``--artifacts``;
- the local commands (``_local``: ``run``, ``export``, ``report --local``, ``train``,
  ``verify``) run searches and the training code in this process.

Exit codes: 0 success, 1 failure (service error, failed job, failed check), 2 bad input.
Heavy modules (torch, ray, uvicorn) are imported by the commands that need them only.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from service.cli import _admin, _client, _local, _supervise
from service.cli._output import CliError, err
from service.errors import Conflict, NotFound, RelaxtuneError, SpecError

__all__ = ["CliError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``relaxtune``."""
    parser = argparse.ArgumentParser(
        prog="relaxtune",
        description="Hyperparameter search for equivariant networks trained with "
        "constraint relaxation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for program in (_supervise, _admin, _client, _local):
        program.add_commands(sub)
    return parser


def _fail(message: str, code: int) -> NoReturn:
    err(f"relaxtune: error: {message}")
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``relaxtune`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        _fail(str(exc), exc.code)
    except (NotFound, Conflict) as exc:
        _fail(str(exc), 2)
    except SpecError as exc:
        _fail(f"spec field {exc.field}: {exc.message}", 2)
    except RelaxtuneError as exc:
        _fail(str(exc), 1)
    except ValueError as exc:  # bad input the caller gave (a malformed URL, a quota value)
        _fail(str(exc), 2)
