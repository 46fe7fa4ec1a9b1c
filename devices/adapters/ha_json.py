"""A light that speaks Home Assistant's MQTT JSON schema (ESPHome's MQTT lights too).

Sources: home-assistant/home-assistant.io `source/_integrations/light.mqtt.markdown`
(the JSON schema: command and state bodies, `brightness_scale`, availability payloads,
`"state": null` for unknown); esphome/esphome-docs `components/mqtt.rst` (topics);
esphome `light_json_schema.cpp` (what ESPHome sends and accepts) and
`light_color_values.h` (ESPHome keeps the colour normalised, its brightest channel at
full, with brightness apart).

- Command on `command_topic`: `{"state":"ON","brightness":0-255,"color":{"r","g","b"}}`
  (and `transition` in seconds when the target fades). `color_mode` is never sent: it is
  a state field. Like ESPHome, the colour is sent as a chroma (brightest channel 255) and
  the brightness as the effective level, so a light that normalises and one that does
  not show the same.
- State on `state_topic` (strength `echo`): `{"state":"ON","color_mode":"rgb",
  "brightness":204,"color":{"r":0,"g":0,"b":255}}`. `color` may also be `rgbw`/`rgbww`
  channels, `h`/`s` or `x`/`y` depending on `color_mode`; a `color_temp`, `white`,
  `brightness` or `onoff` mode shows no colour.
- Availability on `availability_topic` when set: `online`/`offline` unless
  `payload_available`/`payload_not_available` say otherwise.
- ESPHome: command `<prefix>/light/<object_id>/command`, state
  `<prefix>/light/<object_id>/state`, availability `<prefix>/status`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

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
    Strength,
    check_topic,
    decode_object,
    decode_text,
    encode_json,
    freeze,
    integer,
    number,
    target_output,
)
from devices.colour import HSV, RGB, XY, Colour, Scale
from devices.protocol import LightState

_NO_COLOUR_MODES = ("color_temp", "white", "brightness", "onoff")


class HaJsonConfig(AdapterConfig):
    command_topic: str
    state_topic: str
    availability_topic: str | None = None
    payload_available: str = Field(default="online", min_length=1, max_length=100)
    payload_not_available: str = Field(default="offline", min_length=1, max_length=100)
    brightness_scale: int = Field(default=255, ge=1, le=65535)

    @field_validator("command_topic", "state_topic", "availability_topic")
    @classmethod
    def _topic(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_topic(value, str(info.field_name))

    @model_validator(mode="after")
    def _distinct(self) -> HaJsonConfig:
        if self.command_topic == self.state_topic:
            raise ValueError("command_topic and state_topic must differ")
        if self.availability_topic in (self.command_topic, self.state_topic):
            raise ValueError("availability_topic must differ from the command and state topics")
        if self.payload_available == self.payload_not_available:
            raise ValueError("payload_available and payload_not_available must differ")
        return self


class HaJsonAdapter(Adapter):
    name = "ha-json"
    strength = Strength.ECHO
    Config = HaJsonConfig

    def __init__(self, config: HaJsonConfig) -> None:
        self.config = config
        self._scale = Scale(f"0-{config.brightness_scale}", 0, config.brightness_scale)
        reports: tuple[str, ...] = (config.state_topic,)
        if config.availability_topic is not None:
            reports = (config.availability_topic, *reports)
        self._topics = AdapterTopics(reports=reports, commands=(config.command_topic,))

    def command(self, target: LightState, *, ref: int = 0) -> tuple[Command, ...]:
        out = target_output(target)
        body: dict[str, object] = {"state": "ON" if out.on else "OFF"}
        if out.on:
            r, g, b = out.chroma
            body["brightness"] = self._scale.to_device(out.level, lit=True)
            body["color"] = {"r": r, "g": g, "b": b}
        if target.transition_s:
            body["transition"] = target.transition_s
        return (Command(self.config.command_topic, encode_json(body)),)

    def _parse(self, topic: str, payload: bytes) -> Parsed:
        if topic == self.config.availability_topic:
            text = decode_text(payload)
            if text == self.config.payload_available:
                return Report(availability=Availability.ONLINE)
            if text == self.config.payload_not_available:
                return Report(availability=Availability.OFFLINE)
            raise BadMessage(f"availability {text[:60]!r} is neither of the configured payloads")
        data = decode_object(payload)
        if not any(key in data for key in ("state", "brightness", "color", "color_mode")):
            return Ignored("a state message without light fields")
        return Report(state=self._light(data))

    def _light(self, data: dict[str, Any]) -> Reported:
        raw = {k: data[k] for k in ("state", "brightness", "color_mode", "color") if k in data}
        on: bool | None = None
        state = data.get("state")
        if state in ("ON", "OFF"):
            on = state == "ON"
        elif state is not None:
            raise BadMessage(f"state {str(state)[:40]!r} is not ON, OFF or null")
        elif "state" in data:  # null: the light's state is unknown now
            return Reported(raw=freeze(raw), reset=True)
        brightness = None
        if data.get("brightness") is not None:
            value = number(data["brightness"], "brightness", 0, self._scale.high)
            brightness = self._scale.to_percent(value)
        colour: Colour | OtherColour | None = None
        white: int | None = None
        mode = data.get("color_mode")
        if mode in _NO_COLOUR_MODES:
            colour = OtherColour(f"color_mode {mode}")
        elif data.get("color") is not None:
            colour, white = _colour(data["color"])
        return Reported(on=on, colour=colour, brightness=brightness, white=white, raw=freeze(raw))


def _colour(value: Any) -> tuple[Colour, int | None]:
    if not isinstance(value, dict):
        raise BadMessage("color is not an object")
    if all(k in value for k in ("r", "g", "b")):
        channels = RGB(*(integer(value[k], f"color.{k}", 0, 255) for k in ("r", "g", "b")))
        white = None
        if "w" in value or "c" in value:
            white = max(integer(value.get(k, 0), f"color.{k}", 0, 255) for k in ("w", "c"))
        return channels, white
    if "h" in value and "s" in value:
        hue = number(value["h"], "color.h", 0, 360) % 360
        return HSV(hue, number(value["s"], "color.s", 0, 100), 100.0), None
    if "x" in value and "y" in value:
        return XY(number(value["x"], "color.x", 0, 1), number(value["y"], "color.y", 0, 1)), None
    raise BadMessage("color has none of r/g/b, h/s or x/y")
