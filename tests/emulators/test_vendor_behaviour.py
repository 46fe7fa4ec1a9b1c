"""What each emulator does as its vendor documents, beyond the shared contract."""

from __future__ import annotations

import json

import pytest

from devices.adapters import Availability, adapter_for
from devices.protocol import LightState
from tests.emulators import EmulatorError, TasmotaEmulator, WledEmulator
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
        mark = dev.mark()
        driver.send(BLUE_80)
        driver.send(LightState(on=True, color="#FF0000", level=50))
        driver.send(LightState(on=True, color="#00FF00", level=40))
        dev.wait_applied(lambda light: light.colour == (0, 255, 0), after=mark)
        dev.wait_idle()
        g = [e for e in dev.events("published", after=mark) if e.topic == "wled/throttle/g"]
        assert [e.payload for e in g] == [b"204", b"102"]  # the first at once, then one
        assert g[1].at - g[0].at >= 0.5
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
