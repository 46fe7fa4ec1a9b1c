"""An emulated light speaking Home Assistant's MQTT JSON schema, as ESPHome does
(home-assistant.io `source/_integrations/light.mqtt.markdown`; esphome
`light_json_schema.cpp`, `light_color_values.h`; esphome-docs `components/mqtt.rst`).

- Subscribes to `command_topic`. A command is JSON: `state` (`ON`/`OFF`/`TOGGLE`),
  `brightness` (0 to `brightness_scale`; 0 turns off, a brightness alone turns on),
  `color` as `{"r","g","b"}` (also `{"h","s"}` or `{"x","y"}`), `transition` (seconds,
  ignored). What it cannot read is ignored, as ESPHome logs and drops it.
- With `normalise=True` (ESPHome's way, the default) the light keeps the colour as a
  chroma, brightest channel at full, brightness apart: `{"r":0,"g":0,"b":204}` is kept
  as blue, its own value lost.
- After each command it publishes on `state_topic`, retained as ESPHome does
  (`retain_state`): `{"brightness":204,"color":{"r":0,"g":0,"b":255},"color_mode":"rgb",
  "state":"ON"}`.
- Availability (when `availability_topic` is set): `payload_available` retained on
  connect, `payload_not_available` the last will.

`config`: the adapter's (`command_topic`, `state_topic`, `availability_topic`,
`payload_available`, `payload_not_available`, `brightness_scale`). The ESPHome topics
are `<prefix>/light/<object_id>/command`, `.../state` and `<prefix>/status`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

from devices.colour import HSV, RGB, XY, chroma, hsv_to_rgb, xy_to_rgb
from tests.emulators.base import Emulator, Shown

WHITE = RGB(255, 255, 255)


@dataclass(frozen=True)
class HaLight:
    on: bool = False
    brightness: int = 255
    colour: RGB = WHITE


class HaJsonEmulator(Emulator[HaLight]):
    vendor = "ha-json"

    def __init__(
        self, *args: Any, normalise: bool = True, retain_state: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.command_topic = str(self.config["command_topic"])
        self.state_topic = str(self.config["state_topic"])
        availability = self.config.get("availability_topic")
        self.availability_topic = None if availability is None else str(availability)
        self.payload_available = str(self.config.get("payload_available", "online"))
        self.payload_not_available = str(self.config.get("payload_not_available", "offline"))
        self.scale = int(self.config.get("brightness_scale", 255))
        self.normalise = normalise
        self.retain_state = retain_state
        self._light = replace(self._light, brightness=self.scale)

    def initial_light(self) -> HaLight:
        return HaLight()

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self.command_topic, 0)]

    def will(self) -> tuple[str, bytes]:
        # without an availability topic the light has no last will of its own; one on a
        # topic nobody reads keeps the base simple
        topic = self.availability_topic or f"{self.state_topic}/will"
        return topic, self.payload_not_available.encode()

    def online_payload(self) -> bytes:
        return self.payload_available.encode()

    def on_connected(self) -> None:
        self._publish_state()

    @property
    def shown(self) -> Shown:
        light = self.light
        return Shown.of(light.on, light.colour, light.brightness / self.scale * 100)

    def malformed_messages(self) -> list[tuple[str, bytes]]:
        s = self.state_topic
        messages = [
            (s, b'{"state":"ON","color_mode":"rgb","brigh'),
            (s, b'{"state":"MAYBE"}'),
            (s, json.dumps({"state": "ON", "brightness": self.scale + 1}).encode()),
            (s, b'{"state":"ON","color":"blue"}'),
            (s, b'{"state":"ON","color":{"r":0,"g":0,"b":256}}'),
            (s, b"[1,2,3]"),
        ]
        if self.availability_topic is not None:
            messages.append((self.availability_topic, b"unplugged"))
        return messages

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        light = self.light
        state = body.get("state")
        if isinstance(state, str) and state.upper() in ("ON", "OFF", "TOGGLE"):
            on = not light.on if state.upper() == "TOGGLE" else state.upper() == "ON"
            light = replace(light, on=on)
        level: Any = body.get("brightness")
        if _is_number(level) and 0 <= level <= self.scale:
            if round(level) == 0:
                light = replace(light, on=False)
            else:
                light = replace(light, brightness=round(level), on=light.on or state is None)
        asked = _colour(body.get("color"))
        if asked is not None:
            colour = self.wrong(asked)
            light = replace(light, colour=chroma(colour) if self.normalise else colour)
        self.apply(light)
        self._publish_state()

    def _publish_state(self) -> None:
        light = self.light
        r, g, b = light.colour
        state = {
            "brightness": light.brightness,
            "color": {"r": r, "g": g, "b": b},
            "color_mode": "rgb",
            "state": "ON" if light.on else "OFF",
        }
        body = json.dumps(state, separators=(",", ":")).encode()
        self.report(self.state_topic, body, retain=self.retain_state)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _colour(value: Any) -> RGB | None:
    if not isinstance(value, dict):
        return None
    if all(_is_number(value.get(k)) and 0 <= value[k] <= 255 for k in ("r", "g", "b")):
        rgb = RGB(*(round(value[k]) for k in ("r", "g", "b")))
        return rgb if max(rgb) else None
    if all(_is_number(value.get(k)) for k in ("h", "s")) and 0 <= value["s"] <= 100:
        return hsv_to_rgb(HSV(value["h"] % 360, value["s"], 100.0))
    if all(_is_number(value.get(k)) for k in ("x", "y")):
        try:
            return xy_to_rgb(XY(value["x"], value["y"]))
        except ValueError:
            return None
    return None
