"""What each emulator does as its vendor documents, beyond the shared contract."""

from __future__ import annotations

import json

import pytest

from devices.adapters import Availability, Strength, adapter_for
from devices.protocol import LightState
from tests.emulators import (
    EMULATOR_ACCOUNTS,
    EmulatorError,
    HaJsonEmulator,
    ShellyGen1Emulator,
    ShellyGen2Emulator,
    TasmotaEmulator,
    WledEmulator,
    Zigbee2MqttEmulator,
)
from tests.emulators.driver import AdapterDriver
from tests.support.mosquitto import Mosquitto

BLUE_80 = LightState(on=True, color="#0000FF", level=80)
HOST = "127.0.0.1"


def test_wled_throttles_its_reports_and_coalesces_changes(broker: Mosquitto) -> None:
    config = {"topic": "wled/throttle"}
    adapter = adapter_for("wled", config)
    with (
        AdapterDriver(adapter, HOST, broker.port) as driver,
        WledEmulator(HOST, broker.port, config=config, cooldown_s=0.5) as dev,
    ):
        mark, updates = dev.mark(), len(dev.updates)
        driver.send(BLUE_80)
        driver.send(LightState(on=True, color="#FF0000", level=50))
        driver.send(LightState(on=True, color="#00FF00", level=40))
        dev.wait_applied(lambda light: light.colour == (0, 255, 0), after=mark)
        dev.wait_idle()
        g = [e for e in dev.events("published", after=mark) if e.topic == "wled/throttle/g"]
        assert [e.payload for e in g] == [b"204", b"102"]  # the first at once, then one
        # the cooldown counts between the updates' own starts (the events are stamped
        # after each publish, which a loaded machine may delay)
        began = dev.updates[updates:]
        assert len(began) == 2 and began[1] - began[0] >= 0.5
        driver.sync(dev, after=mark)
        assert adapter.confirms(LightState(on=True, color="#00FF00", level=40), driver.reported)


def test_wled_reads_its_plain_topics_and_the_http_api(broker: Mosquitto) -> None:
    with WledEmulator(HOST, broker.port, config={"topic": "wled/plain"}, cooldown_s=0) as dev:
        mark = dev.mark()
        dev.publish_raw("wled/plain/col", b"#0000FF")
        dev.wait_applied(lambda light: light.colour == (0, 0, 255), after=mark)
        dev.publish_raw("wled/plain", b"OFF")  # not ON: strtoul reads 0, off
        dev.wait_applied(lambda light: not light.on, after=mark)
        dev.publish_raw("wled/plain", b"ON")
        light = dev.wait_applied(lambda light: light.on, after=mark)
        assert light.bri == 128  # the brightness it had before
        dev.publish_raw("wled/plain/api", b"A=51&R=255&G=0&B=0")
        light = dev.wait_applied(lambda light: light.bri == 51, after=mark)
        assert light.colour == (255, 0, 0)


def test_tasmota_answers_each_backlog_command_on_result(broker: Mosquitto) -> None:
    config = {"topic": "fountain-backlog"}
    with TasmotaEmulator(HOST, broker.port, config=config) as dev:
        mark = dev.mark()
        dev.publish_raw("cmnd/fountain-backlog/Backlog", b"Power ON; Dimmer 50; Color 00FF00")
        dev.wait_applied(lambda light: light.hue == 120, after=mark)
        dev.wait_idle()
        results = [json.loads(p) for t, p in dev.published(after=mark) if t.endswith("/RESULT")]
        assert results[0] == {"POWER": "ON"}
        assert results[1]["Dimmer"] == 50 and results[1]["Color"] == "808080"
        # Color sets the channels: the dimmer follows the brightest one
        assert results[2]["Dimmer"] == 100 and results[2]["HSBColor"] == "120,100,100"
        assert len(results) == 3


def test_tasmota_honours_its_full_topic(broker: Mosquitto) -> None:
    config = {"topic": "fountain-ft", "full_topic": "tasmota/%topic%/%prefix%/"}
    adapter = adapter_for("tasmota", config)
    with (
        AdapterDriver(adapter, HOST, broker.port) as driver,
        TasmotaEmulator(HOST, broker.port, config=config, setoption17=True) as dev,
    ):
        driver.wait(lambda: driver.availability is Availability.ONLINE)
        mark = dev.mark()
        driver.send(BLUE_80)
        dev.wait_applied(after=mark)
        driver.sync(dev, after=mark)
        assert ("tasmota/fountain-ft/stat/RESULT", b'{"POWER":"ON"}') in dev.published()
        assert adapter.confirms(BLUE_80, driver.reported)


def test_an_emulator_the_acl_refuses_says_so(broker: Mosquitto) -> None:
    dev = WledEmulator(HOST, broker.port, "emulator-tasmota", config={"topic": "wled/x"})
    with pytest.raises(EmulatorError, match="ACL refuses"):
        dev.start(timeout=1)  # the Tasmota account may not use WLED's topics
    assert not dev.running


def test_an_offline_emulator_never_connects(broker: Mosquitto) -> None:
    with WledEmulator(HOST, broker.port, config={"topic": "wled/never"}, offline=True) as dev:
        assert not dev.running and dev.events() == []
        with pytest.raises(EmulatorError, match="not connected"):
            dev.publish_malformed()


def test_wled_publishes_nothing_for_a_command_that_changes_nothing(broker: Mosquitto) -> None:
    config = {"topic": "wled/same"}
    adapter = adapter_for("wled", config)
    with (
        AdapterDriver(adapter, HOST, broker.port) as driver,
        WledEmulator(HOST, broker.port, config=config, cooldown_s=0) as dev,
    ):
        mark = dev.mark()
        driver.send(BLUE_80)
        dev.wait_published("wled/same/g", after=mark)
        dev.wait_idle()
        mark = dev.mark()
        driver.send(BLUE_80)  # the same again: WLED's state did not change
        dev.wait_applied(after=mark)
        dev.wait_idle()
        assert dev.published(after=mark) == []


def test_zigbee2mqtt_echoes_what_it_assumes_and_reads_back_what_the_light_shows(
    broker: Mosquitto,
) -> None:
    config = {"friendly_name": "belfry/echo"}
    adapter = adapter_for("zigbee2mqtt", config)
    with (
        AdapterDriver(adapter, HOST, broker.port) as driver,
        Zigbee2MqttEmulator(HOST, broker.port, config=config, wrong_colour=True) as dev,
    ):
        mark = dev.mark()
        driver.send(BLUE_80)
        dev.wait_applied(after=mark)
        driver.sync(dev, after=mark)
        assert adapter.confirms(BLUE_80, driver.reported)  # the optimistic echo
        assert adapter.strength is Strength.ECHO

        mark = dev.mark()
        request = adapter.state_request()
        assert request is not None and request.strength is Strength.READBACK
        driver.publish(request.commands)
        dev.wait_received("zigbee2mqtt/belfry/echo/get", after=mark)
        driver.sync(dev, after=mark)
        assert not adapter.confirms(BLUE_80, driver.reported)


def test_zigbee2mqtt_reads_back_blue_clipped_to_the_gamut_and_it_still_confirms(
    broker: Mosquitto,
) -> None:
    config = {"friendly_name": "belfry/gamut"}
    adapter = adapter_for("zigbee2mqtt", config)
    with (
        AdapterDriver(adapter, HOST, broker.port) as driver,
        Zigbee2MqttEmulator(HOST, broker.port, config=config) as dev,
    ):
        mark = dev.mark()
        driver.send(BLUE_80)
        driver.request_state()
        dev.wait_received("zigbee2mqtt/belfry/gamut/get", after=mark)
        driver.sync(dev, after=mark)
        x, y = driver.reported.colour  # type: ignore[misc]
        assert (x, y) != (0.15, 0.06) and abs(x - 0.1535) < 0.001  # gamut C's blue edge
        assert adapter.confirms(BLUE_80, driver.reported)


def test_zigbee2mqtt_a_light_gone_from_the_mesh_reads_as_offline(broker: Mosquitto) -> None:
    config = {"friendly_name": "belfry/mesh"}
    adapter = adapter_for("zigbee2mqtt", config)
    with (
        AdapterDriver(adapter, HOST, broker.port) as driver,
        Zigbee2MqttEmulator(HOST, broker.port, config=config, legacy_availability=True) as dev,
    ):
        driver.wait(lambda: driver.availability is Availability.ONLINE)
        dev.set_available(False)
        driver.wait(lambda: driver.availability is Availability.OFFLINE)
        mark = dev.mark()
        driver.send(BLUE_80)
        dev.wait_received(after=mark)
        assert dev.events("applied", after=mark) == []


def test_zigbee2mqtt_a_dead_bridge_reads_as_offline_to_a_new_subscriber(
    broker: Mosquitto,
) -> None:
    config = {"friendly_name": "belfry/dead-bridge"}
    adapter = adapter_for("zigbee2mqtt", config)
    with Zigbee2MqttEmulator(HOST, broker.port, config=config) as dev:
        dev.drop()
    with AdapterDriver(adapter, HOST, broker.port) as driver:
        driver.wait(lambda: len(driver.messages) >= 2)  # both retained availabilities
        assert driver.availability is Availability.OFFLINE


def test_ha_json_with_its_own_payloads_and_scale(broker: Mosquitto) -> None:
    config = {
        "command_topic": "homeassistant/porch/set",
        "state_topic": "homeassistant/porch/state",
        "availability_topic": "homeassistant/porch/available",
        "payload_available": "up",
        "payload_not_available": "down",
        "brightness_scale": 100,
    }
    adapter = adapter_for("ha-json", config)
    with (
        AdapterDriver(adapter, HOST, broker.port) as driver,
        HaJsonEmulator(HOST, broker.port, config=config) as dev,
    ):
        driver.wait(lambda: driver.availability is Availability.ONLINE)
        assert dev.published()[0] == ("homeassistant/porch/available", b"up")
        mark = dev.mark()
        driver.send(LightState(on=True, color="#000066", level=50))  # a dark blue
        light = dev.wait_applied(after=mark)
        assert light.colour == (0, 0, 255) and light.brightness == 20  # ESPHome's chroma
        driver.sync(dev, after=mark)
        assert adapter.confirms(LightState(on=True, color="#000066", level=50), driver.reported)
        dev.drop()
        driver.wait(lambda: driver.availability is Availability.OFFLINE)


def test_shelly_gen2_replies_say_a_command_arrived_not_that_the_light_changed(
    broker: Mosquitto,
) -> None:
    config = {"prefix": "shellyplusrgbwpm-replies"}
    adapter = adapter_for("shelly-gen2", config)
    with (
        AdapterDriver(adapter, HOST, broker.port) as driver,
        ShellyGen2Emulator(HOST, broker.port, config=config, silent=True) as dev,
    ):
        mark = dev.mark()
        driver.send(BLUE_80, ref=7)
        dev.wait_applied(after=mark)
        driver.wait(lambda: [(r.ref, r.accepted) for r in driver.replies] == [(7, True)])
        assert dev.shown.matches(BLUE_80)
        assert not adapter.confirms(BLUE_80, driver.reported)

        src = "shellyplusrgbwpm-replies-illuminate"  # where the adapter reads replies
        body = {"id": 8, "src": src, "method": "Switch.Set", "params": {"id": 0}}
        dev.publish_raw("shellyplusrgbwpm-replies/rpc", json.dumps(body).encode())
        driver.wait(lambda: len(driver.replies) == 2)
        assert driver.replies[1].accepted is False
        assert driver.replies[1].reason == "404: No handler for Switch.Set"


def test_shelly_gen2_notifies_only_what_changed(broker: Mosquitto) -> None:
    config = {"prefix": "shellyplusrgbwpm-changes"}
    adapter = adapter_for("shelly-gen2", config)
    with (
        AdapterDriver(adapter, HOST, broker.port) as driver,
        ShellyGen2Emulator(HOST, broker.port, config=config) as dev,
    ):
        mark = dev.mark()
        driver.send(BLUE_80)
        driver.send(LightState(on=True, color="#0000FF", level=40))
        dev.wait_applied(lambda light: light.brightness == 40, after=mark)
        dev.wait_idle()
        notes = [json.loads(p) for t, p in dev.published(after=mark) if t.endswith("/events/rpc")]
        changed = [sorted(n["params"]["rgbw:0"]) for n in notes]
        assert changed == [
            ["brightness", "id", "output", "rgb", "source"],
            ["brightness", "id", "source"],
        ]
        driver.sync(dev, after=mark)  # folded with `merged`, the pieces make the whole
        assert adapter.confirms(LightState(on=True, color="#0000FF", level=40), driver.reported)


def test_shelly_gen1_reports_again_on_update(broker: Mosquitto) -> None:
    config = {"id": "shellyrgbw2-update"}
    adapter = adapter_for("shelly-gen1", config)
    with (  # the driver subscribes after the device's first report: it has none yet
        ShellyGen1Emulator(HOST, broker.port, config=config) as dev,
        AdapterDriver(adapter, HOST, broker.port) as driver,
    ):
        assert driver.reported.on is None
        mark = dev.mark()
        driver.request_state()
        dev.wait_received("shellies/shellyrgbw2-update/command", after=mark)
        driver.sync(dev, after=mark)
        assert driver.reported.on is False and driver.reported.brightness == 100


def test_an_emulator_reconnects_after_the_broker_restarts(mosquitto: Mosquitto) -> None:
    mosquitto.add_users(EMULATOR_ACCOUNTS)
    config = {"topic": "fountain-restart"}
    with TasmotaEmulator(HOST, mosquitto.port, config=config) as dev:
        mark = dev.mark()
        mosquitto.restart()
        dev.wait_for("connected", after=mark, timeout=15)
        adapter = adapter_for("tasmota", config)
        with AdapterDriver(adapter, HOST, mosquitto.port) as driver:
            driver.wait(lambda: driver.availability is Availability.ONLINE)
            mark = dev.mark()
            driver.send(BLUE_80)
            dev.wait_applied(after=mark)
            driver.sync(dev, after=mark)
            assert adapter.confirms(BLUE_80, driver.reported)


def test_shelly_gen2_a_white_dimmer_confirms_by_level_alone(broker: Mosquitto) -> None:
    config = {"prefix": "shellypluswdimmer-white", "profile": "light"}
    adapter = adapter_for("shelly-gen2", config)
    with (
        AdapterDriver(adapter, HOST, broker.port) as driver,
        ShellyGen2Emulator(HOST, broker.port, config=config) as dev,
    ):
        mark = dev.mark()
        driver.send(LightState(on=True, color="#FFFFFF", level=60))
        dev.wait_applied(after=mark)
        driver.sync(dev, after=mark)
        assert dev.events("received")[-1].payload.count(b"Light.Set") == 1
        assert adapter.confirms(LightState(on=True, color="#FFFFFF", level=60), driver.reported)
        assert not adapter.confirms(LightState(on=True, color="#FFFFFF", level=30), driver.reported)


def test_tasmota_tele_period_and_a_chosen_wrong_colour(broker: Mosquitto) -> None:
    config = {"topic": "fountain-tele"}
    with TasmotaEmulator(
        HOST, broker.port, config=config, tele_period_s=0.1, wrong_colour="#FF0000"
    ) as dev:
        mark = dev.mark()
        dev.publish_raw("cmnd/fountain-tele/HSBColor", b"240,100,80")
        light = dev.wait_applied(after=mark)
        assert (light.hue, light.sat, light.dimmer) == (0, 100, 80)  # red, not blue
        state = dev.wait_published("tele/fountain-tele/STATE", after=dev.mark())
        assert json.loads(state.payload)["HSBColor"] == "0,100,80"
        dev.wait_idle()  # a telemetry period does not keep it busy
