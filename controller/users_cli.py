"""`illuminate users ...`: staff accounts and their API tokens.

Registered in the main parser by `add_users_parser(sub)`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
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


EXPIRES_HELP = (
    "when the token stops working: a duration (30m, 12h, 90d, 2w), a date (2027-01-31: "
    "00:00 UTC that day) or an instant with its offset (2027-01-31T18:00+01:00); "
    "default: it never expires (revoke it with `users revoke`)"
)


def _when(at: datetime | None, none: str) -> str:
    return f"{at:%Y-%m-%d %H:%M}Z" if at else none


def _expiry(args: argparse.Namespace, now: datetime) -> datetime | None:
    from controller.store.users import expiry_from

    return expiry_from(args.expires, now) if args.expires else None


def _print_token(token: str, expires_at: datetime | None) -> None:
    print(f"API token: {token}")
    print(f"expires: {_when(expires_at, 'never')}")
    print("(shown once; keep it safe. Send it as the header 'Authorization: Bearer <token>')")


def cmd_users_add(args: argparse.Namespace) -> int:
    now = system_clock()
    expires_at = _expiry(args, now)
    with open_users(args) as users:
        token = users.add(args.name, args.role, args.city or (), now, expires_at)
    scope = f" for {', '.join(dict.fromkeys(args.city))}" if args.city else ""
    print(f"created user {args.name} ({args.role}{scope})")
    _print_token(token, expires_at)
    return 0


def cmd_users_token(args: argparse.Namespace) -> int:
    now = system_clock()
    expires_at = _expiry(args, now)
    with open_users(args) as users:
        token = users.issue_token(args.name, now, expires_at)
    print(f"issued a new token for {args.name}; their other tokens keep working")
    _print_token(token, expires_at)
    return 0


def cmd_users_tokens(args: argparse.Namespace) -> int:
    with open_users(args) as users:
        views = users.tokens(args.name, system_clock())
    print(f"{'ID':>6} {'HINT':14} {'STATE':8} {'CREATED':18} {'EXPIRES':18} LAST USED")
    for v in views:
        print(
            f"{v.id:>6} {v.hint or '-':14} {v.state.value:8} {_when(v.created_at, '-'):18} "
            f"{_when(v.expires_at, 'never'):18} {_when(v.last_used_at, 'never')}"
        )
    print(f"{len(views)} tokens of {args.name}")
    return 0


def cmd_users_revoke(args: argparse.Namespace) -> int:
    with open_users(args) as users:
        revoked = users.revoke(args.name, None if args.all else args.token, system_clock())
    if args.all:
        print(f"revoked {revoked} tokens of {args.name}; none of their tokens works now")
    else:
        print(f"revoked token {args.token} of {args.name}; it no longer works")
    return 0


def cmd_users_disable(args: argparse.Namespace) -> int:
    with open_users(args) as users:
        users.disable(args.name)
    print(f"disabled user {args.name}; their tokens no longer work")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    with open_users(args) as users:
        views = users.list(system_clock())
    for v in views:
        cities = ",".join(v.cities) or "-"
        used = _when(v.last_used_at, "never")
        state = "disabled" if v.disabled else "active"
        print(f"{v.name:32} {v.role.value:12} {cities:24} {state:8} tokens={v.tokens} used={used}")
    print(f"{len(views)} users")
    return 0


def add_users_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Register `illuminate users add|token|tokens|revoke|disable|list`."""
    users: argparse.ArgumentParser = subparsers.add_parser(
        "users",
        help="staff accounts and their API tokens",
        description="Staff accounts for the /api/v1 staff API. Each account has one role: "
        "admin (everything), coordinator (campaigns, overrides, and reading every site) "
        "or technician (the sites and devices of their own cities only). A user holds "
        "one or more bearer tokens; each may expire, and each can be revoked.",
    )
    usub = users.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = usub.add_parser(
        "add",
        help="create a user and print their first API token",
        description="Create a staff user and print an API token for them, once. "
        "Only a hash of the token is stored (and its first characters, as a hint).",
        epilog="examples:\n"
        "  illuminate users add alice --role coordinator\n"
        "  illuminate users add bob --role technician --city brussels --city ypres\n"
        "  illuminate users add eve --role admin --expires 90d",
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
    add.add_argument("--expires", metavar="DURATION|DATE", help=EXPIRES_HELP)
    add.set_defaults(func=cmd_users_add)

    token = usub.add_parser(
        "token",
        help="issue one more API token for an existing user",
        description="Print a new API token for the user, once (for example when the old "
        "one was lost). Their other tokens keep working.",
    )
    config_arg(token)
    token.add_argument("name", help="the user's name")
    token.add_argument("--expires", metavar="DURATION|DATE", help=EXPIRES_HELP)
    token.set_defaults(func=cmd_users_token)

    tokens = usub.add_parser(
        "tokens",
        help="list a user's tokens: id, hint, state, expiry, last use",
        description="List every token of the user, revoked and expired ones too. The id "
        "and the hint (the token's first characters) name a token for `users revoke`; "
        "the token itself is never shown again.",
    )
    config_arg(tokens)
    tokens.add_argument("name", help="the user's name")
    tokens.set_defaults(func=cmd_users_tokens)

    revoke = usub.add_parser(
        "revoke",
        help="revoke one of a user's tokens, or all of them",
        description="Revoke a token: from now on the API answers it 401. The token stays "
        "listed in `users tokens`, as revoked. The user keeps their account; give them a "
        "new token with `users token NAME`.",
        epilog="examples:\n"
        "  illuminate users revoke bob --token 12\n"
        "  illuminate users revoke bob --token ilm_Xy3k9QaB\n"
        "  illuminate users revoke bob --all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_arg(revoke)
    revoke.add_argument("name", help="the user's name")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--token",
        metavar="ID|HINT",
        help="the token's id or hint, as `users tokens NAME` shows them",
    )
    which.add_argument("--all", action="store_true", help="every token of the user")
    revoke.set_defaults(func=cmd_users_revoke)

    disable = usub.add_parser(
        "disable",
        help="disable a user: every one of their tokens stops working",
        description="Disable the account: all of the user's tokens are refused (401), "
        "including ones issued later.",
    )
    config_arg(disable)
    disable.add_argument("name", help="the user's name")
    disable.set_defaults(func=cmd_users_disable)

    ulist = usub.add_parser(
        "list",
        help="list users, their roles, cities and working tokens",
        description="List every user: role, cities (technicians), whether the account is "
        "active, how many of their tokens still work, and when one was last used.",
    )
    config_arg(ulist)
    ulist.set_defaults(func=cmd_users_list)
    return users
