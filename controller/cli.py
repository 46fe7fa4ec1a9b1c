"""The `illuminate` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from controller.cli_common import CliError, config_arg, open_database
from controller.registry_cli import add_campaigns_parser, add_devices_parser, add_sites_parser
from controller.rollouts_cli import add_rollouts_parser
from controller.settings import Settings, SettingsError, load_settings
from controller.store.base import Stores
from controller.store.sql import sql_stores
from controller.users_cli import add_users_parser
from devices.clock import system_clock
from devices.commands import add_agent_parser, add_simulate_parser, seconds_arg
from schedules.files import ScheduleFileError, load_campaign, load_sites

MAX_PREVIEW_DAYS = 3660


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(getattr(args, "config", None), **overrides)


# commands ---------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from controller.app import Controller
    from controller.serve import check_port, run_http

    settings = _settings(args)
    check_port(settings.http.host, settings.http.port)
    controller = Controller(settings)
    # without waiting for the broker: the web app answers at once (the last-known public
    # status, if one was saved) while the link comes up
    controller.start(wait_broker_s=0)
    print(f"Illuminate on http://{settings.http.host}:{settings.http.port}/", flush=True)
    try:
        return run_http(controller, settings)
    finally:
        controller.stop()


def cmd_demo(args: argparse.Namespace) -> int:
    from controller.demo.runner import run_demo
    from controller.serve import check_port

    overrides: dict[str, Any] = {"data_dir": args.data_dir}
    settings = _settings(args, **overrides)
    http = settings.http.model_copy(update={"port": args.port, "host": args.host})
    control = settings.control.model_copy(update={"tick_s": 5.0, "grace_s": args.grace})
    broker = settings.broker
    if broker.url is None:
        broker = broker.model_copy(update={"embedded_port": 0})
    settings = settings.model_copy(update={"http": http, "control": control, "broker": broker})
    check_port(settings.http.host, settings.http.port)
    if args.duration >= 24 * 3600 or args.duration < 1:
        raise CliError("--duration must be between 1 second and 24 hours")
    return run_demo(settings, timedelta(seconds=args.start_in), timedelta(seconds=args.duration))


@contextmanager
def _stores(args: argparse.Namespace) -> Iterator[Stores]:
    with open_database(args) as sessions:
        yield sql_stores(sessions)


def cmd_schedules_apply(args: argparse.Namespace) -> int:
    from controller.campaigns import apply_campaign

    campaign = load_campaign(args.file)
    now = system_clock()
    with _stores(args) as stores:
        created = apply_campaign(stores, campaign, now)
        staged = (
            [
                r
                for r in stores.rollouts.active()
                if r.campaign_id == campaign.id and r.started_at == now
            ]
            if stores.rollouts
            else []
        )
    print(f"{'created' if created else 'updated'} campaign {campaign.id}")
    for rollout in staged:
        print(
            f"a window is open: the change goes out in stages, as rollout {rollout.id} "
            f"(illuminate rollouts status {rollout.id})"
        )
    print("a running controller on this database sends the change within a second")
    return 0


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def cmd_schedules_preview(args: argparse.Namespace) -> int:
    from schedules.conflicts import find_conflicts
    from schedules.preview import local_day_range, preview, render_ics, render_json, render_table

    catalog = load_sites(args.sites)
    campaigns = [load_campaign(path) for path in args.campaigns]
    ids = [c.id for c in campaigns]
    if len(set(ids)) != len(ids):
        raise CliError(
            f"two campaign files share an id: {sorted(i for i in ids if ids.count(i) > 1)[0]}"
        )
    if args.to < args.from_:
        raise CliError("--to is before --from")
    if (args.to - args.from_).days > MAX_PREVIEW_DAYS:
        raise CliError(f"the range is longer than {MAX_PREVIEW_DAYS} days")
    if args.city and args.city not in {c.id for c in catalog.cities}:
        raise CliError(f"--city {args.city!r} is not in {args.sites}")
    segments = preview(campaigns, catalog, args.from_, args.to, city=args.city)
    if catalog.sites:
        start, end = local_day_range(args.from_, args.to, catalog, catalog.sites[0].id)
        for conflict in find_conflicts(
            campaigns, catalog, start - timedelta(days=1), end + timedelta(days=1)
        ):
            print(f"warning: {conflict.message}", file=sys.stderr)
    if args.format == "json":
        print(render_json(segments))
    elif args.format == "ics":
        sys.stdout.buffer.write(render_ics(segments, catalog, campaigns))
    else:
        print(render_table(segments, catalog), end="")
    return 0


# parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="illuminate",
        description="Light monuments in a campaign colour at set times, "
        "and show which ones their devices confirmed.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the controller, a simulated Belgian fleet and a demo campaign",
        description="Start everything on this machine: the embedded broker, a fresh "
        "SQLite database in the data folder, the Belgian monuments with one simulated "
        "device each, and a Blue Heart window. Open the status page and watch.",
    )
    config_arg(demo)
    demo.add_argument(
        "--start-in",
        type=seconds_arg,
        default=30.0,
        metavar="S",
        help="seconds until the window opens (default 30)",
    )
    demo.add_argument(
        "--duration",
        type=seconds_arg,
        default=600.0,
        metavar="S",
        help="window length in seconds (default 600)",
    )
    demo.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    demo.add_argument(
        "--grace",
        type=seconds_arg,
        default=20.0,
        metavar="S",
        help="seconds a device has to confirm before 'unconfirmed' (default 20)",
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data/demo"),
        help="folder for the demo database (default data/demo; reset each run)",
    )
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser(
        "serve",
        help="run the controller and its web app",
        description="Run the controller: reconciler, timer, MQTT dispatch and intake, "
        "and the web app. With no broker.url it starts the embedded broker, where every "
        "client logs in (each device with its account in the data folder, the controller "
        "with a password drawn at start); with no database.url it uses SQLite in the data "
        "folder. With broker_hook.token set it answers a delegating broker's HTTP "
        "authentication and authorization (docs/broker-security.md). It answers HTTP at "
        "once: the public status it saved when it last ran (data_dir/public-status.json) "
        "is served, marked with its as-of time, until the live one is built "
        "(docs/operations.md).",
    )
    config_arg(serve)
    serve.set_defaults(func=cmd_serve)

    add_agent_parser(sub)
    add_simulate_parser(sub)
    add_users_parser(sub)

    add_devices_parser(sub)
    add_sites_parser(sub)
    add_campaigns_parser(sub)

    schedules = sub.add_parser("schedules", help="campaigns and their windows")
    csub = schedules.add_subparsers(dest="action", required=True, metavar="ACTION")
    apply = csub.add_parser("apply", help="create or replace a campaign from its file")
    config_arg(apply)
    apply.add_argument("file", type=Path)
    apply.set_defaults(func=cmd_schedules_apply)
    prev = csub.add_parser(
        "preview",
        help="show the resolved timeline of campaign files, without applying them",
        description="Expand campaign files over a date range for the sites of a sites "
        "file, settle overlaps by priority, and print the timeline. Conflicts (equal "
        "priorities overlapping, empty targets, very short windows) go to stderr. "
        "Later files count as newer campaigns.",
    )
    prev.add_argument("campaigns", nargs="+", type=Path, metavar="CAMPAIGN.yaml")
    prev.add_argument("--sites", type=Path, required=True, metavar="SITES.yaml")
    prev.add_argument(
        "--from",
        dest="from_",
        type=_date,
        required=True,
        metavar="DATE",
        help="first local date (YYYY-MM-DD)",
    )
    prev.add_argument(
        "--to", type=_date, required=True, metavar="DATE", help="last local date, inclusive"
    )
    prev.add_argument("--format", choices=["table", "json", "ics"], default="table")
    prev.add_argument("--city", help="only the sites of this city id")
    prev.set_defaults(func=cmd_schedules_preview)
    add_rollouts_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        for noisy in ("alembic", "apscheduler", "amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except (CliError, SettingsError, ScheduleFileError, ValueError) as exc:
        print(f"illuminate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
