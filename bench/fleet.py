"""The bench's fleet: sites, device ids per simulator shard, campaigns, registration.

Registration goes through `register_fleet` only, so the way devices are registered can
change in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from controller.registration import hash_generated_secret
from controller.store.base import NewDevice
from controller.store.sql import database
from devices.clock import system_clock
from devices.simulator import FleetSpec
from schedules.model import SiteCatalog

ZONE = "Europe/Brussels"
CITIES = 10
CAMPAIGN_ID = "bench-blue"
COLOR = "#009EDB"
LEVEL = 80
DEVICE_PASSWORD = "bench-device-pw"


@dataclass(frozen=True)
class Shard:
    """One simulator process: `count` devices named `prefix001`, `prefix002`, ..."""

    index: int
    prefix: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class BenchDevice:
    id: str
    site_id: str
    password: str | None


def shards(devices: int, shard_size: int, prefix: str = "sim") -> list[Shard]:
    """Split `devices` into shards of at most `shard_size`, ids as `illuminate simulate`
    makes them from `--count` and `--prefix`."""
    out = []
    left, index = devices, 0
    while left > 0:
        count = min(shard_size, left)
        shard_prefix = f"{prefix}{index:02d}-"
        spec = FleetSpec.generate(count, DEVICE_PASSWORD, shard_prefix)
        out.append(Shard(index, shard_prefix, tuple(d.id for d in spec.devices)))
        left -= count
        index += 1
    return out


def site_id(i: int) -> str:
    return f"site-{i:05d}"


def catalog(sites: int) -> SiteCatalog:
    return SiteCatalog.model_validate(
        {
            "cities": [
                {"id": f"city-{c:02d}", "name": {"en": f"City {c}"}, "timezone": ZONE}
                for c in range(CITIES)
            ],
            "sites": [
                {
                    "id": site_id(i),
                    "city": f"city-{i % CITIES:02d}",
                    "name": {"en": f"Monument {i}"},
                    "lat": 50.5 + (i % 100) / 200,
                    "lon": 3.5 + (i // 100 % 100) / 50,
                }
                for i in range(sites)
            ],
        }
    )


def one_per_site(ids: list[str], password: str | None) -> list[BenchDevice]:
    return [BenchDevice(d, site_id(i), password) for i, d in enumerate(ids)]


def register_fleet(db_url: str, sites: SiteCatalog, devices: list[BenchDevice]) -> float:
    """Create the schema, import the sites and register every device; return seconds
    spent on the devices: one batch through the registry, as `illuminate devices import`
    does (passwords hashed as generated secrets)."""
    with database(db_url) as (_, _, stores):
        stores.registry.import_catalog(sites)
        now = system_clock()
        start = time.perf_counter()
        stores.registry.add_devices(
            [
                NewDevice(
                    d.id, d.site_id, hash_generated_secret(d.password) if d.password else None
                )
                for d in devices
            ],
            now,
        )
        return time.perf_counter() - start


def window_campaign(opens: datetime, length: timedelta) -> dict[str, Any]:
    """A campaign with one window for every site, from `opens` for `length` (< 1 day),
    as JSON for `PUT /api/v1/campaigns/{id}`."""
    zone = ZoneInfo(ZONE)
    start, end = opens.astimezone(zone), (opens + length).astimezone(zone)
    return {
        "id": CAMPAIGN_ID,
        "title": {"en": "Bench: Blue Heart"},
        "color": COLOR,
        "level": LEVEL,
        "windows": [
            {
                "targets": {"all": True},
                "dates": [start.date().isoformat()],
                "start": {"at": start.strftime("%H:%M:%S")},
                "end": {"at": end.strftime("%H:%M:%S")},
            }
        ],
    }


def sunset_campaign() -> dict[str, Any]:
    """A daily campaign from 15 minutes before sunset to 01:00, every site."""
    return {
        "id": "bench-daily",
        "title": {"en": "Daily sunset"},
        "color": COLOR,
        "windows": [
            {
                "targets": {"all": True},
                "rrule": "FREQ=DAILY",
                "start": {"sun": "sunset", "offset": "-15m"},
                "end": {"at": "01:00"},
            }
        ],
    }
