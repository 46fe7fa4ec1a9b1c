"""End-to-end harness: a real controller, real agents and a real broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from controller.app import Controller
from controller.public import PublicStatus, public_status
from controller.registration import hash_generated_secret
from controller.settings import Settings, load_settings
from controller.store.base import NewDevice, Stores
from devices.agent import Behaviour
from devices.clock import TimeSource
from devices.simulator import Fleet, FleetSpec, SimDevice
from schedules.model import Campaign, SiteCatalog
from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER, Mosquitto

BXL = ZoneInfo("Europe/Brussels")
GRACE_S = 2.0
DEADLINE = 60.0
"""How long a test waits for something that must happen: generous, never a speed bound."""


def catalog(n: int) -> SiteCatalog:
    return SiteCatalog.model_validate(
        {
            "cities": [
                {"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"}
            ],
            "sites": [
                {
                    "id": f"site-{i:02d}",
                    "city": "brussels",
                    "name": {"en": f"Monument {i}"},
                    "lat": 50.8 + i / 1000,
                    "lon": 4.35,
                }
                for i in range(1, n + 1)
            ],
        }
    )


def window_campaign(start: datetime, end: datetime, cid: str = "blue-heart") -> Campaign:
    ls, le = start.astimezone(BXL), end.astimezone(BXL)
    return Campaign.model_validate(
        {
            "id": cid,
            "title": {"en": "Blue Heart"},
            "color": "#009EDB",
            "level": 80,
            "windows": [
                {
                    "targets": {"all": True},
                    "dates": [ls.date().isoformat()],
                    "start": {"at": ls.strftime("%H:%M:%S")},
                    "end": {"at": le.strftime("%H:%M:%S")},
                }
            ],
        }
    )


def count_commands(stores: Stores) -> int:
    """How many plan versions were ever issued (every version has its PENDING event)."""
    return sum(1 for e in stores.outbox.events() if e.from_state is None)


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def whole_second(delay_s: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=delay_s)).replace(microsecond=0)


@dataclass
class Rig:
    """One controller and one fleet; `restart_controller` keeps the same database."""

    settings: Settings
    sites: SiteCatalog
    devices: list[SimDevice]
    controller: Controller | None = None
    fleet: Fleet | None = None
    stopped: list[Controller] = field(default_factory=list)

    def start_controller(self, clock: TimeSource | None = None) -> Controller:
        self.controller = Controller(self.settings, clock=clock)
        self.controller.start()
        return self.controller

    def register(self, campaign: Campaign) -> None:
        assert self.controller is not None
        now = datetime.now(UTC)
        stores = self.controller.stores
        stores.registry.import_catalog(self.sites)
        stores.registry.add_devices(
            [
                NewDevice(device.id, site.id, hash_generated_secret(device.password))
                for device, site in zip(self.devices, self.sites.sites, strict=True)
            ],
            now,
        )
        accounts = self.controller.accounts
        if accounts is not None:  # the embedded broker: each device logs in with its own
            for device in self.devices:
                if not accounts.exists(device.id):
                    accounts.create(device.id, device.password)
        stores.campaigns.put(campaign, now)
        self.controller.changed()

    def start_fleet(self) -> Fleet:
        assert self.controller is not None
        self.fleet = Fleet(
            FleetSpec(devices=self.devices),
            self.controller.broker_address(),
            topics=self.settings.topics,
        )
        self.fleet.start()
        return self.fleet

    def restart_controller(self) -> Controller:
        assert self.controller is not None
        self.controller.stop()
        self.stopped.append(self.controller)
        return self.start_controller()

    def status(self) -> PublicStatus:
        assert self.controller is not None
        c = self.controller
        return public_status(c.stores.snapshot(), datetime.now(UTC), c.grace, timedelta(hours=24))

    def served(self) -> dict[str, str]:
        """The states in the public view's current rendering: what the page shows."""
        assert self.controller is not None
        rendering = self.controller.public.get("en")
        if rendering is None:
            return {}
        return {s["id"]: s["state"] for s in orjson.loads(rendering.body)["sites"]}

    def states(self) -> dict[str, str]:
        return {s.id: s.state.value for s in self.status().sites}

    def stop(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()
        if self.controller is not None:
            self.controller.stop()


def make_settings(tmp: Path, broker_url: str | None) -> Settings:
    broker: dict[str, object] = {"embedded_port": 0}
    if broker_url:
        broker = {"url": broker_url, "username": CONTROLLER_USER, "password": CONTROLLER_PASSWORD}
    return load_settings(
        None,
        data_dir=tmp,
        broker=broker,
        control={"grace_s": GRACE_S, "tick_s": 1.0, "horizon_h": 48},
    )


def devices_for(n: int, behaviours: dict[int, dict[str, object]] | None = None) -> list[SimDevice]:
    out = []
    for i in range(1, n + 1):
        extra = (behaviours or {}).get(i, {})
        out.append(
            SimDevice.model_validate({"id": f"dev-{i:02d}", "password": f"pw-{i:02d}", **extra})
        )
    return out


@pytest.fixture
def rig_factory(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(
        n: int, behaviours: dict[int, dict[str, object]] | None = None, embedded: bool = False
    ) -> Rig:
        devices = devices_for(n, behaviours)
        if not embedded:
            mosquitto.add_users({d.id: d.password for d in devices})
        rig = Rig(make_settings(tmp_path, None if embedded else mosquitto.url), catalog(n), devices)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.stop()


__all__ = [
    "DEADLINE",
    "Behaviour",
    "Rig",
    "count_commands",
    "wait_until",
    "whole_second",
    "window_campaign",
]
