"""Third-party devices end to end: a running controller on a real Mosquitto with the
dynamic-security plugin (the controller provisions the accounts), registration over
HTTP, and the device a real MQTT connection logged in with the credentials it was
issued, speaking its vendor's payloads on its vendor's topics.

A window opens: the device gets its vendor's command, answers as its firmware does, and
the site turns `lit` in /api/v1/public/status; the window's end turns it off. A device
that shows the wrong colour stays `unconfirmed`; a device that was offline at the
window's start gets the command when it comes online.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.app import Controller
from controller.broker.base import Incoming
from controller.lifecycle import CommandState
from controller.settings import load_settings
from schedules.model import SiteCatalog
from tests.controller.test_staff_api import serve
from tests.integration.conftest import DEADLINE, wait_until, whole_second, window_campaign
from tests.support.mosquitto import (
    CONTROLLER_PASSWORD,
    CONTROLLER_USER,
    DYNSEC_ADMIN_PASSWORD,
    DYNSEC_ADMIN_USER,
    Mosquitto,
)
from tests.support.mqtt5 import Probe
from tests.support.peer import Sink

pytestmark = pytest.mark.broker

SITES = SiteCatalog.model_validate(
    {
        "cities": [{"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"}],
        "sites": [
            {
                "id": "atomium",
                "city": "brussels",
                "name": {"en": "Atomium"},
                "lat": 50.89,
                "lon": 4.34,
            }
        ],
    }
)
Reply = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Vendor:
    """What a vendor's firmware does, as far as these tests need: its config, its
    availability topic and payloads, and its reports in answer to a command."""

    adapter: str
    config: dict[str, Any]
    availability: str
    online: bytes
    offline: bytes
    answer: Callable[[Incoming, str | None], Reply]
    """(command, a wrong colour to show instead or None) -> the reports it publishes."""


def _wled_answer(command: Incoming, wrong: str | None) -> Reply:
    body = json.loads(command.payload)
    if not body["on"]:
        return [("wled/atomium/g", b"0")]
    r, g, b, _w = body["seg"]["col"][0]
    colour = wrong or f"#{r:02X}{g:02X}{b:02X}"
    return [("wled/atomium/g", str(body["bri"]).encode()), ("wled/atomium/c", colour.encode())]


def _tasmota_answer(command: Incoming, wrong: str | None) -> Reply:
    text = command.payload.decode()
    if command.topic.endswith("/Power"):
        return [("stat/fountain1/RESULT", json.dumps({"POWER": text}).encode())]
    hsb = text.split(";")[0].removeprefix("HSBColor ").strip()
    h, s, b = (int(x) for x in hsb.split(","))
    if wrong is not None:
        h = (h + 120) % 360
    result = {"POWER": "ON", "Dimmer": b, "HSBColor": f"{h},{s},{b}"}
    return [("stat/fountain1/RESULT", json.dumps(result).encode())]


VENDORS = {
    "wled": Vendor(
        "wled",
        {"topic": "wled/atomium"},
        "wled/atomium/status",
        b"online",
        b"offline",
        _wled_answer,
    ),
    "tasmota": Vendor(
        "tasmota",
        {"topic": "fountain1"},
        "tele/fountain1/LWT",
        b"Online",
        b"Offline",
        _tasmota_answer,
    ),
}


class Device:
    """The third-party controller: its own login and will; it answers every command on
    its command topics as its firmware does (a state query is not a light command)."""

    def __init__(self, port: int, vendor: Vendor, mqtt: dict[str, Any], wrong: str | None = None):
        self.vendor = vendor
        self.mqtt = mqtt
        self.wrong = wrong
        self.commands = Sink()
        self.probe = Probe(
            port,
            mqtt["username"],
            mqtt["password"],
            mqtt["client_id"],
            will=(vendor.availability, vendor.offline),
        )
        self.probe.client.on_message = self._on_message

    def _on_message(self, client: Any, _u: Any, message: Any) -> None:
        got = Incoming(message.topic, bytes(message.payload), bool(message.retain))
        if got.topic.endswith("/State"):
            return
        self.commands(got)
        for topic, payload in self.vendor.answer(got, self.wrong):
            client.publish(topic, payload, qos=1)  # paho's thread: never wait here

    def start(self) -> None:
        assert self.probe.connect()
        for topic in self.mqtt["topics"]["commands"]:
            assert self.probe.subscribe(topic), topic
        assert self.probe.publish(self.vendor.availability, self.vendor.online, retain=True)

    def wait_command(self, on: bool) -> Incoming:
        """The first command that turns the light on (or off)."""
        found = self.commands.wait_count(1, lambda m: _turns_on(m) is on, timeout=DEADLINE)
        assert all(m.retain is False for m in self.commands.items)
        return found[0]

    def close(self) -> None:
        self.probe.close()


def _turns_on(command: Incoming) -> bool:
    if command.topic.endswith("/api"):
        return bool(json.loads(command.payload)["on"])
    return command.topic.endswith("/Backlog")


@dataclass
class Running:
    broker: Mosquitto
    controller: Controller
    http: httpx.Client
    token: str

    def register(self, vendor: Vendor) -> dict[str, Any]:
        body = {
            "id": "atomium-ctl",
            "site": "atomium",
            "adapter": vendor.adapter,
            "config": vendor.config,
        }
        answer = self.http.post(
            "/api/v1/devices", json=body, headers={"Authorization": f"Bearer {self.token}"}
        )
        assert answer.status_code == 201, answer.text
        mqtt: dict[str, Any] = answer.json()["mqtt"]
        return mqtt

    def window(self, lead_s: float, length_s: float) -> tuple[Any, Any]:
        start = whole_second(lead_s)
        end = start + timedelta(seconds=length_s)
        self.controller.stores.campaigns.put(window_campaign(start, end), self.controller.clock())
        self.controller.changed()
        return start, end

    def state(self) -> str:
        sites = self.http.get("/api/v1/public/status").json()["sites"]
        # (before the first rendering after a start, the document lists no site yet)
        return str(next((s["state"] for s in sites if s["id"] == "atomium"), ""))

    def wait_state(self, wanted: str) -> None:
        assert wait_until(lambda: self.state() == wanted, DEADLINE), self.state()


@pytest.fixture
def running(tmp_path: Path, dynsec_mosquitto: Mosquitto) -> Iterator[Running]:
    settings = load_settings(
        None,
        data_dir=tmp_path,
        broker={
            "url": dynsec_mosquitto.url,
            "username": CONTROLLER_USER,
            "password": CONTROLLER_PASSWORD,
            "dynsec_admin_username": DYNSEC_ADMIN_USER,
            "dynsec_admin_password": DYNSEC_ADMIN_PASSWORD,
        },
        control={"tick_s": 1.0, "grace_s": 2.0},
        health={"public_hold_s": 0},
    )
    controller = Controller(settings)
    try:
        controller.start()
        assert controller.broker is not None and controller.broker.wait_connected(DEADLINE)
        controller.stores.registry.import_catalog(SITES)
        token = controller.users.add("tom", "technician", ["brussels"], controller.clock())
        with serve(controller.web) as http:
            yield Running(dynsec_mosquitto, controller, http, token)
    finally:
        controller.stop()


@pytest.mark.parametrize("name", sorted(VENDORS))
def test_a_window_lights_the_device_and_its_end_turns_it_off(running: Running, name: str) -> None:
    vendor = VENDORS[name]
    mqtt = running.register(vendor)
    device = Device(running.broker.port, vendor, mqtt)
    try:
        device.start()
        # out of its scope: the native topics, another device's
        assert not device.probe.publish("illuminate/v1/devices/atomium-ctl/state", b"{}")
        assert not device.probe.subscribe("#")
        device.wait_command(on=False)  # off before the window: the desired state now
        running.window(lead_s=2.5, length_s=4)
        on = device.wait_command(on=True)
        if name == "wled":
            body = json.loads(on.payload)
            assert (body["on"], body["bri"], body["seg"]["col"]) == (True, 204, [[0, 158, 219, 0]])
        else:
            assert on.topic == "cmnd/fountain1/Backlog"
            assert on.payload.decode().endswith("; Power ON")
        running.wait_state("lit")
        running.wait_state("off")  # the window's end: the device was sent off, confirmed it
        assert _turns_on(device.commands.items[-1]) is False
    finally:
        device.close()


def test_a_wrong_colour_stays_unconfirmed(running: Running) -> None:
    vendor = VENDORS["wled"]
    device = Device(running.broker.port, vendor, running.register(vendor), wrong="#DB0000")
    try:
        device.start()
        running.window(lead_s=2, length_s=30)
        device.wait_command(on=True)
        running.wait_state("unconfirmed")
        assert running.state() == "unconfirmed"
    finally:
        device.close()


def test_a_device_offline_at_the_start_gets_the_command_when_it_comes_online(
    running: Running,
) -> None:
    vendor = VENDORS["wled"]
    mqtt = running.register(vendor)
    running.window(lead_s=1, length_s=30)
    running.wait_state("offline")  # never seen: the window is open without it
    outbox = running.controller.stores.outbox

    def sent_while_away() -> bool:
        latest = outbox.latest(["atomium-ctl"]).get("atomium-ctl")
        return (
            latest is not None
            and latest.plan.steps[0].state.on
            and latest.state in (CommandState.PUBLISHED, CommandState.UNCONFIRMED)
        )

    assert wait_until(sent_while_away, DEADLINE)  # the broker took it; nobody got it
    device = Device(running.broker.port, vendor, mqtt)
    try:
        device.start()
        device.wait_command(on=True)
        running.wait_state("lit")
    finally:
        device.close()
