from __future__ import annotations

import json

import pytest

from devices.adapters import AdapterConfigError, Availability, Malformed, Report, adapter_for
from tests.devices.adapters.recorded import device, fold, message
from tests.devices.adapters.targets import BLUE_80, BLUE_80_FADE, GREEN_80, OFF, UN_BLUE_80

KIND = "ha-json"
ESPHOME = {
    "command_topic": "fountain/light/rgb_light/command",
    "state_topic": "fountain/light/rgb_light/state",
    "availability_topic": "fountain/status",
}


def body(target, adapter=None) -> dict:
    (command,) = (adapter or device(KIND)).command(target)
    assert command.topic == "fountain/light/rgb_light/command"
    assert command.retain is False
    return json.loads(command.payload)


def test_command_on_colour_brightness() -> None:
    assert body(BLUE_80) == {"state": "ON", "brightness": 204, "color": {"r": 0, "g": 0, "b": 255}}
    # Sent as ESPHome keeps it: the chroma, with the colour's own value in brightness.
    assert body(UN_BLUE_80) == {
        "state": "ON",
        "brightness": 175,
        "color": {"r": 0, "g": 184, "b": 255},
    }
    assert "color_mode" not in body(BLUE_80)


def test_command_fade_off_and_brightness_scale() -> None:
    assert body(BLUE_80_FADE)["transition"] == 2
    assert body(OFF) == {"state": "OFF"}
    scaled = adapter_for(KIND, {**ESPHOME, "brightness_scale": 100})
    assert body(BLUE_80, scaled)["brightness"] == 80


def test_matching_report_confirms() -> None:
    ha = device(KIND)
    assert ha.confirms(BLUE_80, fold(ha, KIND, "state_blue_80"))
    assert ha.confirms(UN_BLUE_80, fold(ha, KIND, "state_esphome_un_blue_80"))


def test_wrong_colour_never_confirms() -> None:
    ha = device(KIND)
    assert not ha.confirms(BLUE_80, fold(ha, KIND, "state_green"))
    assert not ha.confirms(GREEN_80, fold(ha, KIND, "state_blue_80"))
    assert not ha.confirms(BLUE_80, fold(ha, KIND, "state_blue_80", "state_color_temp"))


def test_off_and_unknown() -> None:
    ha = device(KIND)
    assert ha.confirms(OFF, fold(ha, KIND, "state_off"))
    unknown = fold(ha, KIND, "state_off", "state_unknown")
    assert unknown.on is None and unknown.colour is None
    assert not ha.confirms(OFF, unknown)
    assert not ha.confirms(BLUE_80, unknown)


def test_availability_default_and_custom_payloads() -> None:
    ha = device(KIND)
    assert ha.parse(*message(KIND, "status_online")) == Report(availability=Availability.ONLINE)
    assert ha.parse(*message(KIND, "status_offline")) == Report(availability=Availability.OFFLINE)
    custom = adapter_for(
        KIND, {**ESPHOME, "payload_available": "up", "payload_not_available": "down"}
    )
    assert custom.parse("fountain/status", b"down") == Report(availability=Availability.OFFLINE)
    assert isinstance(custom.parse("fountain/status", b"online"), Malformed)
    bare = adapter_for(KIND, {k: ESPHOME[k] for k in ("command_topic", "state_topic")})
    assert bare.topics.reports == ("fountain/light/rgb_light/state",)


@pytest.mark.parametrize(
    ("config", "fault"),
    [
        ({"command_topic": "a/b"}, "state_topic: required"),
        ({"command_topic": "a/b", "state_topic": "a/b"}, "must differ"),
        ({"command_topic": "a/+", "state_topic": "a/b"}, "must not contain"),
        ({"command_topic": "a", "state_topic": "b", "availability_topic": "$SYS/x"}, "\\$"),
        ({"command_topic": "a", "state_topic": "b", "brightness_scale": 0}, "brightness_scale"),
        ({"command_topic": "a", "state_topic": "b", "schema": "json"}, "schema: unknown key"),
    ],
)
def test_config_errors(config: dict, fault: str) -> None:
    with pytest.raises(AdapterConfigError, match=fault):
        adapter_for(KIND, config)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"state":"ON","brightness":256}',
        b'{"state":"ON","brightness":"full"}',
        b'{"state":"ON","color":{"r":0,"g":0,"b":256}}',
        b'{"state":"ON","color":{"r":0,"g":0,"b":2.5}}',
        b'{"state":"ON","color":{"r":0,"g":0}}',
        b'{"state":"yes"}',
        b'{"state":"ON","brightness":-1}',
    ],
)
def test_malformed(payload: bytes) -> None:
    assert isinstance(device(KIND).parse("fountain/light/rgb_light/state", payload), Malformed)
