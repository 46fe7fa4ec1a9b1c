from __future__ import annotations

import pytest

from devices.adapters import (
    AdapterConfigError,
    Availability,
    Ignored,
    Malformed,
    Report,
    Strength,
    adapter_for,
)
from devices.colour import HSV, hsv_to_rgb, rgb_to_hex
from devices.protocol import LightState
from tests.devices.adapters.recorded import device, fold, message
from tests.devices.adapters.targets import BLUE_80, BLUE_80_FADE, GREEN_80, OFF, UN_BLUE_80

KIND = "tasmota"


def test_command_on_colour_brightness() -> None:
    (command,) = device(KIND).command(BLUE_80)
    assert (command.topic, command.payload) == (
        "cmnd/fountain1/Backlog",
        b"HSBColor 240,100,80; Power ON",
    )
    assert command.retain is False
    # Tasmota keeps a chroma and a Dimmer: UN blue's own value (86 %) goes into the dimmer.
    (un,) = device(KIND).command(UN_BLUE_80)
    assert un.payload == b"HSBColor 197,100,69; Power ON"
    # Tasmota has no per-command fade: the same command.
    assert device(KIND).command(BLUE_80_FADE) == device(KIND).command(BLUE_80)


def test_command_off() -> None:
    (command,) = device(KIND).command(OFF)
    assert (command.topic, command.payload, command.retain) == (
        "cmnd/fountain1/Power",
        b"OFF",
        False,
    )


def test_backlog_results_confirm() -> None:
    tasmota = device(KIND)
    assert tasmota.confirms(BLUE_80, fold(tasmota, KIND, "result_hsb_blue_80", "result_power_on"))
    assert tasmota.confirms(BLUE_80, fold(tasmota, KIND, "tele_state_blue_80"))
    assert tasmota.confirms(BLUE_80, fold(tasmota, KIND, "result_setoption17_blue_80"))


def test_color_has_the_dimmer_applied() -> None:
    tasmota = device(KIND)
    # Color 0000CC with Dimmer 80 is blue at 80 %, not "0000CC" dimmed again to 64 %.
    reported = fold(tasmota, KIND, "result_color_only_blue_80")
    assert reported.brightness == pytest.approx(80)
    assert tasmota.confirms(BLUE_80, reported)
    assert not tasmota.confirms(LightState(on=True, color="#0000FF", level=64), reported)


def test_un_blue_as_tasmota_reports_it() -> None:
    # What Tasmota answers to "HSBColor 197,100,69": Color with the dimmer applied.
    colour = rgb_to_hex(hsv_to_rgb(HSV(197, 100, 69)))[1:]
    payload = f'{{"POWER":"ON","Dimmer":69,"Color":"{colour}","HSBColor":"197,100,69"}}'
    tasmota = device(KIND)
    parsed = tasmota.parse("stat/fountain1/RESULT", payload.encode())
    assert isinstance(parsed, Report) and parsed.state is not None
    assert tasmota.confirms(UN_BLUE_80, parsed.state)
    assert not tasmota.confirms(BLUE_80, parsed.state)


def test_wrong_colour_never_confirms() -> None:
    tasmota = device(KIND)
    green = fold(tasmota, KIND, "result_green_80")
    assert tasmota.confirms(GREEN_80, green)
    assert not tasmota.confirms(BLUE_80, green)
    # An RGBW light whose white channel is lit is not showing a pure colour.
    assert not tasmota.confirms(BLUE_80, fold(tasmota, KIND, "result_issue_1360"))


def test_off_and_power() -> None:
    tasmota = device(KIND)
    off = fold(tasmota, KIND, "result_hsb_blue_80", "result_power_off")
    assert tasmota.confirms(OFF, off)
    assert not tasmota.confirms(BLUE_80, off)
    parsed = tasmota.parse(*message(KIND, "stat_power_on"))
    assert isinstance(parsed, Report) and parsed.state is not None and parsed.state.on is True


def test_other_results_are_ignored() -> None:
    tasmota = device(KIND)
    assert isinstance(tasmota.parse(*message(KIND, "result_telepriod")), Ignored)
    assert isinstance(tasmota.parse(*message(KIND, "result_unknown")), Ignored)


def test_availability_and_state_request() -> None:
    tasmota = device(KIND)
    assert tasmota.parse(*message(KIND, "lwt_online")) == Report(availability=Availability.ONLINE)
    assert tasmota.parse(*message(KIND, "lwt_offline")) == Report(availability=Availability.OFFLINE)
    request = tasmota.state_request()
    assert request is not None and request.strength is Strength.ECHO
    assert [(c.topic, c.payload) for c in request.commands] == [("cmnd/fountain1/State", b"")]


def test_full_topic_template() -> None:
    tasmota = adapter_for("tasmota", {"topic": "fountain1", "full_topic": "city/%topic%/%prefix%"})
    assert tasmota.topics.reports == (
        "city/fountain1/tele/LWT",
        "city/fountain1/stat/RESULT",
        "city/fountain1/stat/POWER",
        "city/fountain1/tele/STATE",
    )
    assert tasmota.command(OFF)[0].topic == "city/fountain1/cmnd/Power"
    default = device(KIND)
    assert default.topics.commands[0] == "cmnd/fountain1/Backlog"


@pytest.mark.parametrize(
    ("config", "fault"),
    [
        ({"topic": "fountain1", "full_topic": "%prefix%/x/"}, "must contain %prefix% and %topic%"),
        ({"topic": "fountain1", "full_topic": "%prefix%/%hostname%/%topic%/"}, "%hostname%"),
        ({"topic": "fountain+"}, "must not contain"),
        ({"topic": ""}, "must not be empty"),
        ({}, "topic: required"),
        ({"topic": "f", "retain": True}, "retain: unknown key"),
    ],
)
def test_config_errors(config: dict, fault: str) -> None:
    with pytest.raises(AdapterConfigError, match=fault):
        adapter_for("tasmota", config)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"POWER":"ON","HSBColor":"240,100"}',
        b'{"POWER":"ON","HSBColor":"999,100,80"}',
        b'{"POWER":"ON","Dimmer":"80"}',
        b'{"POWER":"ON","Dimmer":1e400}',
        b'{"POWER":"ON","Dimmer":123456789012345678901234567890}',
        b'{"POWER":"MAYBE"}',
        b'{"POWER":"ON","Color":"blue"}',
        b'{"POWER":"ON","Color":"0,0,999"}',
        b'["POWER","ON"]',
    ],
)
def test_malformed(payload: bytes) -> None:
    assert isinstance(device(KIND).parse("stat/fountain1/RESULT", payload), Malformed)
