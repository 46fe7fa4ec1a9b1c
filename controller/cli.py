"""The `illuminate` command."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from controller.settings import Settings, SettingsError, load_settings
from devices.clock import system_clock
from devices.commands import add_agent_parser, add_simulate_parser
from schedules.files import ScheduleFileError, load_campaign, load_sites


class CliError(Exception):
    """A fault the user can fix; printed without a traceback."""


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if number < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return number


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(getattr(args, "config", None), **overrides)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings file (TOML); ILLUMINATE_* environment variables override it",
    )


# commands ---------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from controller.app import Controller
    from controller.serve import check_port, run_http

    settings = _settings(args)
    check_port(settings.http.host, settings.http.port)
    controller = Controller(settings)
    controller.start()
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


def _store(args: argparse.Namespace) -> Any:
    from controller.store.db import make_engine, migrate, session_factory
    from controller.store.repo import Store

    settings = _settings(args)
    engine = make_engine(settings.database_url)
    migrate(engine)
    return Store(session_factory(engine))


def cmd_sites_import(args: argparse.Namespace) -> int:
    catalog = load_sites(args.file)
    cities, sites = _store(args).import_catalog(catalog)
    print(f"imported {cities} cities and {sites} sites from {args.file}")
    return 0


def cmd_sites_list(args: argparse.Namespace) -> int:
    catalog = _store(args).catalog()
    for site in catalog.sites:
        print(f"{site.id:32} {site.city:20} {site.lat:9.5f} {site.lon:10.5f}")
    print(f"{len(catalog.sites)} sites in {len(catalog.cities)} cities")
    return 0


def cmd_devices_add(args: argparse.Namespace) -> int:
    from controller.store.repo import RegistryError

    password = args.password or secrets.token_urlsafe(18)
    try:
        _store(args).add_device(args.id, args.site, password, system_clock())
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    print(f"registered device {args.id} at site {args.site}")
    if not args.password:
        print(f"MQTT username: {args.id}\nMQTT password: {password}\n(shown once; keep it safe)")
    return 0


def cmd_devices_list(args: argparse.Namespace) -> int:
    devices = _store(args).devices()
    for d in devices:
        online = {True: "online", False: "offline", None: "never seen"}[d.online]
        applied = (
            f"v{d.applied_version} step {d.applied_step_at:%Y-%m-%d %H:%M:%S}Z"
            if (d.applied_version and d.applied_step_at)
            else "-"
        )
        print(f"{d.id:40} {d.site_id:32} {online:10} {applied}")
    print(f"{len(devices)} devices")
    return 0


def cmd_schedules_apply(args: argparse.Namespace) -> int:
    campaign = load_campaign(args.file)
    created = _store(args).put_campaign(campaign, system_clock())
    print(f"{'created' if created else 'updated'} campaign {campaign.id}")
    print("a running controller sends the change to the devices at its next reconcile")
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
    _config_arg(demo)
    demo.add_argument(
        "--start-in",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="seconds until the window opens (default 30)",
    )
    demo.add_argument(
        "--duration",
        type=_seconds,
        default=600.0,
        metavar="S",
        help="window length in seconds (default 600)",
    )
    demo.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    demo.add_argument(
        "--grace",
        type=_seconds,
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
        "and the web app. With no broker.url it starts the embedded broker; with no "
        "database.url it uses SQLite in the data folder.",
    )
    _config_arg(serve)
    serve.set_defaults(func=cmd_serve)

    add_agent_parser(sub)
    add_simulate_parser(sub)

    devices = sub.add_parser("devices", help="register and list devices")
    dsub = devices.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = dsub.add_parser("add", help="register a device at a site and issue its password")
    _config_arg(add)
    add.add_argument("id", help="device id, also its MQTT username ([a-z0-9-], up to 48)")
    add.add_argument("--site", required=True, help="the site id it lights")
    add.add_argument("--password", help="set this password instead of generating one")
    add.set_defaults(func=cmd_devices_add)
    dlist = dsub.add_parser("list", help="list devices with their last report")
    _config_arg(dlist)
    dlist.set_defaults(func=cmd_devices_list)

    sites = sub.add_parser("sites", help="import and list cities and sites")
    ssub = sites.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = ssub.add_parser("import", help="import a sites file (YAML)")
    _config_arg(imp)
    imp.add_argument("file", type=Path)
    imp.set_defaults(func=cmd_sites_import)
    slist = ssub.add_parser("list", help="list sites")
    _config_arg(slist)
    slist.set_defaults(func=cmd_sites_list)

    schedules = sub.add_parser("schedules", help="campaigns and their windows")
    csub = schedules.add_subparsers(dest="action", required=True, metavar="ACTION")
    apply = csub.add_parser("apply", help="create or replace a campaign from its file")
    _config_arg(apply)
    apply.add_argument("file", type=Path)
    apply.set_defaults(func=cmd_schedules_apply)
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
