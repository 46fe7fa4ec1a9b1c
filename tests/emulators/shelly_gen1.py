"""An emulated Shelly RGBW2 in colour mode (the Shelly Gen1 API docs, "MQTT" section of
Shelly RGBW2 and Shelly Bulb).

- Subscribes to `shellies/<id>/color/0/set` (JSON: `turn` `on`/`off`/`toggle`, `red`,
  `green`, `blue`, `white` 0-255, `gain` 0-100, `effect`, `transition` 0-5000 ms; the
  keys given change, the rest stay), `shellies/<id>/color/0/command` (`on`, `off`,
  `toggle`) and `shellies/<id>/command` (`update`: publish the state now).
- After each command it publishes `shellies/<id>/color/0/status`, the whole state as
  JSON (`ison`, `source`, `mode`, `red`, `green`, `blue`, `white`, `gain`, `effect`,
  `transition`, `power`, ...), and `shellies/<id>/color/0` `on`/`off`.
- `shellies/<id>/online` `true` retained on connect; `false` the last will.

`config`: `{"id": ...}` as the adapter's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

from devices.colour import PERCENT, RGB
from tests.emulators.base import Emulator, Shown


@dataclass(frozen=True)
class ShellyGen1Light:
    ison: bool = False
    red: int = 255
    green: int = 255
    blue: int = 255
    white: int = 0
    gain: int = 100
    effect: int = 0
    transition: int = 0


class ShellyGen1Emulator(Emulator[ShellyGen1Light]):
    vendor = "shelly-gen1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.id = str(self.config["id"])
        self.base = f"shellies/{self.id}"

    def initial_light(self) -> ShellyGen1Light:
        return ShellyGen1Light()

    def subscriptions(self) -> list[tuple[str, int]]:
        b = self.base
        return [(f"{b}/color/0/set", 0), (f"{b}/color/0/command", 0), (f"{b}/command", 0)]

    def will(self) -> tuple[str, bytes]:
        return f"{self.base}/online", b"false"

    def online_payload(self) -> bytes:
        return b"true"

    def on_connected(self) -> None:
        self._publish_state()

    @property
    def shown(self) -> Shown:
        light = self.light
        colour = RGB(light.red, light.green, light.blue)
        return Shown.of(light.ison, colour, PERCENT.to_percent(light.gain), light.white)

    def malformed_messages(self) -> list[tuple[str, bytes]]:
        status = f"{self.base}/color/0/status"
        return [
            (status, b'{"ison":true,"mode":"color","red":0,'),
            (status, b'{"ison":"true","mode":"color"}'),
            (status, b'{"ison":true,"mode":"color","red":0,"green":0,"blue":300,"gain":80}'),
            (status, b'{"ison":true,"gain":180}'),
            (f"{self.base}/color/0", b"dim"),
            (f"{self.base}/online", b"1"),
        ]

    def handle(self, topic: str, payload: bytes) -> None:
        text = payload.decode("utf-8", errors="replace").strip()
        light = self.light
        if topic == f"{self.base}/command":
            if text == "update":
                self._publish_state()
            return
        if topic == f"{self.base}/color/0/command":
            light = _turn(light, text)
        else:
            try:
                body = json.loads(text)
            except ValueError:
                return
            if not isinstance(body, dict):
                return
            light = self._set(light, body)
        self.apply(light)
        self._publish_state()

    def _set(self, light: ShellyGen1Light, body: dict[str, Any]) -> ShellyGen1Light:
        if isinstance(body.get("turn"), str):
            light = _turn(light, body["turn"])
        channels = {k: int(body[k]) for k in ("red", "green", "blue") if _int(body.get(k), 255)}
        if channels:
            asked = RGB(
                channels.get("red", light.red),
                channels.get("green", light.green),
                channels.get("blue", light.blue),
            )
            r, g, b = self.wrong(asked)
            light = replace(light, red=r, green=g, blue=b)
        for key, high in (("white", 255), ("gain", 100), ("effect", 6), ("transition", 5000)):
            if _int(body.get(key), high):
                light = replace(light, **{key: int(body[key])})  # type: ignore[arg-type]
        return light

    def _publish_state(self) -> None:
        light = self.light
        status = {
            "ison": light.ison,
            "source": "mqtt",
            "has_timer": False,
            "timer_started": 0,
            "timer_duration": 0,
            "timer_remaining": 0,
            "mode": "color",
            "red": light.red,
            "green": light.green,
            "blue": light.blue,
            "white": light.white,
            "gain": light.gain,
            "effect": light.effect,
            "transition": light.transition,
            "power": 4.2 if light.ison else 0.0,
            "overpower": False,
        }
        body = json.dumps(status, separators=(",", ":")).encode()
        self.report(f"{self.base}/color/0/status", body)
        self.report(f"{self.base}/color/0", b"on" if light.ison else b"off")


def _turn(light: ShellyGen1Light, turn: str) -> ShellyGen1Light:
    if turn == "toggle":
        return replace(light, ison=not light.ison)
    if turn in ("on", "off"):
        return replace(light, ison=turn == "on")
    return light


def _int(value: Any, high: int) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value == int(value)
        and 0 <= value <= high
    )
