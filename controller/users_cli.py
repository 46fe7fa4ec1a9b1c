"""`illuminate users ...`: staff accounts and their API tokens.

Registered in the main parser by `add_users_parser(sub)`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from controller.auth import Role
from controller.cli_common import config_arg, open_database
from devices.clock import system_clock

if TYPE_CHECKING:
    from controller.store.users import Users

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

ROLES = ", ".join(r.value for r in Role)


@contextmanager
def open_users(args: argparse.Namespace) -> Iterator[Users]:
    """The users of the configured database (migrated to the newest schema)."""
    from controller.store.users import Users

    with open_database(args) as sessions:
        yield Users(sessions)


def _print_token(token: str) -> None:
    print(f"API token: {token}")
    print("(shown once; keep it safe. Send it as the header 'Authorization: Bearer <token>')")


def cmd_users_add(args: argparse.Namespace) -> int:
    with open_users(args) as users:
        token = users.add(args.name, args.role, args.city or (), system_clock())
    scope = f" for {', '.join(dict.fromkeys(args.city))}" if args.city else ""
    print(f"created user {args.name} ({args.role}{scope})")
    _print_token(token)
    return 0


def cmd_users_token(args: argparse.Namespace) -> int:
    with open_users(args) as users:
        token = users.issue_token(args.name, system_clock())
    print(f"issued a new token for {args.name}; their other tokens keep working")
    _print_token(token)
    return 0


def cmd_users_disable(args: argparse.Namespace) -> int:
    with open_users(args) as users:
        users.disable(args.name)
    print(f"disabled user {args.name}; their tokens no longer work")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    with open_users(args) as users:
        views = users.list()
    for v in views:
        cities = ",".join(v.cities) or "-"
        used = f"{v.last_used_at:%Y-%m-%d %H:%M}Z" if v.last_used_at else "never"
        state = "disabled" if v.disabled else "active"
        print(f"{v.name:32} {v.role.value:12} {cities:24} {state:8} tokens={v.tokens} used={used}")
    print(f"{len(views)} users")
    return 0


def add_users_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Register `illuminate users add|token|disable|list`."""
    users: argparse.ArgumentParser = subparsers.add_parser(
        "users",
        help="staff accounts and their API tokens",
        description="Staff accounts for the /api/v1 staff API. Each account has one role: "
        "admin (everything), coordinator (campaigns and schedules) or technician (the "
        "devices of their own cities only).",
    )
    usub = users.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = usub.add_parser(
        "add",
        help="create a user and print their first API token",
        description="Create a staff user and print an API token for them, once. "
        "Only a hash of the token is stored.",
        epilog="examples:\n"
        "  illuminate users add alice --role coordinator\n"
        "  illuminate users add bob --role technician --city brussels --city ypres",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_arg(add)
    add.add_argument("name", help="user name (lower-case letters, digits, '.', '_', '@', '-')")
    add.add_argument("--role", required=True, metavar="ROLE", help=f"one of: {ROLES}")
    add.add_argument(
        "--city",
        action="append",
        metavar="CITY",
        help="a city id the technician looks after (repeat for more; technicians only)",
    )
    add.set_defaults(func=cmd_users_add)

    token = usub.add_parser(
        "token",
        help="issue one more API token for an existing user",
        description="Print a new API token for the user, once (for example when the old "
        "one was lost). Their other tokens keep working.",
    )
    config_arg(token)
    token.add_argument("name")
    token.set_defaults(func=cmd_users_token)

    disable = usub.add_parser(
        "disable", help="disable a user: every one of their tokens stops working"
    )
    config_arg(disable)
    disable.add_argument("name")
    disable.set_defaults(func=cmd_users_disable)

    ulist = usub.add_parser("list", help="list users, their roles and cities")
    config_arg(ulist)
    ulist.set_defaults(func=cmd_users_list)
    return users
