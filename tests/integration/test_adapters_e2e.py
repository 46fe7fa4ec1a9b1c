"""A mixed fleet end to end: a running controller on a real Mosquitto with the
dynamic-security plugin (the controller provisions the accounts), registration over
HTTP, and each third-party device an emulated controller of its vendor
(tests/emulators/) logged in with the credentials it was issued; beside them, native
agents: a plain one, one with a light sensor, and one driving a DMX floodlight over
sACN to a real receiver. Every one of them is lit by the same campaign, and each is
confirmed as strongly as its kind allows.

One run for the module, so the whole set stays cheap: a device of every adapter, each
at a site of its own, plus a WLED that shows the wrong colour and a WLED that is offline
when the window opens. A window opens: each device gets its vendor's command, and its
site turns `lit` in /api/v1/public/status; the window's end (moved close once all are
lit) turns it `off` again. The
wrong colour stays `unconfirmed`; the offline WLED gets the command when it comes
online, and is lit then. The tests below read what the run saw, per adapter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.app import Controller
from controller.lifecycle import CommandState
from controller.settings import load_settings
from devices.agent import Agent
from devices.connection import BrokerAddress
from devices.dmx import Layout, channel_values
from devices.dmx_config import LightOutputSettings
from devices.light_output import open_output
from devices.protocol import LightState
from devices.sensor import SimulatedSensor
from schedules.model import SiteCatalog
from tests.controller.test_staff_api import serve
from tests.devices.dmx_listeners import SacnReceiver
from tests.emulators.base import Emulator
from tests.emulators.ha_json import HaJsonEmulator
from tests.emulators.shelly_gen1 import ShellyGen1Emulator
from tests.emulators.shelly_gen2 import ShellyGen2Emulator
from tests.emulators.tasmota import TasmotaEmulator
from tests.emulators.wled import WledEmulator
from tests.emulators.zigbee2mqtt import Zigbee2MqttEmulator
from tests.integration.conftest import DEADLINE, wait_until, whole_second, window_campaign
from tests.support.mosquitto import (
    CONTROLLER_PASSWORD,
    CONTROLLER_USER,
    DYNSEC_ADMIN_PASSWORD,
    DYNSEC_ADMIN_USER,
    Mosquitto,
)
from tests.support.mqtt5 import Probe

pytestmark = pytest.mark.broker

TARGET = LightState(on=True, color="#009EDB", level=80)  # window_campaign's light
EMULATORS: dict[str, tuple[type[Emulator[Any]], dict[str, Any]]] = {
    "wled": (WledEmulator, {"topic": "wled/atomium"}),
    "tasmota": (TasmotaEmulator, {"topic": "fountain1"}),
    "zigbee2mqtt": (
        Zigbee2MqttEmulator,
        {"base_topic": "zigbee2mqtt", "friendly_name": "belfry/flood1"},
    ),
    "ha-json": (
        HaJsonEmulator,
        {
            "command_topic": "fountain/light/rgb_light/command",
            "state_topic": "fountain/light/rgb_light/state",
            "availability_topic": "fountain/status",
        },
    ),
    "shelly-gen2": (ShellyGen2Emulator, {"prefix": "shellyplusrgbwpm-abc", "profile": "rgbw"}),
    "shelly-gen1": (ShellyGen1Emulator, {"id": "shellyrgbw2-11ABD9"}),
}
WRONG = "wrong-colour"
LATE = "late-online"
NATIVE = "native-agent"
SENSOR = "native-sensor"
DMX = "dmx-floodlight"
AGENTS = (NATIVE, SENSOR, DMX)
DMX_UNIVERSE = 7
SITES = [*EMULATORS, WRONG, LATE, *AGENTS]


def _catalog() -> SiteCatalog:
    return SiteCatalog.model_validate(
        {
            "cities": [
                {"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"}
            ],
            "sites": [
                {"id": name, "city": "brussels", "name": {"en": name}, "lat": 50.8, "lon": 4.3}
                for name in SITES
            ],
        }
    )


@dataclass
class Run:
    """What the run saw."""

    registered: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Site -> the registration's answer."""
    states: dict[str, list[str]] = field(default_factory=dict)
    """Site -> the public states it went through, in order."""
    shown_lit: dict[str, bool] = field(default_factory=dict)
    """Site -> whether its light showed the target while the site was `lit`."""
    shown_off: dict[str, bool] = field(default_factory=dict)
    scope_refused: bool = False
    late_sent_away: bool = False
    confirmed_by: dict[str, str] = field(default_factory=dict)
    lit_by: dict[str, str] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    malformed_counted: bool = False
    flash: dict[str, Any] = field(default_factory=dict)
    """The answer to a test flash of the Tasmota."""
    dmx_frame: bytes | None = None
    """What the floodlight's universe carried while the site was lit."""
    """The WLED's device health while lit."""
    """Site -> the public `confirmed_by` of the lit site, at the end of the window."""


def _register(http: httpx.Client, token: str, site: str, adapter: str, config: Any) -> Any:
    body = {"id": f"{site}-ctl", "site": site, "adapter": adapter, "config": config}
    answer = http.post("/api/v1/devices", json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 201, answer.text
    return answer.json()


def _public(http: httpx.Client) -> list[dict[str, Any]]:
    sites: list[dict[str, Any]] = http.get("/api/v1/public/status").json()["sites"]
    return sites


def _states(http: httpx.Client) -> dict[str, str]:
    return {s["id"]: s["state"] for s in _public(http)}


def _watch(http: httpx.Client, run: Run, until: Any, timeout: float = DEADLINE) -> bool:
    """Poll the public status, noting each site's changes, until `until(states)`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _states(http)
        for site, state in now.items():
            seen = run.states.setdefault(site, [])
            if not seen or seen[-1] != state:
                seen.append(state)
        if until(now):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto-dynsec"), dynsec=True).start()
    data: Path = tmp_path_factory.mktemp("controller")
    settings = load_settings(
        None,
        data_dir=data,
        broker={
            "url": broker.url,
            "username": CONTROLLER_USER,
            "password": CONTROLLER_PASSWORD,
            "dynsec_admin_username": DYNSEC_ADMIN_USER,
            "dynsec_admin_password": DYNSEC_ADMIN_PASSWORD,
        },
        control={"tick_s": 1.0, "grace_s": 2.0},
    )
    controller = Controller(settings)
    devices: dict[str, Emulator[Any]] = {}
    agents: dict[str, Agent] = {}
    receiver = SacnReceiver([DMX_UNIVERSE])
    floodlight = open_output(
        LightOutputSettings.model_validate(
            {
                "output": "sacn",
                "target": "127.0.0.1",
                "port": receiver.port,
                "fixtures": [{"universe": DMX_UNIVERSE, "address": 1, "layout": "rgb"}],
            }
        ),
        f"{DMX}-ctl",
    )
    result = Run()
    try:
        controller.start()
        assert controller.broker is not None and controller.broker.wait_connected(DEADLINE)
        controller.stores.registry.import_catalog(_catalog())
        token = controller.users.add("tom", "technician", ["brussels"], controller.clock())
        with serve(controller.web) as http:
            plan: dict[str, tuple[str, type[Emulator[Any]], dict[str, Any], dict[str, Any]]] = {
                name: (name, cls, config, {}) for name, (cls, config) in EMULATORS.items()
            }
            plan[WRONG] = ("wled", WledEmulator, {"topic": "wled/wrong"}, {"wrong_colour": True})
            plan[LATE] = ("wled", WledEmulator, {"topic": "wled/late"}, {"offline": True})
            for site, (adapter, cls, config, knobs) in plan.items():
                answer = _register(http, token, site, adapter, config)
                result.registered[site] = answer
                mqtt = answer["mqtt"]
                devices[site] = cls(
                    "127.0.0.1",
                    broker.port,
                    mqtt["username"],
                    mqtt["password"],
                    config=config,
                    client_id=mqtt["client_id"],
                    **knobs,
                )
            # out of its scope (MQTT 5 says so): the native topics, its own commands
            tasmota = result.registered["tasmota"]["mqtt"]
            with Probe(broker.port, tasmota["username"], tasmota["password"], "tasmota-ctl") as p:
                assert p.connect()
                result.scope_refused = not p.publish(
                    "illuminate/v1/devices/tasmota-ctl/state", b"{}"
                ) and not p.publish(tasmota["topics"]["commands"][0], b"OFF")
            for site in AGENTS:
                mqtt = _register(http, token, site, "native", {})["mqtt"]
                result.registered[site] = {"mqtt": mqtt}
                agents[site] = Agent(
                    mqtt["username"],
                    BrokerAddress("127.0.0.1", broker.port, False),
                    password=mqtt["password"],
                    topics=settings.topics,
                    fixture=floodlight.fixture if site == DMX else None,
                    sensor=SimulatedSensor() if site == SENSOR else None,
                )
            for device in devices.values():
                device.start()
            for agent in agents.values():
                agent.start()
            # every vendor's broken messages first: counted, skipped, nothing stops.
            # (once the controller hears each device: it subscribed to their topics)
            reports = controller.stores.reports
            assert wait_until(
                lambda: all(
                    v.online is True
                    for v in reports.views([f"{site}-ctl" for site in EMULATORS]).values()
                ),
                DEADLINE,
            )
            for site in EMULATORS:
                for i in range(len(devices[site].malformed_messages())):
                    devices[site].publish_malformed(i)
            metric = controller.metrics.adapter_malformed
            result.malformed_counted = wait_until(
                lambda: all(metric.labels(adapter=site)._value.get() > 0 for site in EMULATORS),
                DEADLINE,
            )
            # a long window, so every device has all the time it needs to light up;
            # once all are lit, its end is moved close (a coordinator's edit)
            start = whole_second(3)
            end = start + timedelta(minutes=10)
            controller.stores.campaigns.put(window_campaign(start, end), controller.clock())
            controller.changed()

            def lit(states: dict[str, str]) -> bool:
                for site in EMULATORS:
                    if states.get(site) == "lit" and site not in result.shown_lit:
                        result.shown_lit[site] = devices[site].shown.matches(TARGET)
                if states.get(DMX) == "lit" and result.dmx_frame is None:
                    result.dmx_frame = receiver.wait_frame(
                        DMX_UNIVERSE, lambda f: f[:3] == _dmx_lit(), timeout=10
                    )
                return all(states.get(s) == "lit" for s in (*EMULATORS, *AGENTS)) and (
                    states.get(WRONG) == "unconfirmed"
                )

            # the WLED that was away at the window's start: its command went to the broker,
            # and no one got it; then it comes online
            outbox = controller.stores.outbox

            def sent_away() -> bool:
                latest = outbox.latest([f"{LATE}-ctl"]).get(f"{LATE}-ctl")
                return (
                    latest is not None
                    and latest.plan.steps[0].state.on
                    and latest.state in (CommandState.PUBLISHED, CommandState.UNCONFIRMED)
                )

            result.late_sent_away = _watch(
                http, result, lambda s: s.get(LATE) == "offline" and sent_away()
            )
            late = devices[LATE]
            late.offline = False
            late.start()
            _watch(http, result, lambda s: lit(s) and s.get(LATE) == "lit")
            # the readback a state request brings comes a moment after the echo
            wait_until(
                lambda: all(
                    s.get("confirmed_by") == "readback"
                    for s in _public(http)
                    if s["id"] in ("zigbee2mqtt", "shelly-gen2")
                ),
                5,
            )
            # a technician's test flash of a third-party light: its command goes out
            # live, and the light's own report answers it
            flash = http.post(
                "/api/v1/devices/tasmota-ctl/test",
                json={"seconds": 8.0},
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            result.flash = flash.json() if flash.status_code == 200 else {"error": flash.text}
            health = http.get(
                "/api/v1/devices/wled-ctl/health", headers={"Authorization": f"Bearer {token}"}
            )
            result.health = health.json() if health.status_code == 200 else {}
            result.lit_by = {
                s["id"]: s.get("confirmed_by", "") for s in _public(http) if s["state"] == "lit"
            }
            for event in outbox.events():
                if event.to_state is CommandState.APPLIED and event.detail:
                    result.confirmed_by[event.device_id.removesuffix("-ctl")] = event.detail

            def off(states: dict[str, str]) -> bool:
                if datetime.now(UTC) < end:
                    return False
                for site in EMULATORS:
                    if states.get(site) == "off" and site not in result.shown_off:
                        result.shown_off[site] = not devices[site].shown.on
                return all(states.get(s) == "off" for s in SITES) and all(
                    site in result.shown_off for site in EMULATORS
                )

            end = whole_second(2)
            controller.stores.campaigns.put(window_campaign(start, end), controller.clock())
            controller.changed()
            _watch(http, result, off)
            for site in EMULATORS:  # the light itself went dark (its report may lag)
                if not result.shown_off.get(site):
                    result.shown_off[site] = wait_until(lambda d=devices[site]: not d.shown.on, 10)
        yield result
    finally:
        for device in devices.values():
            device.stop()
        for agent in agents.values():
            agent.stop()
        floodlight.close()
        receiver.close()
        controller.stop()
        broker.stop()


def _dmx_lit() -> bytes:
    """The floodlight's three channels for the window's light (devices/dmx.py)."""
    return bytes(channel_values(TARGET, Layout.RGB))


@pytest.mark.parametrize("site", sorted(EMULATORS))
def test_each_adapter_registers_with_its_vendor_topics(run: Run, site: str) -> None:
    topics = run.registered[site]["mqtt"]["topics"]
    assert set(topics) == {"reports", "commands"}
    assert topics["reports"] and topics["commands"]
    assert not any(t.startswith("illuminate/") for t in topics["reports"] + topics["commands"])


@pytest.mark.parametrize("site", sorted(EMULATORS))
def test_a_window_lights_the_device_and_its_end_turns_it_off(run: Run, site: str) -> None:
    states = run.states.get(site, [])
    assert "lit" in states, states
    assert states[-1] == "off", states
    assert states.index("lit") < len(states) - 1
    assert run.shown_lit.get(site) is True, "the site was lit while its light was not"
    assert run.shown_off.get(site) is True, "the light stayed on after the window"


def test_the_strength_of_each_confirmation_is_recorded(run: Run) -> None:
    assert run.confirmed_by["wled"] == "confirmed by echo"
    assert run.confirmed_by["shelly-gen2"] == "confirmed by readback"
    # and shown with the lit site: how it was confirmed
    assert run.lit_by["wled"] == "echo"
    assert run.lit_by["shelly-gen2"] == "readback"
    assert run.lit_by["zigbee2mqtt"] == "readback"  # its /get, asked after the echo


def test_device_health_shows_a_third_party_device(run: Run) -> None:
    assert run.health["online"] is True
    assert run.health["last_seen"] is not None


def test_a_wrong_colour_stays_unconfirmed(run: Run) -> None:
    states = run.states[WRONG]
    assert "unconfirmed" in states and "lit" not in states, states


def test_a_device_offline_at_the_start_gets_the_command_when_it_comes_online(run: Run) -> None:
    assert run.late_sent_away
    states = run.states[LATE]
    assert "offline" in states and "lit" in states, states
    assert states.index("offline") < states.index("lit"), states


def test_malformed_vendor_messages_are_counted_and_the_run_goes_on(run: Run) -> None:
    assert run.malformed_counted  # and every site was lit after them (above)


def test_a_device_account_keeps_to_its_topics(run: Run) -> None:
    assert run.scope_refused


def test_the_embedded_broker_lets_a_wled_and_the_controller_meet(tmp_path: Path) -> None:
    """The same path on the embedded broker, whose gate asks the controller's own
    accounts: the device within its scope, the controller on the device's topics."""
    settings = load_settings(
        None,
        data_dir=tmp_path,
        broker={"embedded_port": 0},
        control={"tick_s": 1.0, "grace_s": 2.0},
    )
    controller = Controller(settings)
    device: Emulator[Any] | None = None
    try:
        controller.start()
        controller.stores.registry.import_catalog(_catalog())
        config = {"topic": "wled/embedded"}
        issued = controller.registrar.register(
            "wled-ctl", "wled", "tom", controller.clock(), adapter="wled", config=config
        )
        controller.changed()
        address = controller.broker_address()
        device = WledEmulator(
            address.host,
            address.port,
            issued.mqtt.username,
            issued.mqtt.password,
            config=config,
            client_id=issued.mqtt.client_id,
        ).start()
        start = whole_second(2)
        window = window_campaign(start, start + timedelta(seconds=30))
        controller.stores.campaigns.put(window, controller.clock())
        controller.changed()

        def lit() -> bool:
            rendering = controller.public.get("en")
            if rendering is None:
                return False
            sites = {s["id"]: s["state"] for s in json.loads(rendering.body)["sites"]}
            return sites.get("wled") == "lit"

        assert wait_until(lit, DEADLINE)
        assert device.shown.matches(TARGET)
    finally:
        if device is not None:
            device.stop()
        controller.stop()


def test_a_mixed_fleet_is_lit_each_as_strongly_as_its_kind_allows(run: Run) -> None:
    """Native agents beside every adapter, in the same campaign: a plain agent's ack
    echoes what its fixture shows, a light sensor measured the colour, the DMX agent
    put the colour on its universe; each was lit and went off at the window's end."""
    for site in AGENTS:
        states = run.states.get(site, [])
        assert "lit" in states and states[-1] == "off", (site, states)
    assert run.lit_by[NATIVE] == "echo"
    assert run.lit_by[SENSOR] == "sensor"
    assert run.lit_by[DMX] == "echo"
    assert run.dmx_frame is not None, "the floodlight's universe never carried the colour"
    assert run.dmx_frame[:3] == _dmx_lit() and _dmx_lit() != bytes(3)
    assert run.dmx_frame[3:] == bytes(len(run.dmx_frame) - 3)


def test_a_third_party_light_answers_a_test_flash(run: Run) -> None:
    assert run.flash.get("result") == "applied", run.flash
    assert run.flash["round_trip_ms"] is not None and run.flash["round_trip_ms"] >= 0
