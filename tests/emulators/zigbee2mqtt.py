"""An emulated Zigbee2MQTT bridge with one colour light behind it (Koenkk/zigbee2mqtt.io
`docs/guide/usage/mqtt_topics_and_messages.md`, `docs/guide/configuration/
device-availability.md`; zigbee2mqtt PR #24200 for the v2 JSON availability).

- Subscribes to `<base>/<friendly_name>/set` and `.../get`.
- `/set` takes `state` (`ON`/`OFF`/`TOGGLE`), `brightness` 0-254 (0 turns off; a
  brightness turns a light on), `color` as `{"x","y"}`, `{"hex"}`, `{"r","g","b"}`,
  `{"rgb":"r,g,b"}` or `{"hue","saturation"}`/`{"h","s"}`, and `transition` (ignored);
  a plain `ON`/`OFF`/`TOGGLE` payload is a state. The light stores the colour as a
  Zigbee light does: CIE xy in 1/65535 steps, clipped to its gamut (Philips gamut C by
  default; `gamut=None` for none), with brightness apart.
- After a `/set` the bridge publishes `<base>/<friendly_name>` with what it *assumes*
  (optimistic: the command's values over its cached state), e.g. `{"brightness":203,
  "color":{"x":0.1355,"y":0.0399},"color_mode":"xy","linkquality":..,"state":"ON"}`. So a
  `wrong_colour` light is echoed as right; only a `/get` (which reads the light's
  attributes over Zigbee) reports what it really shows, xy to 4 digits.
- Availability: `<base>/<friendly_name>/availability` `{"state":"online"}` retained
  (`legacy_availability=True`: plain `online`); the bridge's `<base>/bridge/state`
  `{"state":"online"}` retained, `{"state":"offline"}` its last will. `set_available(False)`
  makes the light alone unreachable (it then ignores commands).
- On connect the bridge publishes the cached state (cache_state_send_on_startup).

`config`: `{"base_topic": "zigbee2mqtt", "friendly_name": ...}` as the adapter's.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from devices.colour import HSV, RGB, XY, ZIGBEE, hex_to_rgb, hsv_to_rgb, rgb_to_xy, xy_to_rgb
from tests.emulators.base import Emulator, Shown

GAMUT_C = (XY(0.6915, 0.3083), XY(0.17, 0.7), XY(0.1532, 0.0475))
"""Philips Hue gamut C: red, green and blue corners (Hue developer docs, "Color gamut")."""


@dataclass(frozen=True)
class ZigbeeLight:
    on: bool = False
    brightness: int = 254
    x: int = 20560  # currentX and currentY, 1/65535 steps: about D65 white
    y: int = 21561

    @property
    def xy(self) -> XY:
        return XY(self.x / 65535, self.y / 65535)


class Zigbee2MqttEmulator(Emulator[ZigbeeLight]):
    vendor = "zigbee2mqtt"

    def __init__(
        self,
        *args: Any,
        gamut: tuple[XY, XY, XY] | None = GAMUT_C,
        legacy_availability: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.base = str(self.config.get("base_topic", "zigbee2mqtt"))
        self.name = str(self.config["friendly_name"])
        self.device = f"{self.base}/{self.name}"
        self.gamut = gamut
        self.legacy_availability = legacy_availability
        self.available = True
        self._assumed: dict[str, Any] = {}

    def initial_light(self) -> ZigbeeLight:
        return ZigbeeLight()

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(f"{self.device}/set", 0), (f"{self.device}/get", 0)]

    def will(self) -> tuple[str, bytes]:
        return f"{self.base}/bridge/state", b'{"state":"offline"}'

    def online_payload(self) -> bytes:
        return b'{"state":"online"}'

    def on_connected(self) -> None:
        self._availability()
        self._assumed = self._readback()
        self._publish_state()

    def set_available(self, available: bool) -> None:
        """The light itself reachable or not (the bridge stays up)."""
        self.available = available
        self.later(0, self._availability)

    def _availability(self) -> None:
        state = "online" if self.available else "offline"
        payload = state.encode() if self.legacy_availability else _json({"state": state})
        self.send(f"{self.device}/availability", payload, retain=True)

    @property
    def shown(self) -> Shown:
        light = self.light
        level = ZIGBEE.to_percent(light.brightness)
        return Shown.of(light.on, xy_to_rgb(light.xy), level, xy=light.xy)

    def malformed_messages(self) -> list[tuple[str, bytes]]:
        d = self.device
        return [
            (d, b'{"state":"ON","brightness":'),
            (d, b'{"state":"ON","brightness":300}'),
            (d, b'{"state":"ON","color":{"x":1.7,"y":0.2}}'),
            (d, b'{"state":"DIM"}'),
            (d, b'"ON"'),
            (f"{d}/availability", b'{"state":"sleeping"}'),
            (f"{self.base}/bridge/state", b"\xc3\x28"),
        ]

    # ---- commands --------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        if not self.available:
            return  # the Zigbee message never reaches the light
        if topic == f"{self.device}/get":
            self._assumed = self._readback()
            self._publish_state()
            return
        body = _body(payload)
        if body is None:
            return
        light, assumed = self.light, dict(self._assumed)
        state = body.get("state")
        if isinstance(state, str) and state.upper() in ("ON", "OFF", "TOGGLE"):
            on = not light.on if state.upper() == "TOGGLE" else state.upper() == "ON"
            light, assumed["state"] = replace(light, on=on), "ON" if on else "OFF"
        level = body.get("brightness")
        if isinstance(level, int | float) and not isinstance(level, bool) and 0 <= level <= 254:
            level = int(level)
            if level == 0:
                light, assumed["state"] = replace(light, on=False), "OFF"
            else:
                light = replace(light, brightness=level, on=True)
                assumed.update(brightness=level, state="ON")
        asked = _colour(body.get("color"))
        if asked is not None:
            x, y = self._store(asked)
            light = replace(light, x=x, y=y)
            assumed.update(color_mode="xy", color={"x": round(asked.x, 4), "y": round(asked.y, 4)})
        self.apply(light)
        self._assumed = assumed
        self._publish_state()

    def _store(self, asked: XY) -> tuple[int, int]:
        """What the light keeps: the wrong colour if so, clipped to its gamut, in steps."""
        if self.wrong_colour:
            asked = rgb_to_xy(self.wrong(xy_to_rgb(asked)))
        if self.gamut is not None:
            asked = _clip(asked, self.gamut)
        return round(asked.x * 65535), round(asked.y * 65535)

    def _readback(self) -> dict[str, Any]:
        light = self.light
        return {
            "state": "ON" if light.on else "OFF",
            "brightness": light.brightness,
            "color_mode": "xy",
            "color": {"x": round(light.xy.x, 4), "y": round(light.xy.y, 4)},
        }

    def _publish_state(self) -> None:
        state = dict(sorted({**self._assumed, "linkquality": 87}.items()))
        self.report(self.device, _json(state))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _body(payload: bytes) -> dict[str, Any] | None:
    text = payload.decode("utf-8", errors="replace").strip()
    if text.upper() in ("ON", "OFF", "TOGGLE"):
        return {"state": text}
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _colour(value: Any) -> XY | None:
    """Any of the colour forms Zigbee2MQTT takes, as xy; None if unreadable."""
    if isinstance(value, str):
        value = {"hex": value}
    if not isinstance(value, dict):
        return None
    x, y = _number(value.get("x")), _number(value.get("y"))
    if x is not None and y is not None:
        return XY(x, y) if 0 <= x <= 1 and 0 < y <= 1 else None
    rgb: RGB | None = None
    if isinstance(value.get("hex"), str):
        try:
            rgb = hex_to_rgb(value["hex"])
        except ValueError:
            return None
    elif isinstance(value.get("rgb"), str) and re.fullmatch(
        r"\d{1,3},\d{1,3},\d{1,3}", value["rgb"]
    ):
        parts = [int(p) for p in value["rgb"].split(",")]
        rgb = RGB(*parts) if max(parts) <= 255 else None
    elif all(_number(value.get(k)) is not None for k in ("r", "g", "b")):
        parts = [int(value[k]) for k in ("r", "g", "b")]
        rgb = RGB(*parts) if min(parts) >= 0 and max(parts) <= 255 else None
    else:
        hue = _number(value.get("hue", value.get("h")))
        sat = _number(value.get("saturation", value.get("s")))
        if hue is not None and sat is not None and 0 <= sat <= 100:
            rgb = hsv_to_rgb(HSV(hue % 360, sat, 100.0))
    return None if rgb is None or max(rgb) == 0 else rgb_to_xy(rgb)


def _clip(point: XY, gamut: tuple[XY, XY, XY]) -> XY:
    """The point, or the nearest point of the gamut triangle when it lies outside."""
    a, b, c = gamut

    def side(p: XY, q: XY, r: XY) -> float:
        return (q.x - p.x) * (r.y - p.y) - (q.y - p.y) * (r.x - p.x)

    signs = [side(a, b, point), side(b, c, point), side(c, a, point)]
    if all(s >= 0 for s in signs) or all(s <= 0 for s in signs):
        return point

    def nearest(p: XY, q: XY) -> XY:
        dx, dy = q.x - p.x, q.y - p.y
        t = ((point.x - p.x) * dx + (point.y - p.y) * dy) / (dx * dx + dy * dy)
        t = min(1.0, max(0.0, t))
        return XY(p.x + t * dx, p.y + t * dy)

    candidates = [nearest(a, b), nearest(b, c), nearest(c, a)]
    return min(candidates, key=lambda q: math.dist(q, point))
