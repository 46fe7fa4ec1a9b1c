"""An emulated Tasmota RGB light (tasmota/docs `MQTT.md`, `Commands.md`; the firmware's
`xdrv_04_light.ino` for what a light's RESULT holds).

- Subscribes to `<FullTopic with cmnd>#` (`cmnd/<topic>/#` by default; the `full_topic`
  config is honoured, `%prefix%` and `%topic%` filled in) and to the group topic
  `cmnd/tasmotas/#`'s equivalent. The last topic level is the command, any case.
- Commands: `Power` (`ON`/`OFF`/`TOGGLE`/`1`/`0`/`2`; empty: query), `HSBColor h,s,b`
  (and `HSBColor1`/`2`/`3` for one part), `Color RRGGBB` or `r,g,b`, `Dimmer 0-100`
  (`+`/`-` step 10), `State`, and `Backlog a; b; ...`, whose commands run one by one
  `backlog_delay_s` apart (SetOption34, 200 ms by default; `Backlog0` without delay).
  A colour or dimmer change turns the light on (SetOption20 off); `Dimmer 0` turns it off.
  Anything else answers `{"Command":"Unknown"}`.
- Every command answers on `stat/<topic>/RESULT` (SetOption4 off): a light command with
  `{"POWER":..,"Dimmer":..,"Color":..,"HSBColor":..,"Channel":[..]}`, where Color has the
  dimmer applied (`0000CC` is blue at 80 %; decimals with `setoption17=True`); `Power`
  with `{"POWER":"ON"}` and `stat/<topic>/POWER` `ON`; `State` with the light fields and
  more on RESULT and `tele/<topic>/STATE`. `tele_period_s` publishes `tele/<topic>/STATE`
  periodically (TelePeriod).
- Last will `tele/<topic>/LWT` `Offline`, retained; `Online` on connect.
- The light keeps hue, saturation and the dimmer (HSB), as Tasmota does.

`config`: `{"topic": ..., "full_topic": "%prefix%/%topic%/"}` as the adapter's.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from devices.colour import HSV, RGB, hsv_to_rgb, rgb_to_hsv
from tests.emulators.base import Emulator, Shown

DEFAULT_FULL_TOPIC = "%prefix%/%topic%/"
BACKLOG_DELAY_S = 0.2
GROUP_TOPIC = "tasmotas"
_HSB_RE = re.compile(r"^\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*$")


@dataclass(frozen=True)
class TasmotaLight:
    power: bool = False
    hue: int = 0
    sat: int = 0
    dimmer: int = 100

    @property
    def chroma(self) -> RGB:
        return hsv_to_rgb(HSV(float(self.hue), float(self.sat), 100.0))

    @property
    def colour(self) -> RGB:
        """The channels as Tasmota prints Color: the chroma with the dimmer applied."""
        bri = _round(self.dimmer * 255 / 100)
        return RGB(*(_round(c * bri / 255) for c in self.chroma))


class TasmotaEmulator(Emulator[TasmotaLight]):
    vendor = "tasmota"

    def __init__(
        self,
        *args: Any,
        backlog_delay_s: float = BACKLOG_DELAY_S,
        setoption17: bool = False,
        tele_period_s: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.topic = str(self.config["topic"])
        full = str(self.config.get("full_topic", DEFAULT_FULL_TOPIC))
        self.full_topic = full if full.endswith("/") else full + "/"
        self.backlog_delay_s = backlog_delay_s
        self.setoption17 = setoption17
        self.tele_period_s = tele_period_s

    def path(self, prefix: str, command: str, topic: str | None = None) -> str:
        """A topic from the FullTopic template, e.g. `path("stat", "RESULT")`."""
        full = self.full_topic.replace("%prefix%", prefix)
        return full.replace("%topic%", topic or self.topic) + command

    def initial_light(self) -> TasmotaLight:
        return TasmotaLight()

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self.path("cmnd", "#"), 0), (self.path("cmnd", "#", GROUP_TOPIC), 0)]

    def will(self) -> tuple[str, bytes]:
        return self.path("tele", "LWT"), b"Offline"

    def online_payload(self) -> bytes:
        return b"Online"

    def on_connected(self) -> None:
        if self.tele_period_s:
            self.later(self.tele_period_s, self._tele, periodic=True)

    @property
    def shown(self) -> Shown:
        light = self.light
        return Shown.of(light.power, light.chroma, float(light.dimmer))

    def malformed_messages(self) -> list[tuple[str, bytes]]:
        result = self.path("stat", "RESULT")
        return [
            (result, b'{"POWER":"ON","Dimmer":80,"Col'),
            (result, b'{"POWER":"ON","Dimmer":180,"HSBColor":"240,100,80"}'),
            (result, b'{"POWER":"ON","HSBColor":"blue"}'),
            (self.path("stat", "POWER"), b"MAYBE"),
            (self.path("tele", "LWT"), b"Sleeping"),
            (self.path("tele", "STATE"), b'["POWER","ON"]'),
        ]

    # ---- commands --------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        command = topic.rsplit("/", 1)[-1]
        text = payload.decode("utf-8", errors="replace").strip()
        if command.lower() in ("backlog", "backlog0"):
            delay = 0.0 if command.lower() == "backlog0" else self.backlog_delay_s
            steps = [part.strip() for part in text.split(";") if part.strip()]
            for i, step in enumerate(steps):
                name, _, arg = step.replace("=", " ", 1).partition(" ")
                self.later(i * delay, functools.partial(self._command, name, arg.strip()))
            return
        self._command(command, text)

    def _command(self, name: str, arg: str) -> None:
        key = name.lower()
        light = self.light
        if key in ("power", "power1"):
            self._power(light, arg.upper())
            return
        if key == "state":
            state = self._state_fields()
            self.report(self.path("stat", "RESULT"), _json(state))
            self.report(self.path("tele", "STATE"), _json(state))
            return
        changed = self._light_command(light, key, arg)
        if changed is None:
            self.report(self.path("stat", "RESULT"), _json({"Command": "Unknown"}))
            return
        self.apply(changed)
        self.report(self.path("stat", "RESULT"), _json(self._light_fields()))

    def _power(self, light: TasmotaLight, arg: str) -> None:
        wanted = {"ON": True, "1": True, "OFF": False, "0": False}.get(arg)
        if arg in ("TOGGLE", "2"):
            wanted = not light.power
        if wanted is not None:
            self.apply(replace(light, power=wanted))
        text = "ON" if self.light.power else "OFF"
        self.report(self.path("stat", "RESULT"), _json({"POWER": text}))
        self.report(self.path("stat", "POWER"), text.encode())

    def _light_command(self, light: TasmotaLight, key: str, arg: str) -> TasmotaLight | None:
        if key == "hsbcolor":
            if not arg:
                return light
            match = _HSB_RE.fullmatch(arg)
            if match is None:
                return light  # Tasmota ignores a bad value and prints the state
            h, s, b = (int(part) for part in match.groups())
            if h > 360 or s > 100 or b > 100:
                return light
            return self._set(light, h % 360, s, b)
        if key in ("hsbcolor1", "hsbcolor2", "hsbcolor3"):
            if not arg.isdigit():
                return light
            parts = [light.hue, light.sat, light.dimmer]
            parts[int(key[-1]) - 1] = int(arg)
            h, s, b = parts
            if h > 360 or s > 100 or b > 100:
                return light
            return self._set(light, h % 360, s, b)
        if key in ("color", "color1"):
            rgb = _colour_arg(arg)
            if rgb is None:
                return light
            hsv = rgb_to_hsv(rgb)
            return self._set(light, _round(hsv.h) % 360, _round(hsv.s), _round(hsv.v))
        if key == "dimmer":
            if arg in ("+", "-"):
                value = light.dimmer + (10 if arg == "+" else -10)
            elif arg.isdigit():
                value = int(arg)
            else:
                return light
            return self._set(light, light.hue, light.sat, max(0, min(100, value)), keep=True)
        return None

    def _set(
        self, light: TasmotaLight, h: int, s: int, b: int, *, keep: bool = False
    ) -> TasmotaLight:
        """A new colour and/or dimmer; `wrong_colour` turns the hue here."""
        if not keep:
            wrong = self.wrong(hsv_to_rgb(HSV(float(h), float(s), 100.0)))
            hsv = rgb_to_hsv(wrong)
            h, s = _round(hsv.h) % 360, _round(hsv.s)
        if b == 0:
            return replace(light, hue=h, sat=s, power=False)
        return replace(light, hue=h, sat=s, dimmer=b, power=True)

    # ---- reports ---------------------------------------------------------------------

    def _light_fields(self) -> dict[str, Any]:
        light = self.light
        colour = light.colour
        if self.setoption17:
            printed = ",".join(str(c) for c in colour)
        else:
            printed = "".join(f"{c:02X}" for c in colour)
        return {
            "POWER": "ON" if light.power else "OFF",
            "Dimmer": light.dimmer,
            "Color": printed,
            "HSBColor": f"{light.hue},{light.sat},{light.dimmer}",
            "Channel": [_round(c * 100 / 255) for c in colour],
        }

    def _state_fields(self) -> dict[str, Any]:
        return {
            "Time": "2026-07-30T21:30:00",
            "Uptime": "0T00:10:00",
            "UptimeSec": 600,
            "Heap": 26,
            "SleepMode": "Dynamic",
            "Sleep": 50,
            "LoadAvg": 19,
            "MqttCount": 1,
            **self._light_fields(),
            "Scheme": 0,
            "Fade": "OFF",
            "Speed": 1,
            "LedTable": "ON",
            "Wifi": {"AP": 1, "SSId": "monument", "RSSI": 70, "Signal": -65},
        }

    def _tele(self) -> None:
        self.report(self.path("tele", "STATE"), _json(self._state_fields()))
        if self.tele_period_s and self.running:
            self.later(self.tele_period_s, self._tele, periodic=True)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _round(value: float) -> int:
    return int(value + 0.5)


def _colour_arg(arg: str) -> RGB | None:
    text = arg.strip().lstrip("#")
    if re.fullmatch(r"[0-9A-Fa-f]{6}", text):
        return RGB(*(int(text[i : i + 2], 16) for i in (0, 2, 4)))
    parts = text.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        return RGB(*(int(p) for p in parts))
    return None
