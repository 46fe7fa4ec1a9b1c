from __future__ import annotations

import json

import pytest

from devices.adapters import (
    AdapterConfigError,
    Availability,
    Malformed,
    OtherColour,
    Report,
    Strength,
    adapter_for,
)
from devices.protocol import LightState
from tests.devices.adapters.recorded import device, fold, message
from tests.devices.adapters.targets import BLUE_80, GREEN_80, OFF, UN_BLUE_80

KIND = "shelly-gen1"


def body(target) -> dict:
    (command,) = device(KIND).command(target)
    assert command.topic == "shellies/shellyrgbw2-11ABD9/color/0/set"
    assert command.retain is False
    return json.loads(command.payload)


def test_command_on_colour_brightness() -> None:
    assert body(BLUE_80) == {
        "turn": "on",
        "red": 0,
        "green": 0,
        "blue": 255,
        "white": 0,
        "gain": 80,
    }
    assert body(UN_BLUE_80)["blue"] == 219 and body(UN_BLUE_80)["gain"] == 80


def test_command_fade_and_off() -> None:
    assert (
        body(LightState(on=True, color="#0000FF", level=80, transition_s=2))["transition"] == 2000
    )
    assert (
        body(LightState(on=True, color="#0000FF", level=80, transition_s=60))["transition"] == 5000
    )
    assert body(OFF) == {"turn": "off"}


def test_matching_report_confirms_and_wrong_colour_never_does() -> None:
    shelly = device(KIND)
    assert shelly.confirms(BLUE_80, fold(shelly, KIND, "status_blue_80"))
    assert not shelly.confirms(BLUE_80, fold(shelly, KIND, "status_red_80"))
    assert not shelly.confirms(GREEN_80, fold(shelly, KIND, "status_blue_80"))
    # The recorded grey-white at gain 5 is nobody's blue.
    assert not shelly.confirms(BLUE_80, fold(shelly, KIND, "status_loxberry"))


def test_off() -> None:
    shelly = device(KIND)
    off = fold(shelly, KIND, "status_blue_80", "power_off")
    assert shelly.confirms(OFF, off)
    assert not shelly.confirms(BLUE_80, off)
    assert shelly.confirms(BLUE_80, fold(shelly, KIND, "status_blue_80", "power_off", "power_on"))


def test_white_mode_is_no_colour() -> None:
    parsed = device(KIND).parse(
        "shellies/shellyrgbw2-11ABD9/color/0/status", b'{"ison":true,"mode":"white","gain":80}'
    )
    assert isinstance(parsed, Report) and isinstance(parsed.state.colour, OtherColour)


def test_availability_and_state_request() -> None:
    shelly = device(KIND)
    assert shelly.parse(*message(KIND, "online_true")) == Report(availability=Availability.ONLINE)
    assert shelly.parse(*message(KIND, "online_false")) == Report(availability=Availability.OFFLINE)
    request = shelly.state_request()
    assert request is not None and request.strength is Strength.ECHO
    assert [(c.topic, c.payload) for c in request.commands] == [
        ("shellies/shellyrgbw2-11ABD9/command", b"update")
    ]


@pytest.mark.parametrize(
    ("config", "fault"),
    [
        ({"id": "shellies/x"}, "one topic level"),
        ({}, "id: required"),
        ({"id": "x", "ip": "1"}, "ip"),
    ],
)
def test_config_errors(config: dict, fault: str) -> None:
    with pytest.raises(AdapterConfigError, match=fault):
        adapter_for(KIND, config)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"ison":"true","red":0,"green":0,"blue":255}',
        b'{"ison":true,"red":0,"green":0,"blue":256}',
        b'{"ison":true,"gain":101}',
        b'{"ison":true,"gain":80.5}',
        b"[]",
    ],
)
def test_malformed(payload: bytes) -> None:
    assert isinstance(
        device(KIND).parse("shellies/shellyrgbw2-11ABD9/color/0/status", payload), Malformed
    )
