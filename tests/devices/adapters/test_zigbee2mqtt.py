from __future__ import annotations

import hashlib
import json

import pytest

from devices.adapters import (
    AdapterConfigError,
    Availability,
    Bridge,
    Malformed,
    OtherColour,
    Report,
    Strength,
    adapter_for,
)
from devices.adapters.zigbee2mqtt import bridge_account
from devices.colour import XY
from devices.protocol import is_device_id
from tests.devices.adapters.recorded import device, fold, message
from tests.devices.adapters.targets import (
    BLUE_80,
    BLUE_80_FADE,
    BLUE_100,
    GREEN_80,
    OFF,
    UN_BLUE_80,
)

KIND = "zigbee2mqtt"


def body(target) -> dict:
    (command,) = device(KIND).command(target)
    assert command.topic == "zigbee2mqtt/belfry/flood1/set"
    assert command.retain is False
    return json.loads(command.payload)


def test_command_on_colour_brightness() -> None:
    assert body(BLUE_80) == {"state": "ON", "brightness": 203, "color": {"x": 0.15, "y": 0.06}}
    assert body(BLUE_100)["brightness"] == 254
    # xy carries no brightness: UN blue's own value (86 %) goes into brightness.
    un = body(UN_BLUE_80)
    assert un["brightness"] == 175
    assert un["color"] == {"x": 0.1985, "y": 0.2347}


def test_command_fade_and_off() -> None:
    assert body(BLUE_80_FADE)["transition"] == 2
    assert body(OFF) == {"state": "OFF"}


def test_echo_confirms_and_readback_request() -> None:
    z2m = device(KIND)
    assert z2m.strength is Strength.ECHO
    assert z2m.confirms(BLUE_80, fold(z2m, KIND, "state_blue_80"))
    request = z2m.state_request()
    assert request is not None and request.strength is Strength.READBACK
    (get,) = request.commands
    assert get.topic == "zigbee2mqtt/belfry/flood1/get" and get.retain is False
    assert json.loads(get.payload) == {"state": "", "brightness": "", "color": {"x": "", "y": ""}}


def test_xy_within_tolerance() -> None:
    z2m = device(KIND)
    # A gamut C light clips sRGB blue to its own corner, 0.013 away: still blue.
    clipped = fold(z2m, KIND, "state_blue_gamut_clipped")
    assert clipped.colour == XY(0.1532, 0.0475)
    assert z2m.confirms(BLUE_80, clipped)


def test_wrong_colour_never_confirms() -> None:
    z2m = device(KIND)
    assert not z2m.confirms(BLUE_80, fold(z2m, KIND, "state_green"))
    assert not z2m.confirms(GREEN_80, fold(z2m, KIND, "state_blue_80"))
    assert not z2m.confirms(UN_BLUE_80, fold(z2m, KIND, "state_blue_80"))
    # White in colour-temperature mode is no colour, even over an earlier blue report.
    white = fold(z2m, KIND, "state_blue_80", "state_color_temp")
    assert isinstance(white.colour, OtherColour)
    assert not z2m.confirms(BLUE_80, white)


def test_wrong_brightness_never_confirms() -> None:
    z2m = device(KIND)
    assert not z2m.confirms(BLUE_100, fold(z2m, KIND, "state_blue_80"))


def test_off() -> None:
    z2m = device(KIND)
    assert z2m.confirms(OFF, fold(z2m, KIND, "state_off"))
    assert not z2m.confirms(BLUE_80, fold(z2m, KIND, "state_off"))
    assert not z2m.confirms(OFF, fold(z2m, KIND, "state_blue_80"))


def test_state_without_colour_does_not_confirm_a_colour() -> None:
    z2m = device(KIND)
    assert not z2m.confirms(BLUE_80, fold(z2m, KIND, "state_ikea_docs"))


@pytest.mark.parametrize(
    ("name", "availability"),
    [
        ("availability_online", Availability.ONLINE),
        ("availability_offline", Availability.OFFLINE),
        ("availability_legacy_offline", Availability.OFFLINE),
        ("bridge_online", Availability.ONLINE),
        ("bridge_legacy_offline", Availability.OFFLINE),
    ],
)
def test_availability(name: str, availability: Availability) -> None:
    assert device(KIND).parse(*message(KIND, name)) == Report(availability=availability)


def test_bridge_state_is_subscribed_before_the_light() -> None:
    reports = device(KIND).topics.reports
    assert reports[0] == "zigbee2mqtt/bridge/state"
    assert reports.index("zigbee2mqtt/belfry/flood1/availability") > 0


@pytest.mark.parametrize(
    ("config", "fault"),
    [
        ({"friendly_name": "lamp/set"}, "must not end in /set"),
        ({"friendly_name": "lamp/2"}, "/<number>"),
        ({"friendly_name": "bridge"}, "bridge"),
        ({"friendly_name": "lamp#1"}, "must not contain"),
        ({"base_topic": "zigbee2mqtt"}, "friendly_name: required"),
        ({"friendly_name": "lamp", "base_topic": "/z2m"}, "empty topic level"),
    ],
)
def test_config_errors(config: dict, fault: str) -> None:
    with pytest.raises(AdapterConfigError, match=fault):
        adapter_for("zigbee2mqtt", config)


@pytest.mark.parametrize(
    ("suffix", "payload"),
    [
        ("", b'{"state":"ON","brightness":"203"}'),
        ("", b'{"state":"ON","brightness":300}'),
        ("", b'{"state":"ON","brightness":true}'),
        ("", b'{"state":"ON","brightness":1e308}'),
        ("", b'{"state":"on"}'),
        ("", b'{"state":"ON","color":{"x":2,"y":0.3}}'),
        ("", b'{"state":"ON","color":"blue"}'),
        ("", b'{"state":"ON","color":{}}'),
        ("", b'"ON"'),
        ("/availability", b'{"state":"maybe"}'),
        ("/availability", b"{"),
    ],
)
def test_malformed(suffix: str, payload: bytes) -> None:
    topic = "zigbee2mqtt/belfry/flood1" + suffix
    assert isinstance(device(KIND).parse(topic, payload), Malformed)


@pytest.mark.parametrize(
    ("base", "account"),
    [
        ("zigbee2mqtt", "z2m-zigbee2mqtt"),
        ("z2m-attic", "z2m-z2m-attic"),
        ("Z2M/Home", "z2m-z2m-home-" + hashlib.sha256(b"Z2M/Home").hexdigest()[:8]),
        ("z2m/home", "z2m-z2m-home-" + hashlib.sha256(b"z2m/home").hexdigest()[:8]),
        ("_", "z2m-" + hashlib.sha256(b"_").hexdigest()[:8]),
        ("x" * 60, "z2m-" + "x" * 30 + "-" + hashlib.sha256(b"x" * 60).hexdigest()[:8]),
    ],
)
def test_the_bridge_account_is_a_device_id_named_for_its_base_topic(base: str, account: str):
    assert bridge_account(base) == account
    assert is_device_id(account)


def test_every_light_behind_a_base_topic_speaks_through_the_same_bridge() -> None:
    one = adapter_for(KIND, {"base_topic": "zigbee2mqtt", "friendly_name": "belfry/flood1"})
    two = adapter_for(KIND, {"base_topic": "zigbee2mqtt", "friendly_name": "belfry/flood2"})
    other = adapter_for(KIND, {"base_topic": "attic", "friendly_name": "belfry/flood1"})
    assert one.bridge == two.bridge == Bridge("z2m-zigbee2mqtt", "zigbee2mqtt")
    assert one.bridge is not None and one.bridge.scope_filter == "zigbee2mqtt/#"
    assert other.bridge == Bridge("z2m-attic", "attic")
    assert adapter_for("wled", {"topic": "wled/a"}).bridge is None
