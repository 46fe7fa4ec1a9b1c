"""Each adapter's command, applied as the vendor documents and echoed back, confirms its
target; the echo of a clearly different colour never does. The echoes follow the same
sources as the recordings (fixtures/README.md)."""

from __future__ import annotations

import json
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.adapters import Adapter, Report, Reported
from devices.colour import HSV, hex_to_rgb, hsv_to_rgb, rgb_to_hex, rgb_to_hsv
from devices.protocol import LightState
from tests.devices.adapters.recorded import device

Echo = Callable[[Adapter, LightState], list[tuple[str, bytes]]]


def _wled(adapter: Adapter, target: LightState) -> list[tuple[str, bytes]]:
    (command,) = adapter.command(target)
    body = json.loads(command.payload)
    if not body["on"]:
        return [("wled/abc123/g", b"0")]
    r, g, b, w = body["seg"]["col"][0]
    colour = (w << 24) | (r << 16) | (g << 8) | b
    return [
        ("wled/abc123/g", str(body["bri"]).encode()),
        ("wled/abc123/c", f"#{colour:06X}".encode()),
    ]


def _tasmota(adapter: Adapter, target: LightState) -> list[tuple[str, bytes]]:
    (command,) = adapter.command(target)
    if command.payload == b"OFF":
        return [("stat/fountain1/RESULT", b'{"POWER":"OFF"}')]
    hsb = command.payload.decode().split(";")[0].removeprefix("HSBColor ")
    h, s, b = (int(part) for part in hsb.split(","))
    colour = rgb_to_hex(hsv_to_rgb(HSV(h, s, b)))[1:]
    result = {"POWER": "ON", "Dimmer": b, "Color": colour, "HSBColor": hsb}
    return [("stat/fountain1/RESULT", json.dumps(result).encode())]


def _zigbee2mqtt(adapter: Adapter, target: LightState) -> list[tuple[str, bytes]]:
    (command,) = adapter.command(target)
    body = json.loads(command.payload)
    state = {**body, "color_mode": "xy", "linkquality": 90}
    return [("zigbee2mqtt/belfry/flood1", json.dumps(state).encode())]


def _ha_json(adapter: Adapter, target: LightState) -> list[tuple[str, bytes]]:
    (command,) = adapter.command(target)
    state = {**json.loads(command.payload), "color_mode": "rgb"}
    return [("fountain/light/rgb_light/state", json.dumps(state).encode())]


def _shelly_gen2(adapter: Adapter, target: LightState) -> list[tuple[str, bytes]]:
    (command,) = adapter.command(target, ref=1)
    params = json.loads(command.payload)["params"]
    status = {"id": 0, "output": params["on"], "source": "MQTT"}
    status.update({k: params[k] for k in ("brightness", "rgb", "white") if k in params})
    note = {"method": "NotifyStatus", "params": {"ts": 1.0, "rgbw:0": status}}
    return [("shellyplusrgbwpm-abc/events/rpc", json.dumps(note).encode())]


def _shelly_gen1(adapter: Adapter, target: LightState) -> list[tuple[str, bytes]]:
    (command,) = adapter.command(target)
    body = json.loads(command.payload)
    status = {"ison": body["turn"] == "on", "mode": "color", "effect": 0, "power": 3.1}
    status.update({k: body[k] for k in ("red", "green", "blue", "white", "gain") if k in body})
    return [("shellies/shellyrgbw2-11ABD9/color/0/status", json.dumps(status).encode())]


ECHOES: dict[str, Echo] = {
    "wled": _wled,
    "tasmota": _tasmota,
    "zigbee2mqtt": _zigbee2mqtt,
    "ha-json": _ha_json,
    "shelly-gen2": _shelly_gen2,
    "shelly-gen1": _shelly_gen1,
}


def echoed(kind: str, target: LightState) -> tuple[Adapter, Reported]:
    adapter = device(kind)
    state = Reported()
    for topic, payload in ECHOES[kind](adapter, target):
        parsed = adapter.parse(topic, payload)
        assert isinstance(parsed, Report) and parsed.state is not None, parsed
        state = state.merged(parsed.state)
    return adapter, state


colours = st.tuples(*(st.integers(0, 255) for _ in range(3))).filter(lambda c: max(c) > 0)
levels = st.integers(1, 100)
kinds = st.sampled_from(sorted(ECHOES))


@settings(max_examples=300, deadline=None)
@given(kind=kinds, colour=colours, level=levels)
def test_the_echo_of_a_command_confirms_it(kind: str, colour, level: int) -> None:
    target = LightState(on=True, color=rgb_to_hex(colour), level=level)
    adapter, state = echoed(kind, target)
    assert adapter.confirms(target, state)
    assert not adapter.confirms(LightState(on=False), state)
    if max(colour) >= 51:  # 20 points of level are then at least 4 points of output
        other = level + 20 if level <= 80 else level - 20
        assert not adapter.confirms(target.model_copy(update={"level": other}), state)


@settings(max_examples=300, deadline=None)
@given(kind=kinds, colour=colours, level=levels, shift=st.floats(40, 320))
def test_the_echo_of_another_hue_never_confirms(kind: str, colour, level: int, shift: float):
    hsv = rgb_to_hsv(colour)
    if hsv.s < 40 or hsv.v < 20:
        return  # hue is not what tells such colours apart
    other = rgb_to_hex(hsv_to_rgb(HSV((hsv.h + shift) % 360, hsv.s, hsv.v)))
    target = LightState(on=True, color=rgb_to_hex(colour), level=level)
    adapter, state = echoed(kind, LightState(on=True, color=other, level=level))
    assert not adapter.confirms(target, state)


def test_off_echo_confirms_off() -> None:
    for kind in ECHOES:
        adapter, state = echoed(kind, LightState(on=False))
        assert adapter.confirms(LightState(on=False), state), kind


def test_un_blue_round_trips_everywhere() -> None:
    target = LightState(on=True, color="#009EDB", level=80)
    cyan = LightState(on=True, color="#00FFFF", level=80)
    for kind in ECHOES:
        adapter, state = echoed(kind, target)
        assert adapter.confirms(target, state), kind
        assert not adapter.confirms(cyan, state), kind
    assert hex_to_rgb(target.color) == (0, 158, 219)
