from __future__ import annotations

import json

import pytest

from devices.adapters import Availability, Malformed, Report, Reported, Strength
from devices.colour import RGB
from devices.protocol import LightState
from tests.devices.adapters.recorded import device, fold, message
from tests.devices.adapters.targets import BLUE_80, BLUE_80_FADE, GREEN_80, OFF, UN_BLUE_80

KIND = "wled"


def body(target: LightState) -> dict:
    (command,) = device(KIND).command(target)
    assert command.topic == "wled/abc123/api"
    assert command.retain is False
    return json.loads(command.payload)


def test_command_on_colour_brightness() -> None:
    assert body(BLUE_80) == {
        "on": True,
        "bri": 204,
        "seg": {"col": [[0, 0, 255, 0]], "fx": 0},
        "tt": 0,
    }
    assert body(UN_BLUE_80)["seg"]["col"] == [[0, 158, 219, 0]]
    assert body(UN_BLUE_80)["bri"] == 204  # WLED multiplies the colour by bri itself


def test_command_fade_and_off() -> None:
    assert body(BLUE_80_FADE)["tt"] == 20  # 100 ms units
    assert body(OFF) == {"on": False, "tt": 0}
    assert body(LightState(on=True, color="#0000FF", level=0)) == {"on": False, "tt": 0}


@pytest.mark.parametrize(("level", "bri"), [(100, 255), (1, 3), (50, 128), (79, 201)])
def test_brightness_edges(level: int, bri: int) -> None:
    assert body(LightState(on=True, color="#0000FF", level=level))["bri"] == bri


def test_g_and_c_confirm_together() -> None:
    wled = device(KIND)
    assert wled.confirms(BLUE_80, fold(wled, KIND, "g_80", "c_blue"))
    assert wled.confirms(UN_BLUE_80, fold(wled, KIND, "g_80", "c_un_blue"))
    # Brightness alone is not enough, nor colour alone.
    assert not wled.confirms(BLUE_80, fold(wled, KIND, "g_80"))
    assert not wled.confirms(BLUE_80, fold(wled, KIND, "c_blue"))


def test_xml_state_confirms_alone() -> None:
    wled = device(KIND)
    assert wled.confirms(BLUE_80, fold(wled, KIND, "v_blue"))


def test_wrong_colour_never_confirms() -> None:
    wled = device(KIND)
    assert not wled.confirms(BLUE_80, fold(wled, KIND, "g_80", "c_green"))
    assert not wled.confirms(GREEN_80, fold(wled, KIND, "g_80", "c_blue"))
    assert not wled.confirms(BLUE_80, fold(wled, KIND, "g_80", "c_blue_with_white"))
    # UN blue at full colour value is a different (brighter) output than asked.
    assert not wled.confirms(UN_BLUE_80, fold(wled, KIND, "g_80", "c_blue"))


def test_latest_colour_wins() -> None:
    wled = device(KIND)
    assert wled.confirms(BLUE_80, fold(wled, KIND, "g_80", "c_green", "c_blue"))
    assert not wled.confirms(BLUE_80, fold(wled, KIND, "g_80", "c_blue", "c_green"))


def test_off() -> None:
    wled = device(KIND)
    off = fold(wled, KIND, "c_blue", "g_off")
    assert off.on is False
    assert wled.confirms(OFF, off)
    assert not wled.confirms(BLUE_80, off)
    assert not wled.confirms(OFF, fold(wled, KIND, "g_80", "c_blue"))


def test_c_with_white_reads_the_white_channel() -> None:
    parsed = device(KIND).parse(*message(KIND, "c_blue_with_white"))
    assert isinstance(parsed, Report)
    assert parsed.state == Reported(colour=RGB(0, 0, 255), white=255, raw=parsed.state.raw)


def test_availability() -> None:
    wled = device(KIND)
    assert wled.parse(*message(KIND, "status_online")) == Report(availability=Availability.ONLINE)
    assert wled.parse(*message(KIND, "status_offline")) == Report(availability=Availability.OFFLINE)
    assert wled.strength is Strength.ECHO
    assert wled.state_request() is None


@pytest.mark.parametrize(
    ("suffix", "payload"),
    [
        ("g", b"256"),
        ("g", b"-1"),
        ("g", b"bright"),
        ("g", "\uff12\uff10\uff14".encode()),  # full-width digits 204
        ("g", b"99999999999999999999999"),
        ("c", b"#GGGGGG"),
        ("c", b"blue"),
        ("c", b"#123456789"),
        ("v", b"<html>"),
        ("status", b"maybe"),
    ],
)
def test_malformed(suffix: str, payload: bytes) -> None:
    assert isinstance(device(KIND).parse(f"wled/abc123/{suffix}", payload), Malformed)


def test_topic_length_limit() -> None:
    from devices.adapters import AdapterConfigError, adapter_for

    with pytest.raises(AdapterConfigError, match="at most 32"):
        adapter_for("wled", {"topic": "wled/" + "a" * 40})
