"""`illuminate devices|sites|campaigns ...`: the registry from the command line.

Registered in the main parser by `add_devices_parser`, `add_sites_parser` and
`add_campaigns_parser`. Every change goes through the same code as the staff API
(the `Registrar` for devices, the stores for sites and campaigns) and is written to
the audit log in the change's transaction, as `cli:<login name>`.

Registering, rotating and decommissioning change the device's broker account too,
where the registrar provisions accounts (`build_registrar` in controller/registrar.py).
This process has no link to the broker, so it marks a rotated or decommissioned
device offline in the database only: the
retained status on the broker is corrected when the device next connects (a running
controller rereads the registry within a second).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from controller.access import AuditKind
from controller.cli_common import CliError, adapter_config_json, config_arg
from devices.clock import system_clock

if TYPE_CHECKING:
    from controller.registrar import Issued, Registrar
    from controller.store.base import DeviceRecord, DeviceView, Stores

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

IMPORT_HELP = """\
Register every device of FILE in one transaction: all of them, or none when any row
is bad (every problem is listed, with its line and device id). Each device gets a new
random password; the passwords are written to OUT, once, and are not shown again.

FILE is CSV (devices.csv) or YAML (devices.yaml / .yml), by its name.

CSV: a header line with the columns id and site (no others), one device per line.
Spaces around cells are ignored, and so are blank lines.

    id,site
    menin-gate-ctl,menin-gate
    atomium-ctl,atomium

YAML: a list of {id, site} (or the same list under a key `devices:`).

    - {id: menin-gate-ctl, site: menin-gate}
    - {id: atomium-ctl, site: atomium}

Device ids are 1-48 lower-case letters, digits and '-', not starting with
'illuminate'; each site must already exist (illuminate sites import).

OUT is created with mode 0600 and never overwritten unless --force. Its format follows
its name: OUT.csv gets a header `id,password` and one line per device; OUT.yaml gets a
list of {id, password}. With `--credentials -` the CSV goes to stdout and the summary
to stderr. Progress goes to stderr.

Each device's broker account is created too (the controller's own accounts for the
embedded broker or the broker hook; dynsec with broker.dynsec_admin_username), before
the devices are stored, and removed again if storing them fails.

    illuminate devices import devices.csv --credentials device-passwords.csv
"""

ACCOUNTS_NOTE = (
    "The device's broker account changes too: in the controller's own accounts for the "
    "embedded broker or the broker hook, through Mosquitto's dynamic-security plugin "
    "with broker.dynsec_admin_username set; with another broker and no dynsec admin, "
    "only the registry changes, and the broker's accounts are the operator's to change "
    "(deploy/mosquitto/README.md)."
)


def actor() -> str:
    """Who the audit log names for a change made here."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return f"cli:{name}"[:64]


@dataclass
class Registry:
    stores: Stores
    registrar: Registrar


@contextmanager
def open_registry(args: argparse.Namespace) -> Iterator[Registry]:
    """The stores of the configured database (migrated) and a registrar for them."""
    from controller.registrar import build_registrar
    from controller.settings import load_settings
    from controller.store.db import make_engine, migrate, session_factory
    from controller.store.sql import sql_stores

    settings = load_settings(getattr(args, "config", None))
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        stores = sql_stores(session_factory(engine))
        yield Registry(stores, build_registrar(settings, stores))
    finally:
        engine.dispose()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_issued(issued: Issued, as_json: bool, chosen: bool) -> None:
    mqtt = issued.mqtt
    if as_json:
        settings = mqtt.as_json()
        if chosen:
            settings.pop("password")
        print(json.dumps({"id": issued.record.id, "mqtt": settings}, indent=2))
        return
    if chosen:
        return  # a password the operator chose is not echoed
    print(f"MQTT username: {mqtt.username}")
    if mqtt.password is None:
        print(
            f"MQTT password: unchanged: this is the account of the bridge of "
            f"{', '.join(mqtt.shared_with)} (`illuminate devices rotate` draws a new one)"
        )
    else:
        print(f"MQTT password: {mqtt.password}")
        print("(shown once; keep it safe)")
        if mqtt.shared_with:
            print(f"(the bridge's account: {', '.join(mqtt.shared_with)} use it too)")
    scheme = "mqtts" if mqtt.tls else "mqtt"
    print(f"MQTT broker: {scheme}://{mqtt.host}:{mqtt.port}")
    print(f"MQTT client id: {mqtt.client_id}")
    for name, topic in mqtt.topics.items():
        shown = ", ".join(topic) if isinstance(topic, list) else topic
        print(f"topic {name}: {shown}")


def _errors() -> tuple[type[Exception], ...]:
    from controller.registrar import BrokerUnavailable
    from controller.store.base import RegistryError
    from devices.adapters import AdapterConfigError

    return (RegistryError, BrokerUnavailable, AdapterConfigError)


# devices -------------------------------------------------------------------------


def cmd_devices_add(args: argparse.Namespace) -> int:
    try:
        with open_registry(args) as registry:
            issued = registry.registrar.register(
                args.id,
                args.site,
                actor(),
                system_clock(),
                adapter=args.adapter,
                config=args.adapter_config,
                password=args.password,
                via="cli",
            )
    except _errors() as exc:
        raise CliError(str(exc)) from None
    if not args.json:
        print(f"registered device {args.id} at site {args.site}")
    _print_issued(issued, args.json, chosen=bool(args.password))
    return 0


def cmd_devices_import(args: argparse.Namespace) -> int:
    from controller.registrar import BrokerUnavailable
    from controller.registration import (
        CredentialsFile,
        ImportRejected,
        file_format,
        load_file,
        prepare,
    )

    started = system_clock.monotonic()
    file_format(args.file)  # a name of no known format is refused before any work
    out = CredentialsFile(args.credentials, force=args.force)  # so is a bad OUT
    _say(f"reading {args.file}")
    try:
        batch = load_file(args.file)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    _say(f"read {len(batch.rows)} devices; checking them against the registry")
    try:
        with open_registry(args) as registry:
            prepared = prepare(registry.stores.registry, batch, _say)
            _say(f"writing the credentials to {out.name}")
            with out.writing(prepared.credentials) as publish:
                _say(f"registering {len(prepared.devices)} devices")
                registry.registrar.register_batch(prepared, actor(), system_clock(), "import")
                publish()
    except ImportRejected as exc:
        raise CliError(f"{args.file}: {exc}\nnothing was registered") from None
    except BrokerUnavailable as exc:
        raise CliError(str(exc)) from None
    elapsed = system_clock.monotonic() - started
    _say(f"done in {elapsed:.1f} s")
    summary = (
        f"registered {len(prepared.devices)} devices at {prepared.sites} sites; "
        f"credentials in {out.name}"
    )
    print(summary, file=sys.stderr if out.to_stdout else sys.stdout)
    return 0


def _online(view: DeviceView | None, record: DeviceRecord) -> str:
    if not record.active:
        return "decommissioned"
    online = view.online if view is not None else None
    return {True: "online", False: "offline", None: "never seen"}[online]


def cmd_devices_list(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        records = registry.stores.registry.devices()
        views = registry.stores.reports.views()
    shown = [r for r in records.values() if r.active or args.decommissioned]
    for r in shown:
        d = views.get(r.id)
        applied = (
            f"v{d.applied_version} step {d.applied_step_at:%Y-%m-%d %H:%M:%S}Z"
            if (d is not None and d.applied_version and d.applied_step_at)
            else "-"
        )
        print(f"{r.id:40} {r.site_id:32} {_online(d, r):10} {applied}")
    print(f"{len(shown)} devices")
    return 0


def _when(value: object) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}Z" if value is not None else "-"


def cmd_devices_show(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        record = registry.stores.registry.devices([args.id]).get(args.id)
        view = registry.stores.reports.views([args.id]).get(args.id)
    if record is None:
        raise CliError(f"no device {args.id!r}")
    print(f"device: {record.id}")
    print(f"site: {record.site_id} ({record.city})")
    print(f"adapter: {record.adapter}")
    print(f"config: {json.dumps(record.config, sort_keys=True)}")
    print(f"registered: {_when(record.created_at)}")
    print(f"credentials rotated: {_when(record.credentials_at)}")
    print(f"decommissioned: {_when(record.decommissioned_at)}")
    print(f"status: {_online(view, record)} (since {_when(view.status_at if view else None)})")
    print(f"firmware: {view.firmware if view and view.firmware else '-'}")
    return 0


def cmd_devices_rotate(args: argparse.Namespace) -> int:
    try:
        with open_registry(args) as registry:
            issued = registry.registrar.rotate(
                args.id, actor(), system_clock(), password=args.password
            )
    except _errors() as exc:
        raise CliError(str(exc)) from None
    if not args.json:
        print(f"new credentials for device {args.id}; the old password no longer works")
    _print_issued(issued, args.json, chosen=bool(args.password))
    return 0


def cmd_devices_decommission(args: argparse.Namespace) -> int:
    try:
        with open_registry(args) as registry:
            registry.registrar.decommission(args.id, actor(), system_clock())
    except _errors() as exc:
        raise CliError(str(exc)) from None
    print(f"decommissioned device {args.id}: its credentials are revoked; its history stays")
    return 0


def add_devices_parser(sub: Subparsers) -> None:
    from controller.device_ops_cli import add_device_ops_parsers
    from controller.registrar import ADAPTERS

    devices = sub.add_parser(
        "devices",
        help="register, list, rotate and decommission devices; test flashes and health",
        description="The lighting controllers of the sites. " + ACCOUNTS_NOTE,
    )
    dsub = devices.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = dsub.add_parser(
        "add",
        help="register a device at a site and issue its password",
        description="Register one device. Its id is also its MQTT username and the only "
        "client id it may connect with. Prints its MQTT settings with a new random "
        "password, shown once. " + ACCOUNTS_NOTE,
    )
    config_arg(add)
    add.add_argument("id", help="device id, also its MQTT username ([a-z0-9-], up to 48)")
    add.add_argument("--site", required=True, help="the site id it lights")
    add.add_argument(
        "--adapter",
        choices=ADAPTERS,
        default="native",
        help="how the controller speaks to it (default native: the Illuminate agent; "
        "the others are third-party controllers, see docs/devices.md)",
    )
    add.add_argument(
        "--adapter-config",
        dest="adapter_config",
        type=adapter_config_json,
        default={},
        metavar="JSON",
        help='the adapter\'s settings as a JSON object, e.g. \'{"topic": "wled/abc123"}\'',
    )
    add.add_argument(
        "--password", help="set this password instead of generating one (it is not echoed)"
    )
    add.add_argument("--json", action="store_true", help="print the MQTT settings as JSON")
    add.set_defaults(func=cmd_devices_add)

    dimport = dsub.add_parser(
        "import",
        help="register many devices from a CSV or YAML file, with generated passwords",
        description=IMPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_arg(dimport)
    dimport.add_argument("file", type=Path, metavar="FILE", help="devices.csv or devices.yaml")
    dimport.add_argument(
        "--credentials",
        required=True,
        type=Path,
        metavar="OUT",
        help="where to write the passwords: OUT.csv, OUT.yaml, or - for stdout (CSV)",
    )
    dimport.add_argument(
        "--force", action="store_true", help="replace OUT if it exists (default: refuse)"
    )
    dimport.set_defaults(func=cmd_devices_import)

    dlist = dsub.add_parser(
        "list",
        help="list devices with their last report",
        description="One line per device in service: id, site, online/offline/never "
        "seen, and the plan step it last applied.",
    )
    config_arg(dlist)
    dlist.add_argument(
        "--decommissioned", action="store_true", help="list decommissioned devices too"
    )
    dlist.set_defaults(func=cmd_devices_list)

    show = dsub.add_parser(
        "show",
        help="one device: site, adapter, dates and last status",
        description="Show what the registry holds about one device (a decommissioned "
        "one too) and its last status. Never its password.",
    )
    config_arg(show)
    show.add_argument("id", help="device id")
    show.set_defaults(func=cmd_devices_show)

    rotate = dsub.add_parser(
        "rotate",
        help="issue a new password; the old one stops working at once",
        description="Replace the device's password. The broker closes the device's "
        "connections at once and refuses the old password; the device shows offline "
        "until it connects with the new one. " + ACCOUNTS_NOTE,
    )
    config_arg(rotate)
    rotate.add_argument("id", help="device id")
    rotate.add_argument(
        "--password", help="set this password instead of generating one (it is not echoed)"
    )
    rotate.add_argument("--json", action="store_true", help="print the MQTT settings as JSON")
    rotate.set_defaults(func=cmd_devices_rotate)

    decommission = dsub.add_parser(
        "decommission",
        help="revoke a device's credentials and take it out of service",
        description="Decommission a device: its password is revoked (the broker closes "
        "its connections and refuses its logins), its open plans are superseded, and "
        "it leaves its site's status. Its record and history stay, and its id is not "
        "reused. " + ACCOUNTS_NOTE,
    )
    config_arg(decommission)
    decommission.add_argument("id", help="device id")
    decommission.set_defaults(func=cmd_devices_decommission)

    add_device_ops_parsers(dsub)  # `devices test` and `devices health`


# sites ---------------------------------------------------------------------------


def cmd_sites_import(args: argparse.Namespace) -> int:
    from schedules.files import load_sites

    catalog = load_sites(args.file)
    with open_registry(args) as registry:
        cities, sites = registry.stores.registry.import_catalog(catalog)
    print(f"imported {cities} cities and {sites} sites from {args.file}")
    return 0


def cmd_sites_list(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        catalog = registry.stores.registry.catalog()
    for site in catalog.sites:
        print(f"{site.id:32} {site.city:20} {site.lat:9.5f} {site.lon:10.5f}")
    print(f"{len(catalog.sites)} sites in {len(catalog.cities)} cities")
    return 0


def _name(value: str) -> tuple[str, str]:
    language, sep, text = value.partition("=")
    if not sep or not language or not text:
        raise argparse.ArgumentTypeError(f"{value!r}: give LANG=TEXT, for example en=Atomium")
    return language, text


def cmd_sites_set(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from controller.store.audit import AuditRecord
    from schedules.model import Site

    try:
        site = Site(
            id=args.id,
            city=args.city,
            name=dict(args.name),
            lat=args.lat,
            lon=args.lon,
            tags=tuple(args.tag or ()),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise CliError(f"not a valid site: {problems}") from None
    try:
        with open_registry(args) as registry:
            known = {s.id for s in registry.stores.registry.catalog().sites}
            now = system_clock()
            record = AuditRecord(
                at=now,
                actor=actor(),
                kind=AuditKind.SITE,
                action="replaced" if site.id in known else "created",
                subject=site.id,
                city=site.city,
            )
            created = registry.stores.registry.put_site(site, now, [record])
    except _errors() as exc:
        raise CliError(str(exc)) from None
    print(f"{'created' if created else 'replaced'} site {site.id} in {site.city}")
    return 0


def cmd_sites_delete(args: argparse.Namespace) -> int:
    from controller.store.audit import AuditRecord

    try:
        with open_registry(args) as registry:
            found = {s.id: s for s in registry.stores.registry.catalog().sites}.get(args.id)
            now = system_clock()
            record = AuditRecord(
                at=now,
                actor=actor(),
                kind=AuditKind.SITE,
                action="deleted",
                subject=args.id,
                city=found.city if found else None,
            )
            registry.stores.registry.remove_site(args.id, now, [record])
    except _errors() as exc:
        raise CliError(str(exc)) from None
    print(f"deleted site {args.id}")
    return 0


def add_sites_parser(sub: Subparsers) -> None:
    sites = sub.add_parser(
        "sites",
        help="import, list, create, change and delete sites",
        description="The cities and the monuments (sites) in them.",
    )
    ssub = sites.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = ssub.add_parser(
        "import",
        help="import a sites file (YAML)",
        description="Insert or update every city and site of a sites file (the format of "
        "controller/demo/belgium.yaml), in one transaction. A deleted site in the file "
        "comes back.",
    )
    config_arg(imp)
    imp.add_argument("file", type=Path, help="the sites file (YAML)")
    imp.set_defaults(func=cmd_sites_import)

    slist = ssub.add_parser(
        "list",
        help="list sites",
        description="One line per site: id, city, latitude and longitude.",
    )
    config_arg(slist)
    slist.set_defaults(func=cmd_sites_list)

    put = ssub.add_parser(
        "set",
        help="create or replace one site",
        description="Create a site in an existing city, or replace one (all its fields: "
        "give them all). The public page and the plans follow at once.",
    )
    config_arg(put)
    put.add_argument("id", help="site id ([a-z0-9-], up to 48)")
    put.add_argument("--city", required=True, help="the id of its city (which must exist)")
    put.add_argument(
        "--name",
        required=True,
        action="append",
        type=_name,
        metavar="LANG=TEXT",
        help="its name in one language, e.g. en=Atomium; repeat for each language",
    )
    put.add_argument("--lat", required=True, type=float, help="latitude, -90 to 90")
    put.add_argument("--lon", required=True, type=float, help="longitude, -180 to 180")
    put.add_argument(
        "--tag", action="append", metavar="TAG", help="a tag campaigns may target; repeatable"
    )
    put.set_defaults(func=cmd_sites_set)

    delete = ssub.add_parser(
        "delete",
        help="delete a site that has no devices in service",
        description="Take a site off the public page and out of the plans. Refused "
        "while devices in service are on it (decommission them first). Its history "
        "stays.",
    )
    config_arg(delete)
    delete.add_argument("id", help="site id")
    delete.set_defaults(func=cmd_sites_delete)


# campaigns -----------------------------------------------------------------------


def cmd_campaigns_list(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        records = registry.stores.campaigns.records()
    for record in records:
        title = record.body.get("title", {})
        text = next(iter(title.values()), "") if isinstance(title, dict) else ""
        print(f"{record.id:32} {record.body.get('priority', '-')!s:>4}  {text}")
    print(f"{len(records)} campaigns")
    return 0


def cmd_campaigns_delete(args: argparse.Namespace) -> int:
    from controller.campaigns import delete_campaign
    from controller.store.audit import AuditRecord

    with open_registry(args) as registry:
        now = system_clock()
        record = AuditRecord(
            at=now, actor=actor(), kind=AuditKind.CAMPAIGN, action="deleted", subject=args.id
        )
        deleted = delete_campaign(registry.stores, args.id, now, [record])
    if not deleted:
        raise CliError(f"no campaign {args.id!r}")
    print(f"deleted campaign {args.id}")
    print("a running controller on this database sends the change within a second")
    return 0


def add_campaigns_parser(sub: Subparsers) -> None:
    campaigns = sub.add_parser(
        "campaigns",
        help="list and delete stored campaigns",
        description="The campaigns stored in the database (create or replace them "
        "with `illuminate schedules apply`).",
    )
    csub = campaigns.add_subparsers(dest="action", required=True, metavar="ACTION")
    clist = csub.add_parser(
        "list",
        help="list stored campaigns",
        description="One line per campaign: id, priority and its first title.",
    )
    config_arg(clist)
    clist.set_defaults(func=cmd_campaigns_list)
    delete = csub.add_parser(
        "delete",
        help="delete a campaign; its windows leave every plan",
        description="Delete a stored campaign. A running controller on this database "
        "sends the devices new plans without it within a second.",
    )
    config_arg(delete)
    delete.add_argument("id", help="campaign id")
    delete.set_defaults(func=cmd_campaigns_delete)
