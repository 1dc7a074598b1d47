"""The admin commands on ``--db``: the schema (``db upgrade``), API tokens (``token``) and
per-tenant limits (``quota``)."""

from __future__ import annotations

import argparse
from typing import Any

from service.cli._options import add_db_options, open_store, settings_from, upgrade_store
from service.cli._output import CliError, err
from service.errors import Conflict
from service.settings import Settings


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Create or upgrade the service tables (their migrations) and Optuna's (Optuna's)."""
    store = open_store(args, upgrade=False)
    done = upgrade_store(store)
    for line in done.describe():
        print(line)
    print(f"database schema up to date: {store!r}")
    store.close()
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    """Create an API token and print it (once)."""
    store = open_store(args, existing=True)
    try:
        token = store.create_token(args.name, tenant=args.tenant, admin=args.admin)
    except ValueError as exc:
        raise CliError(str(exc), 2) from exc
    except Conflict as exc:
        raise CliError(str(exc), 2) from exc
    err(
        f"token {args.name!r} for tenant {args.tenant or args.name!r}"
        f"{' (admin)' if args.admin else ''}; it is shown only this once:"
    )
    print(token)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke an API token by name."""
    store = open_store(args, existing=True)
    store.revoke_token(args.name)
    print(f"token {args.name!r} revoked")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    """List API tokens (names, tenants and the tenants' quotas; never the tokens)."""
    from service.quotas import list_overrides

    store = open_store(args, existing=True)
    overrides = list_overrides(store)
    for t in store.list_tokens():
        state = "revoked" if t["revoked_at"] else "active"
        quota = overrides.get(t["tenant"])
        shown = ",".join(f"{k}={v:g}" for k, v in sorted(quota.items())) if quota else "default"
        print(f"{t['name']}\ttenant={t['tenant']}\tadmin={t['admin']}\t{state}\tquota={shown}")
    return 0


def cmd_quota_set(args: argparse.Namespace) -> int:
    """Raise or lower a tenant's limits (KEY=VALUE; VALUE 'default' removes an override)."""
    from service.quotas import parse_quota_items, set_overrides
    from service.store import _TOKEN_NAME_PATTERN

    if not _TOKEN_NAME_PATTERN.fullmatch(args.tenant):
        raise CliError("tenant: 1-64 characters of letters, digits, '_', '.', '@', '-'", 2)
    try:
        values = parse_quota_items(args.items)
    except ValueError as exc:
        raise CliError(str(exc), 2) from exc
    store = open_store(args, existing=True)
    set_overrides(store, args.tenant, values)
    _show_quota(store, settings_from(args), args.tenant)
    return 0


def _show_quota(store: Any, settings: Settings, tenant: str) -> None:
    from service.quotas import QUOTA_KEYS, tenant_overrides

    overrides = tenant_overrides(store, tenant)
    cells = []
    for key in QUOTA_KEYS:
        value = overrides.get(key, getattr(settings, key))
        cells.append(f"{key}={value:g}{'' if key not in overrides else ' (tenant)'}")
    print(f"{tenant}\t" + "\t".join(cells))


def cmd_quota_show(args: argparse.Namespace) -> int:
    """Show the limits of a tenant (or of every tenant with a token or a quota)."""
    from service.quotas import list_overrides

    store = open_store(args, existing=True)
    settings = settings_from(args)
    tenants = (
        [args.tenant]
        if args.tenant
        else sorted({t["tenant"] for t in store.list_tokens()} | set(list_overrides(store)))
    )
    for tenant in tenants:
        _show_quota(store, settings, tenant)
    return 0


def add_commands(sub: Any) -> None:
    """The admin commands' parsers."""
    db = sub.add_parser("db", help="database schema commands").add_subparsers(
        dest="db_command", required=True, metavar="COMMAND"
    )
    p = db.add_parser("upgrade", help=cmd_db_upgrade.__doc__)
    p.set_defaults(func=cmd_db_upgrade)
    add_db_options(p)

    token = sub.add_parser("token", help="API token commands").add_subparsers(
        dest="token_command", required=True, metavar="COMMAND"
    )
    p = token.add_parser("create", help=cmd_token_create.__doc__)
    p.set_defaults(func=cmd_token_create)
    p.add_argument("name")
    p.add_argument("--tenant", help="tenant of the token (default: its name)")
    p.add_argument("--admin", action="store_true", help="may see every tenant's jobs")
    add_db_options(p, create=True)
    p = token.add_parser("revoke", help=cmd_token_revoke.__doc__)
    p.set_defaults(func=cmd_token_revoke)
    p.add_argument("name")
    add_db_options(p)
    p = token.add_parser("list", help=cmd_token_list.__doc__)
    p.set_defaults(func=cmd_token_list)
    add_db_options(p)

    quota = sub.add_parser("quota", help="per-tenant limits (admin)").add_subparsers(
        dest="quota_command", required=True, metavar="COMMAND"
    )
    p = quota.add_parser("set", help=cmd_quota_set.__doc__, description=cmd_quota_set.__doc__)
    p.set_defaults(func=cmd_quota_set)
    p.add_argument("tenant")
    p.add_argument("items", nargs="+", metavar="KEY=VALUE", help="e.g. max_trials=512")
    add_db_options(p)
    p = quota.add_parser("show", help=cmd_quota_show.__doc__)
    p.set_defaults(func=cmd_quota_show)
    p.add_argument("tenant", nargs="?")
    add_db_options(p)
