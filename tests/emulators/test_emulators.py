"""Each adapter against its vendor's emulator, through a real Mosquitto: the command
reaches the device, its reports parsed and merged confirm the target; a wrong colour
never does; a malformed report reads as Malformed; the last will reads as offline."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from devices.adapters import Adapter, Availability, Malformed, adapter_for
from devices.protocol import LightState
from tests.emulators import EMULATORS, Emulator
from tests.emulators.driver import AdapterDriver
from tests.support.mosquitto import Mosquitto

UN_BLUE_80 = LightState(on=True, color="#009EDB", level=80)
OFF = LightState(on=False)


def _cases(tag: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per case: the adapter name and a registration config, its topics unique to `tag`."""
    return {
        "wled": ("wled", {"topic": f"wled/{tag}"}),
        "tasmota": ("tasmota", {"topic": f"fountain-{tag}"}),
        "zigbee2mqtt": ("zigbee2mqtt", {"friendly_name": f"belfry/flood-{tag}"}),
        "ha-json": (
            "ha-json",
            {
                "command_topic": f"esphome/gate-{tag}/light/rgb/command",
                "state_topic": f"esphome/gate-{tag}/light/rgb/state",
                "availability_topic": f"esphome/gate-{tag}/status",
            },
        ),
        "shelly-gen2": ("shelly-gen2", {"prefix": f"shellyplusrgbwpm-{tag}"}),
        "shelly-gen2-rgb": ("shelly-gen2", {"prefix": f"shellyplusrgb-{tag}", "profile": "rgb"}),
        "shelly-gen1": ("shelly-gen1", {"id": f"shellyrgbw2-{tag}"}),
    }


VENDORS = tuple(_cases("x"))


def _tag(request: pytest.FixtureRequest) -> str:
    return hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]


Rig = Callable[..., Any]


@pytest.fixture
def rig(broker: Mosquitto, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """`rig(case, **knobs)`: a context of (adapter, driver, emulator), the driver
    subscribed before the emulator connects."""

    @contextmanager
    def make(vendor: str, **knobs: Any) -> Iterator[tuple[Adapter, AdapterDriver, Emulator[Any]]]:
        name, config = _cases(_tag(request))[vendor]
        adapter = adapter_for(name, config)
        with (
            AdapterDriver(adapter, "127.0.0.1", broker.port) as driver,
            EMULATORS[name]("127.0.0.1", broker.port, config=config, **knobs) as device,
        ):
            yield adapter, driver, device

    yield make


def _apply(driver: AdapterDriver, device: Emulator[Any], target: LightState) -> None:
    """Send `target`, wait until the device applied it and its reports arrived."""
    mark = device.mark()
    driver.send(target)
    device.wait_applied(after=mark)
    driver.sync(device, after=mark)


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_command_reaches_the_device_and_its_reports_confirm(rig: Rig, vendor: str) -> None:
    with rig(vendor) as (adapter, driver, device):
        driver.wait(lambda: driver.availability is Availability.ONLINE)
        assert not adapter.confirms(UN_BLUE_80, driver.reported)

        _apply(driver, device, UN_BLUE_80)
        assert device.shown.matches(UN_BLUE_80), device.shown
        assert adapter.confirms(UN_BLUE_80, driver.reported), driver.reported

        _apply(driver, device, OFF)
        assert not device.shown.on
        assert adapter.confirms(OFF, driver.reported), driver.reported
        assert not adapter.confirms(UN_BLUE_80, driver.reported)
        assert driver.malformed() == []


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_wrong_colour_never_confirms(rig: Rig, vendor: str) -> None:
    with rig(vendor, wrong_colour=True) as (adapter, driver, device):
        _apply(driver, device, UN_BLUE_80)
        mark = device.mark()
        if driver.request_state():  # where the vendor reads back, read back
            device.wait_received(after=mark)
            driver.sync(device, after=mark)
        assert device.shown.on and not device.shown.matches(UN_BLUE_80), device.shown
        assert not adapter.confirms(UN_BLUE_80, driver.reported), driver.reported


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_silent_device_applies_but_nothing_confirms(rig: Rig, vendor: str) -> None:
    with rig(vendor, silent=True) as (adapter, driver, device):
        _apply(driver, device, UN_BLUE_80)
        assert device.shown.matches(UN_BLUE_80)
        assert not adapter.confirms(UN_BLUE_80, driver.reported), driver.reported


@pytest.mark.parametrize("vendor", VENDORS)
def test_malformed_reports_read_as_malformed(rig: Rig, vendor: str) -> None:
    with rig(vendor) as (_adapter, driver, device):
        for i in range(len(device.malformed_messages())):
            topic, payload = device.publish_malformed(i)
            parsed = driver.parsed(topic, payload)
            assert isinstance(parsed, Malformed), (topic, payload, parsed)


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_last_will_reads_as_offline(rig: Rig, vendor: str) -> None:
    with rig(vendor) as (_adapter, driver, device):
        driver.wait(lambda: driver.availability is Availability.ONLINE)
        device.drop()
        driver.wait(lambda: driver.availability is Availability.OFFLINE)
        device.start()  # a reboot
        driver.wait(lambda: driver.availability is Availability.ONLINE)
