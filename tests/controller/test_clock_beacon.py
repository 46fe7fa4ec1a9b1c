"""The controller's side of clock discipline on a fake clock: the beacon it publishes, and
the flag on devices whose reported clock offset is beyond the tolerance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.beacon import MIN_GAP_S, ClockBeacon
from controller.broker.base import Incoming
from controller.broker.memory import MemoryBroker
from controller.clockwatch import ClockWatch
from controller.inbox import Inbox
from controller.intake import Intake
from controller.metrics import Metrics
from controller.settings import load_settings
from controller.store.base import NewDevice
from controller.store.memory import memory_stores
from devices.clock import FakeClock
from devices.protocol import (
    ControllerStatus,
    DeviceState,
    LightState,
    Topics,
    decode,
    encode,
)
from schedules.model import SiteCatalog

T0 = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)
TOPICS = Topics()
OFF_METRIC = "illuminate_devices_clock_off_total"


def beacons(broker: MemoryBroker) -> list[ControllerStatus]:
    return [decode(ControllerStatus, p.payload) for p in broker.published]


def test_the_beacon_carries_the_controllers_time_not_retained_every_period() -> None:
    clock = FakeClock(T0)
    broker = MemoryBroker(lambda _m: None)
    beacon = ClockBeacon(broker, TOPICS, clock, every_s=30, tolerance_ms=1500)
    broker.add_listener(beacon)
    assert beacon.step() is False  # not connected: nothing to send it on
    broker.connect()
    assert beacon.step() is True
    sent = broker.published[-1]
    assert sent.topic == TOPICS.controller_status and sent.retain is False
    assert beacons(broker)[-1] == ControllerStatus(online=True, now=T0, clock_tolerance_ms=1500)
    clock.advance(29)
    assert beacon.step() is False
    clock.advance(1)
    assert beacon.step() is True
    assert beacons(broker)[-1].now == T0 + timedelta(seconds=30)


def test_reconnections_get_a_beacon_soon_but_not_a_flood() -> None:
    clock = FakeClock(T0)
    broker = MemoryBroker(lambda _m: None)
    beacon = ClockBeacon(broker, TOPICS, clock, every_s=30, tolerance_ms=1000)
    broker.connect()
    beacon.step()
    clock.advance(0.5)
    for _ in range(100):  # a hundred reconnections in the same second
        beacon.soon()
        beacon.step()
    assert len(broker.published) == 1
    assert beacon.wait_s() == MIN_GAP_S - 0.5
    clock.advance(0.5)
    assert beacon.step() is True
    assert len(broker.published) == 2


class IntakeWorld:
    def __init__(self, tolerance_ms: int = 1000) -> None:
        self.clock = FakeClock(T0)
        self.stores = memory_stores()
        self.stores.registry.import_catalog(
            SiteCatalog.model_validate(
                {
                    "cities": [{"id": "c", "name": {"en": "C"}, "timezone": "Europe/Brussels"}],
                    "sites": [{"id": "s", "city": "c", "name": {"en": "S"}, "lat": 50, "lon": 4}],
                }
            )
        )
        self.stores.registry.add_devices([NewDevice("d0", "s"), NewDevice("d1", "s")], T0)
        self.metrics = Metrics()
        self.watch = ClockWatch(tolerance_ms, self.metrics)
        self.intake = Intake(
            self.stores,
            TOPICS,
            Inbox(TOPICS),
            self.clock,
            self.metrics,
            clock_watch=self.watch,
        )

    def state(self, device_id: str, offset_ms: int | None) -> Incoming:
        body = DeviceState(
            state=LightState(on=False), reported_at=self.clock(), clock_offset_ms=offset_ms
        )
        return Incoming(TOPICS.state(device_id), encode(body), True)

    def flagged(self) -> float:
        return self.metrics.registry.get_sample_value(OFF_METRIC) or 0.0


def test_a_device_whose_clock_is_off_beyond_the_tolerance_is_flagged_once() -> None:
    w = IntakeWorld(tolerance_ms=1000)
    w.intake.process([w.state("d0", -90_000), w.state("d1", 1000)])
    assert w.watch.off() == {"d0": -90_000}
    assert w.flagged() == 1
    w.intake.process([w.state("d0", -89_990), w.state("d1", None)])  # still off: no recount
    assert w.flagged() == 1 and w.watch.off() == {"d0": -89_990}
    w.intake.process([w.state("d0", 20)])  # its clock was fixed
    assert w.watch.off() == {}
    w.intake.process([w.state("d0", 1001)])
    assert w.flagged() == 2 and w.watch.off() == {"d0": 1001}


def test_the_tolerance_and_the_beacon_period_are_settings() -> None:
    s = load_settings(None)
    assert (s.control.clock_tolerance_ms, s.control.clock_beacon_s) == (1000, 30)
    s = load_settings(None, control={"clock_tolerance_ms": 250, "clock_beacon_s": 10})
    assert (s.control.clock_tolerance_ms, s.control.clock_beacon_s) == (250, 10)
