"""Tasmota over MQTT.

Sources: tasmota/docs `docs/MQTT.md` (FullTopic, `cmnd`/`stat`/`tele`, LWT), `docs/Commands.md`
(`Backlog`, `HSBColor`, `Power`, `State`, SetOption4/17), and the firmware's
`xdrv_04_light.ino` (`LightState()`: the fields of a light's RESULT).

- The topics come from the device's FullTopic, `%prefix%/%topic%/` by default, where
  `%prefix%` is `cmnd`, `stat` or `tele`.
- Command: `Backlog HSBColor h,s,b; Power ON`. HSBColor sets hue, saturation and the
  dimmer in one step, so the light never shows the old colour at the new level or the new
  colour at the old level; Power follows so a light that was off turns on. Tasmota keeps
  colour as a chroma with a separate Dimmer, so the dimmer sent is the effective level.
  Off is `Power OFF`. Transitions are not sent: Tasmota's `Fade`/`Speed` are persistent
  settings, not per-command.
- State (strength `echo`: Tasmota repeats its own light model): `stat/<topic>/RESULT`, one
  per Backlog command, e.g. `{"POWER":"ON","Dimmer":80,"Color":"0000CC",
  "HSBColor":"240,100,80","Channel":[0,0,80]}`; `stat/<topic>/POWER` is `ON`/`OFF`;
  `tele/<topic>/STATE` repeats the light fields every TelePeriod.
  `Color` already has the dimmer applied (`0000CC` is blue at 80 %), so the hue is read
  from HSBColor and the level from Dimmer; Color is used only when HSBColor is absent, and
  then as the output it is. SetOption17 prints Color as decimals (`0,0,204`); 8 or 10 hex
  digits carry white channels after RGB.
- Availability: `tele/<topic>/LWT` is `Online` or `Offline`, retained.
- State query: `State` with an empty payload answers on RESULT (strength `echo`).
- SetOption4 (replies on `stat/<topic>/<COMMAND>`) is not supported: leave it off.
- Commands are never retained: a retained `cmnd/.../POWER` replays after every reboot
  ("ghost switching").
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import field_validator

from devices.adapters.base import (
    Adapter,
    AdapterConfig,
    AdapterTopics,
    Availability,
    BadMessage,
    Command,
    Ignored,
    OtherColour,
    Parsed,
    Report,
    Reported,
    StateRequest,
    Strength,
    check_topic,
    decode_object,
    decode_text,
    freeze,
    integer,
    target_output,
)
from devices.colour import HSV, PERCENT, RGB, Colour, chroma, rgb_to_hsv, value_percent
from devices.protocol import LightState

DEFAULT_FULL_TOPIC = "%prefix%/%topic%/"
_HEX_RE = re.compile(r"^[0-9A-Fa-f]{6}(?:[0-9A-Fa-f]{2}){0,2}$")
_DEC_RE = re.compile(r"^\d{1,3}(?:,\d{1,3}){2,4}$")
_HSB_RE = re.compile(r"^(\d{1,3}),(\d{1,3}),(\d{1,3})$")
_LIGHT_KEYS = ("POWER", "POWER1", "Dimmer", "Color", "HSBColor")


class TasmotaConfig(AdapterConfig):
    topic: str
    full_topic: str = DEFAULT_FULL_TOPIC

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic(value, "topic")

    @field_validator("full_topic")
    @classmethod
    def _full_topic(cls, value: str) -> str:
        if "%prefix%" not in value or "%topic%" not in value:
            raise ValueError(
                f"full_topic {value!r} must contain %prefix% and %topic% "
                f"(Tasmota's default is {DEFAULT_FULL_TOPIC!r})"
            )
        other = re.findall(r"%[a-z]+%", value.replace("%prefix%", "").replace("%topic%", ""))
        if other:
            raise ValueError(
                f"full_topic {value!r} uses {', '.join(other)}: only %prefix% and %topic% "
                "can be filled in; write the value itself instead"
            )
        if not value.endswith("/"):  # Tasmota adds the trailing slash itself
            value += "/"
        check_topic(value[:-1].replace("%prefix%", "p").replace("%topic%", "t"), "full_topic")
        return value


class TasmotaAdapter(Adapter):
    name = "tasmota"
    strength = Strength.ECHO
    Config = TasmotaConfig

    def __init__(self, config: TasmotaConfig) -> None:
        self.config = config
        self._result = self._topic("stat", "RESULT")
        self._power = self._topic("stat", "POWER")
        self._state = self._topic("tele", "STATE")
        self._lwt = self._topic("tele", "LWT")
        self._backlog = self._topic("cmnd", "Backlog")
        self._power_cmd = self._topic("cmnd", "Power")
        self._state_cmd = self._topic("cmnd", "State")
        self._topics = AdapterTopics(
            reports=(self._lwt, self._result, self._power, self._state),
            commands=(self._backlog, self._power_cmd, self._state_cmd),
        )

    def _topic(self, prefix: str, command: str) -> str:
        full = self.config.full_topic.replace("%prefix%", prefix)
        return full.replace("%topic%", self.config.topic) + command

    def command(self, target: LightState, *, ref: int = 0) -> tuple[Command, ...]:
        out = target_output(target)
        if not out.on:
            return (Command(self._power_cmd, b"OFF"),)
        hsv = rgb_to_hsv(out.chroma)
        dimmer = PERCENT.to_device(out.level, lit=True)
        hue, sat = math.floor(hsv.h + 0.5) % 360, math.floor(hsv.s + 0.5)
        hsb = f"{hue},{sat},{dimmer}"
        return (Command(self._backlog, f"HSBColor {hsb}; Power ON".encode()),)

    def state_request(self, *, ref: int = 0) -> StateRequest:
        return StateRequest((Command(self._state_cmd, b""),), Strength.ECHO)

    def _parse(self, topic: str, payload: bytes) -> Parsed:
        if topic == self._lwt:
            text = decode_text(payload).strip()
            if text.lower() == "online":
                return Report(availability=Availability.ONLINE)
            if text.lower() == "offline":
                return Report(availability=Availability.OFFLINE)
            raise BadMessage(f"LWT {text[:40]!r} is not Online or Offline")
        if topic == self._power:
            return Report(state=Reported(on=_power(decode_text(payload).strip())))
        data = decode_object(payload)
        if "StatusSTS" in data and isinstance(data["StatusSTS"], dict):
            data = data["StatusSTS"]
        if not any(key in data for key in _LIGHT_KEYS):
            return Ignored("a result without light fields")
        return Report(state=_light(data))


def _power(value: Any) -> bool:
    if value in ("ON", "on", "On", "1"):
        return True
    if value in ("OFF", "off", "Off", "0"):
        return False
    raise BadMessage(f"POWER {str(value)[:40]!r} is not ON or OFF")


def _light(data: dict[str, Any]) -> Reported:
    raw = {key: data[key] for key in (*_LIGHT_KEYS, "White", "CT", "Channel") if key in data}
    on = None
    if "POWER" in data:
        on = _power(data["POWER"])
    elif "POWER1" in data:
        on = _power(data["POWER1"])
    dimmer = integer(data["Dimmer"], "Dimmer", 0, 100) if "Dimmer" in data else None
    colour: Colour | OtherColour | None = None
    white: int | None = None
    brightness: float | None = None if dimmer is None else PERCENT.to_percent(dimmer)
    if "HSBColor" in data:
        hsb = _HSB_RE.fullmatch(str(data["HSBColor"]))
        if hsb is None:
            raise BadMessage(f"HSBColor {str(data['HSBColor'])[:40]!r} is not h,s,b")
        h, s, b = (int(part) for part in hsb.groups())
        if h > 360 or s > 100 or b > 100:
            raise BadMessage(f"HSBColor {data['HSBColor']!r} is out of range")
        colour = HSV(float(h % 360), float(s), 100.0)
        if brightness is None:
            brightness = float(b)
    if "Color" in data:
        channels = _colour_channels(data["Color"])
        output = RGB(*channels[:3])
        white = channels[3] if len(channels) > 3 else None
        if colour is None:
            # Color is the output, dimmer applied: its chroma is the hue, its own
            # value the effective level.
            colour = chroma(output) if max(output) else None
            brightness = value_percent(output)
    if "CT" in data and "HSBColor" not in data and "Color" not in data:
        colour = OtherColour(f"white at CT {data['CT']!r}")
    return Reported(on=on, colour=colour, brightness=brightness, white=white, raw=freeze(raw))


def _colour_channels(value: Any) -> list[int]:
    text = str(value) if isinstance(value, str) else ""
    if _HEX_RE.fullmatch(text):
        return [int(text[i : i + 2], 16) for i in range(0, len(text), 2)]
    if _DEC_RE.fullmatch(text):
        channels = [int(part) for part in text.split(",")]
        if max(channels) <= 255:
            return channels
    raise BadMessage(f"Color {str(value)[:40]!r} is neither hex nor 0-255 decimals")
