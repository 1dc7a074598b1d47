"""What the commands share: the option groups (``--db``/``--artifacts``, ``--url``/``--token``,
Ray's), the settings they make, the job store of ``--db`` and logging."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.cli._output import CliError, err
from service.errors import RelaxtuneError
from service.settings import Settings

DEFAULT_DB = "sqlite:///relaxtune.db"
DEFAULT_ARTIFACTS = "./artifacts"
DEFAULT_URL = "http://127.0.0.1:8000"


def _env_option(
    parser: argparse.ArgumentParser, flag: str, env: str, help: str, default: Any = None
) -> None:
    """``flag``, defaulting to the environment variable ``env``, else ``default``."""
    parser.add_argument(flag, default=os.environ.get(env, default), help=help)


def add_db_options(parser: argparse.ArgumentParser, *, create: bool = False) -> None:
    """``--db`` and ``--artifacts`` (and ``--create`` for commands that may make the file)."""
    if create:
        parser.add_argument(
            "--create", action="store_true", help="create the database file if it is missing"
        )
    _env_option(
        parser,
        "--db",
        "RELAXTUNE_DB",
        "database URL (env RELAXTUNE_DB; default %(default)s)",
        DEFAULT_DB,
    )
    _env_option(
        parser,
        "--artifacts",
        "RELAXTUNE_ARTIFACTS",
        "artifact folder (env RELAXTUNE_ARTIFACTS; default %(default)s)",
        DEFAULT_ARTIFACTS,
    )


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--token`` of the service the client commands talk to."""
    _env_option(
        parser,
        "--url",
        "RELAXTUNE_URL",
        "service URL (env RELAXTUNE_URL; default %(default)s)",
        DEFAULT_URL,
    )
    _env_option(parser, "--token", "RELAXTUNE_TOKEN", "API token (env RELAXTUNE_TOKEN)")


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """``--ray-address`` and ``--storage-path`` of the commands that run searches."""
    _env_option(
        parser,
        "--ray-address",
        "RELAXTUNE_RAY_ADDRESS",
        "Ray cluster address (default: start a local Ray)",
    )
    _env_option(
        parser,
        "--storage-path",
        "RELAXTUNE_RAY_STORAGE",
        "Ray Tune storage path shared by the cluster (default: under --artifacts)",
    )


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])


def add_command(sub: Any, name: str, func: Callable[[argparse.Namespace], int], **kw: Any) -> Any:
    """A subcommand running ``func``, its help the function's docstring."""
    p = sub.add_parser(name, help=func.__doc__, description=func.__doc__, **kw)
    p.set_defaults(func=func)
    return p


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    values: dict[str, Any] = {"db": args.db, "artifacts": Path(args.artifacts)}
    if getattr(args, "ray_address", None):
        values["ray_address"] = args.ray_address
    if getattr(args, "storage_path", None):
        values["ray_storage"] = args.storage_path
    values.update({k: v for k, v in extra.items() if v is not None})
    try:
        return Settings(**values)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise CliError(f"invalid settings: {exc}", 2) from exc


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (``None`` for other databases or a malformed URL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def open_store(args: argparse.Namespace, *, upgrade: bool = True, existing: bool = False) -> Any:
    """The job store of ``--db``. ``existing``: refuse a SQLite file that does not exist yet
    (unless ``--create``) and say on stderr which database the command uses."""
    from service.store import JobStore

    path = sqlite_file(args.db)
    if path is not None:
        if not path.parent.is_dir():
            raise CliError(
                f"cannot open database {path}: its folder {path.parent} does not exist", 2
            )
        if existing and not path.exists() and not getattr(args, "create", False):
            raise CliError(
                f"database {path} does not exist (check --db / RELAXTUNE_DB); "
                "pass --create to make a new one",
                2,
            )
    try:
        store = JobStore(args.db)
    except (ValueError, ImportError) as exc:  # malformed URL, missing driver
        raise CliError(f"cannot use database {args.db!r}: {exc}", 2) from exc
    if existing:
        err(f"database: {store.engine.url.render_as_string(hide_password=True)}")
    if upgrade:
        upgrade_store(store)
    return store


def upgrade_store(store: Any) -> Any:
    """``store.upgrade()``, its failure a :class:`CliError`; returns what it did."""
    try:
        return store.upgrade()
    except RelaxtuneError as exc:
        cause = str(exc.__cause__ or "").splitlines()[0][:200] if exc.__cause__ else ""
        path = sqlite_file(store.url)
        where = path if path is not None else store.engine.url.render_as_string(True)
        raise CliError(f"cannot use database {where}: {exc}: {cause}") from exc


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def read_spec_bytes(spec: str) -> bytes:
    """The bytes of a spec file (``-``: standard input)."""
    if spec == "-":
        return sys.stdin.buffer.read()
    path = Path(spec)
    if not path.is_file():
        raise CliError(f"spec file not found: {spec}", 2)
    return path.read_bytes()
