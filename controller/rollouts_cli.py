"""`illuminate rollouts status|resume|abort`: staged rollouts, from the command line.

Registered in the main parser by `add_rollouts_parser(sub)`. Resume and abort are
written to the audit log like the staff API's (a campaign entry, `rollout-resumed` or
`rollout-aborted`), by the name given with `--by` (default: the system user).
"""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING

from controller.access import AuditKind
from controller.cli_common import config_arg, open_database
from devices.clock import system_clock

if TYPE_CHECKING:
    from controller.rollouts import Progress

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

ACTOR_MAX = 64
AUDIT_ACTIONS = {"resume": "rollout-resumed", "abort": "rollout-aborted"}


def _actor(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)[:ACTOR_MAX]
    try:
        return f"cli:{getpass.getuser()}"[:ACTOR_MAX]
    except (KeyError, OSError):
        return "cli"


def _line(p: Progress) -> str:
    r = p.rollout
    c = p.counted
    return (
        f"{r.id:<6} {r.campaign_id:32} {r.state.value:10} sent={p.sent:<6} "
        f"failed+rejected={c.failures}/{c.results} started={r.started_at:%Y-%m-%d %H:%M:%S}Z"
    )


def _show(p: Progress) -> None:
    r = p.rollout
    pause = r.config.pause
    print(f"rollout {r.id} of campaign {r.campaign_id}: {r.state.value}")
    print(f"  since: {r.state_at:%Y-%m-%d %H:%M:%S}Z" + (f" ({r.reason})" if r.reason else ""))
    print(f"  started: {r.started_at:%Y-%m-%d %H:%M:%S}Z, over {len(r.sites)} sites")
    canaries = ", ".join(r.config.canary_sites) or "none"
    print(
        f"  canaries: {canaries}; at most {r.config.maximum_per_minute} devices a minute; "
        f"pause over {pause.threshold_percentage:g} % failed or rejected "
        f"after {pause.min_results} results"
    )
    waves = ", ".join(f"{w} {n}" for w, n in p.waves.items()) or "none yet"
    print(f"  sent: {p.sent} ({waves})")
    print("  results: " + ", ".join(f"{k} {v}" for k, v in p.results.items()))
    print(
        f"  counted by the pause rule: {p.counted.failures} of {p.counted.results} "
        f"failed or rejected ({p.counted.percentage():.1f} %)"
    )


def cmd_rollouts_status(args: argparse.Namespace) -> int:
    from controller.rollouts import find, progress
    from controller.store.sql import sql_stores

    with open_database(args) as sessions:
        stores = sql_stores(sessions)
        if args.id is not None:
            _show(progress(stores, find(stores, args.id)))
            return 0
        assert stores.rollouts is not None
        found = [progress(stores, r) for r in stores.rollouts.recent(args.limit)]
    for p in found:
        print(_line(p))
    print(f"{len(found)} rollouts")
    return 0


def _act(args: argparse.Namespace, action: str) -> int:
    from controller.rollouts import abort, progress, resume
    from controller.store.audit import AuditRecord, SqlAuditLog
    from controller.store.sql import sql_stores

    now = system_clock()
    with open_database(args) as sessions:
        stores = sql_stores(sessions)
        detail: dict[str, object] = {"rollout": args.id}
        if action == "resume":
            moved = resume(stores, args.id, now)
        else:
            moved, restored = abort(stores, args.id, now)
            detail["restored"] = restored
        SqlAuditLog(sessions).append(
            [
                AuditRecord(
                    at=moved.state_at,
                    actor=_actor(args),
                    kind=AuditKind.CAMPAIGN,
                    action=AUDIT_ACTIONS[action],
                    subject=moved.campaign_id,
                    detail=detail,
                )
            ]
        )
        _show(progress(stores, moved))
    if action == "abort":
        if detail["restored"]:
            print(f"campaign {moved.campaign_id} is back as it was before the change")
        else:
            print(f"campaign {moved.campaign_id} changed since; it is kept as it is")
    print("a running controller on this database acts on it within one tick")
    return 0


def cmd_rollouts_resume(args: argparse.Namespace) -> int:
    return _act(args, "resume")


def cmd_rollouts_abort(args: argparse.Namespace) -> int:
    return _act(args, "abort")


def _rollout_id(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a rollout number") from None
    if not 1 <= number <= 2**62:
        raise argparse.ArgumentTypeError(f"{value!r} is not a rollout number")
    return number


def add_rollouts_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Register `illuminate rollouts status|resume|abort`."""
    rollouts: argparse.ArgumentParser = subparsers.add_parser(
        "rollouts",
        help="staged rollouts of campaign changes made during a live window",
        description="A campaign with a `rollout:` section that is changed while one of "
        "its windows is open goes out in waves: canary sites first, then city by city, "
        "at most so many devices a minute. It pauses by itself when too many devices "
        "fail or reject the change. See docs/rollouts.md.",
    )
    rsub = rollouts.add_subparsers(dest="action", required=True, metavar="ACTION")

    st = rsub.add_parser(
        "status",
        help="list rollouts, or show one",
        description="Without ID: the newest rollouts, one a line. With ID: that rollout's "
        "state, why it is in it, its settings, the devices sent per wave and the results.",
    )
    config_arg(st)
    st.add_argument("id", nargs="?", type=_rollout_id, metavar="ID", help="a rollout number")
    st.add_argument(
        "--limit", type=int, default=20, metavar="N", help="how many to list (default 20)"
    )
    st.set_defaults(func=cmd_rollouts_status)

    for name, func, text in (
        (
            "resume",
            cmd_rollouts_resume,
            "Resume a paused rollout: the waves go on where they stopped, and the pause "
            "rule counts afresh from now.",
        ),
        (
            "abort",
            cmd_rollouts_abort,
            "Abort a running or paused rollout: the campaign is put back as it was before "
            "the change. Devices not sent yet never get the change; devices already sent "
            "get the campaign as it was before, as a new plan version.",
        ),
    ):
        act = rsub.add_parser(name, help=text.split(":")[0].lower(), description=text)
        config_arg(act)
        act.add_argument("id", type=_rollout_id, metavar="ID", help="the rollout number")
        act.add_argument(
            "--by",
            metavar="NAME",
            help="who does it, for the audit log (default: cli:<system user>)",
        )
        act.set_defaults(func=func)
    return rollouts
