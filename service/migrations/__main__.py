"""``python -m service.migrations …``: Alembic's command line on the service migrations
(no ``alembic.ini``). Example: ``python -m service.migrations -x db=sqlite:///s.db current``."""

from __future__ import annotations

import logging
import sys

from alembic.config import CommandLine

from service.migrations import alembic_config


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cli = CommandLine(prog="python -m service.migrations")
    options = cli.parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    cfg = alembic_config()
    cfg.cmd_opts = options
    cli.run_cmd(cfg, options)


if __name__ == "__main__":
    main()
