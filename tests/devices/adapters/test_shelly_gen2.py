from __future__ import annotations

import json

import pytest

from devices.adapters import (
    AdapterConfigError,
    Availability,
    Ignored,
    Malformed,
    Reply,
    Report,
    Strength,
    adapter_for,
)
from devices.protocol import LightState
from tests.devices.adapters.recorded import device, fold, message
from tests.devices.adapters.targets import BLUE_80, BLUE_80_FADE, GREEN_80, OFF, UN_BLUE_80

KIND = "shelly-gen2"
SRC = "shellyplusrgbwpm-abc-illuminate"


def request(target, adapter=None, ref: int = 7) -> dict:
    (command,) = (adapter or device(KIND)).command(target, ref=ref)
    assert command.topic == "shellyplusrgbwpm-abc/rpc"
    assert command.retain is False
    return json.loads(command.payload)


def test_command_on_colour_brightness() -> None:
    assert request(BLUE_80) == {
        "id": 7,
        "src": SRC,
        "method": "RGBW.Set",
        "params": {"id": 0, "on": True, "brightness": 80, "rgb": [0, 0, 255], "white": 0},
    }
    # Shelly multiplies rgb by brightness: the colour goes as it is.
    assert request(UN_BLUE_80)["params"]["rgb"] == [0, 158, 219]


def test_command_per_profile() -> None:
    rgb = adapter_for(KIND, {"prefix": "shellyplusrgbwpm-abc", "profile": "rgb"})
    assert request(BLUE_80, rgb)["method"] == "RGB.Set"
    assert "white" not in request(BLUE_80, rgb)["params"]
    light = adapter_for(KIND, {"prefix": "shellyplusrgbwpm-abc", "profile": "light"})
    assert request(BLUE_80, light) == {
        "id": 7,
        "src": SRC,
        "method": "Light.Set",
        "params": {"id": 0, "on": True, "brightness": 80},
    }
    assert light.topics.reports[2] == "shellyplusrgbwpm-abc/status/light:0"


def test_command_fade_off_and_brightness_floor() -> None:
    assert request(BLUE_80_FADE)["params"]["transition_duration"] == 2
    assert request(OFF)["params"] == {"id": 0, "on": False}
    assert request(LightState(on=True, color="#0000FF", level=1))["params"]["brightness"] == 1


def test_notify_status_confirms_as_readback() -> None:
    shelly = device(KIND)
    assert shelly.strength is Strength.READBACK
    assert shelly.confirms(BLUE_80, fold(shelly, KIND, "notify_blue_80"))
    assert shelly.confirms(BLUE_80, fold(shelly, KIND, "status_blue_80"))


def test_wrong_colour_never_confirms() -> None:
    shelly = device(KIND)
    assert not shelly.confirms(BLUE_80, fold(shelly, KIND, "notify_green_80"))
    assert not shelly.confirms(GREEN_80, fold(shelly, KIND, "notify_blue_80"))
    assert not shelly.confirms(BLUE_80, fold(shelly, KIND, "notify_blue_80", "notify_green_80"))


def test_off_is_a_partial_notification() -> None:
    shelly = device(KIND)
    off = fold(shelly, KIND, "notify_blue_80", "notify_off")
    assert shelly.confirms(OFF, off)
    assert not shelly.confirms(BLUE_80, off)


def test_other_notifications_are_ignored() -> None:
    shelly = device(KIND)
    assert isinstance(shelly.parse(*message(KIND, "notify_event")), Ignored)
    assert isinstance(shelly.parse(*message(KIND, "notify_power_only")), Ignored)


def test_replies() -> None:
    shelly = device(KIND)
    assert shelly.parse(*message(KIND, "reply_ok")) == Report(reply=Reply(7, True))
    refused = shelly.parse(*message(KIND, "reply_error"))
    assert isinstance(refused, Report) and refused.reply is not None
    assert refused.reply.accepted is False and refused.reply.reason.startswith("-103: Invalid")
    answer = shelly.parse(*message(KIND, "reply_get_status"))
    assert isinstance(answer, Report) and answer.reply == Reply(8, True)
    assert answer.state is not None and shelly.confirms(BLUE_80, answer.state)


def test_state_request_and_availability() -> None:
    shelly = device(KIND)
    state_request = shelly.state_request(ref=8)
    assert state_request is not None and state_request.strength is Strength.READBACK
    (get,) = state_request.commands
    assert json.loads(get.payload) == {
        "id": 8,
        "src": SRC,
        "method": "RGBW.GetStatus",
        "params": {"id": 0},
    }
    assert shelly.parse(*message(KIND, "online_true")) == Report(availability=Availability.ONLINE)
    assert shelly.parse(*message(KIND, "online_false")) == Report(availability=Availability.OFFLINE)
    assert f"{SRC}/rpc" in shelly.topics.reports


def test_light_profile_confirms_brightness_only() -> None:
    light = adapter_for(KIND, {"prefix": "shellyplusrgbwpm-abc", "profile": "light"})
    parsed = light.parse(
        "shellyplusrgbwpm-abc/status/light:0", b'{"id":0,"output":true,"brightness":80}'
    )
    assert isinstance(parsed, Report) and parsed.state is not None
    assert light.confirms(BLUE_80, parsed.state)
    assert not light.confirms(LightState(on=True, color="#0000FF", level=50), parsed.state)


@pytest.mark.parametrize(
    ("config", "fault"),
    [
        ({"prefix": "shellyplusrgbwpm-abc", "profile": "rgbww"}, "profile"),
        ({"profile": "rgbw"}, "prefix: required"),
        ({"prefix": "a/#"}, "must not contain"),
    ],
)
def test_config_errors(config: dict, fault: str) -> None:
    with pytest.raises(AdapterConfigError, match=fault):
        adapter_for(KIND, config)


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("events/rpc", b'{"method":"NotifyStatus","params":{"rgbw:0":{"output":"yes"}}}'),
        ("events/rpc", b'{"method":"NotifyStatus","params":{"rgbw:0":{"rgb":[0,0]}}}'),
        ("events/rpc", b'{"method":"NotifyStatus","params":{"rgbw:0":{"rgb":[0,0,300]}}}'),
        ("events/rpc", b'{"method":"NotifyStatus","params":{"rgbw:0":{"brightness":1e999}}}'),
        ("events/rpc", b'{"method":"NotifyStatus","params":[]}'),
        ("events/rpc", b'{"method":"NotifyStatus","params":{"rgbw:0":7}}'),
        ("status/rgbw:0", b'{"output":true,"white":-1}'),
        ("online", b"yes"),
    ],
)
def test_malformed(topic: str, payload: bytes) -> None:
    assert isinstance(device(KIND).parse(f"shellyplusrgbwpm-abc/{topic}", payload), Malformed)


def test_malformed_reply() -> None:
    shelly = device(KIND)
    for payload in (b'{"id":7}', b'{"id":[1],"result":null}', b'{"id":7,"error":"bad"}'):
        assert isinstance(shelly.parse(f"{SRC}/rpc", payload), Malformed), payload
