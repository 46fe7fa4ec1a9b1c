"""`illuminate demo`: the whole product on one machine, with the Belgian monuments.

A fresh SQLite database in the data folder, the embedded broker (unless broker.url is
set), one simulated device per site, and a Blue Heart window that opens shortly after
launch. The status page shows the monuments go from scheduled to pending to lit.
"""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from controller.app import Controller
from controller.last_known import FILE_NAME as LAST_KNOWN_FILE
from controller.registration import hash_generated_secret as hash_secret
from controller.serve import run_http
from controller.settings import Settings
from controller.store.base import NewDevice
from devices.simulator import Fleet, FleetSpec, SimDevice
from schedules.files import load_sites
from schedules.model import Campaign, SiteCatalog

SITES_FILE = Path(__file__).parent / "belgium.yaml"
CAMPAIGN_ID = "demo-blue-heart"
BLUE_HEART = "#009EDB"

BLUE_HEART_CALL = {
    "text": {
        "en": "Do you suspect human trafficking? Call the helpline, or report it online.",
        "fr": "Vous soupçonnez un cas de traite des êtres humains\u00a0? "
        "Appelez la ligne d'aide, ou signalez-le en ligne.",
        "nl": "Vermoedt u mensenhandel? Bel de hulplijn, of meld het online.",
        "de": "Sie vermuten Menschenhandel? Rufen Sie die Hotline an oder melden Sie es online.",
    },
    "helplines": [
        {
            "country": "BE",
            "number": "078/055.800",
            "hours": {"en": "24/7", "fr": "24 h/24, 7 j/7", "nl": "24/7", "de": "rund um die Uhr"},
        }
    ],
    "url": "www.stophumantrafficking.be",
}

log = logging.getLogger(__name__)


def device_id_for(site_id: str) -> str:
    return f"{site_id[:43]}-ctl"


def demo_campaign(start: datetime, duration: timedelta, zone: ZoneInfo) -> Campaign:
    """One window for every site, from `start` for `duration`, in local wall time."""
    local_start = start.astimezone(zone)
    local_end = (start + duration).astimezone(zone)
    return Campaign.model_validate(
        {
            "id": CAMPAIGN_ID,
            "title": {
                "en": "Blue Heart: World Day Against Trafficking in Persons",
                "fr": "Cœur bleu : Journée mondiale contre la traite d'êtres humains",
                "nl": "Blauw Hart: Werelddag tegen mensenhandel",
                "de": "Blaues Herz: Welttag gegen Menschenhandel",
            },
            "cause": {
                "en": "Against trafficking in human beings",
                "fr": "Contre la traite des êtres humains",
                "nl": "Tegen mensenhandel",
                "de": "Gegen Menschenhandel",
            },
            "call_to_action": BLUE_HEART_CALL,
            "color": BLUE_HEART,
            "level": 100,
            "priority": 50,
            "windows": [
                {
                    "targets": {"all": True},
                    "dates": [local_start.date().isoformat()],
                    "start": {"at": local_start.strftime("%H:%M:%S")},
                    "end": {"at": local_end.strftime("%H:%M:%S")},
                }
            ],
        }
    )


def seed(
    controller: Controller, catalog: SiteCatalog, start: datetime, duration: timedelta
) -> FleetSpec:
    """Register the sites, one device per site (with its broker account when the
    controller keeps them), and the demo campaign."""
    stores = controller.stores
    now = controller.clock()
    stores.registry.import_catalog(catalog)
    devices = [
        SimDevice(id=device_id_for(site.id), password=secrets.token_urlsafe(18))
        for site in catalog.sites
    ]
    stores.registry.add_devices(
        [
            NewDevice(d.id, site.id, hash_secret(d.password))
            for d, site in zip(devices, catalog.sites, strict=True)
        ],
        now,
    )
    if controller.accounts is not None:  # the embedded broker: each device its account
        for device in devices:
            controller.accounts.create(device.id, device.password)
    zone = catalog.city_of(catalog.sites[0]).zone
    stores.campaigns.put(demo_campaign(start, duration, zone), now)
    return FleetSpec(devices=devices)


def _progress(controller: Controller, stop: threading.Event, zone: ZoneInfo) -> None:
    """Print the public summary whenever it changes (read from the page's own rendering)."""
    last = None
    while not stop.wait(1.0):
        rendering = controller.public.get("en")
        if rendering is None:
            continue
        summary = orjson.loads(rendering.body)["summary"]
        line = ", ".join(f"{n} {k}" for k, n in summary.items() if n and k != "total")
        if line != last:
            at = controller.clock().astimezone(zone)
            print(f"[{at:%H:%M:%S}] {summary['total']} monuments: {line}", flush=True)
            last = line


def run_demo(settings: Settings, start_in: timedelta, duration: timedelta) -> int:
    db = settings.data_dir / "illuminate.sqlite"
    if settings.database.url is None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    # a fresh demo: no public status kept from the last run
    (settings.data_dir / LAST_KNOWN_FILE).unlink(missing_ok=True)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # thirty simulated devices chat at INFO; the demo prints its own progress
        for name in ("devices", "controller.reconcile"):
            logging.getLogger(name).setLevel(logging.WARNING)
    catalog = load_sites(SITES_FILE)
    controller = Controller(settings)
    if controller.accounts is not None:
        controller.accounts.reset()  # the last run's devices and passwords are gone
    opens = (controller.clock() + start_in).replace(microsecond=0) + timedelta(seconds=1)
    spec = seed(controller, catalog, opens, duration)
    controller.start()
    fleet = Fleet(spec, controller.broker_address(), topics=settings.topics)
    fleet.start()
    stop = threading.Event()
    zone = catalog.city_of(catalog.sites[0]).zone
    progress = threading.Thread(target=_progress, args=(controller, stop, zone), daemon=True)
    url = f"http://{settings.http.host}:{settings.http.port}"
    print(
        f"Illuminate demo: {len(catalog.sites)} monuments in {len(catalog.cities)} cities, "
        f"one simulated device each.\n"
        f"Blue Heart window: {opens.astimezone(zone):%H:%M:%S} to "
        f"{(opens + duration).astimezone(zone):%H:%M:%S} ({zone.key}).\n"
        f"Status page: {url}/   JSON: {url}/api/v1/public/status\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )
    progress.start()
    try:
        return run_http(controller, settings)
    finally:
        stop.set()
        progress.join(timeout=5)
        fleet.stop()
        controller.stop()
        print("Illuminate demo stopped.", flush=True)
