"""A Zigbee light behind a Zigbee2MQTT bridge.

Sources: Koenkk/zigbee2mqtt.io `docs/guide/usage/mqtt_topics_and_messages.md` (`/set`,
`/get`, the state message), `docs/guide/configuration/device-availability.md`
(`/availability`, retained), and zigbee2mqtt PR #24200 (v2: availability is JSON
`{"state":"online"}`; v1 with `legacy_availability_payload` sent plain `online`).

- Command: `<base>/<friendly_name>/set` with `{"state":"ON","brightness":0-254,
  "color":{"x":..,"y":..}}` (and `transition` in seconds when the target fades). The
  colour goes as CIE xy, computed here, so an optimistic echo comes back as sent; a
  Zigbee light keeps colour as chromaticity only, so brightness is the effective level.
- State: `<base>/<friendly_name>`, e.g. `{"state":"ON","brightness":203,
  "color_mode":"xy","color":{"x":0.1355,"y":0.0399}}`. Zigbee2MQTT publishes what it
  *assumes* after a `/set` (strength `echo`); a publish to `.../get` makes it read the
  light's attributes over Zigbee (`state_request`, strength `readback`). Colour comes back
  as xy, possibly clipped to the light's gamut, so it is compared within a tolerance.
  `color_mode: color_temp` means the light shows white, not a colour.
- Availability: `<base>/<friendly_name>/availability`, retained, JSON or plain text. The
  bridge's own `<base>/bridge/state` speaks for every light behind it: it is listed
  first, so the light's own retained availability, delivered after it, has the last word.
- The broker account belongs to the bridge, not to the light (`bridge`): every light
  behind one base topic shares it, named by `bridge_account(base_topic)`, with the
  rights of everything under `<base>/#`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import field_validator

from devices.adapters.base import (
    Adapter,
    AdapterConfig,
    AdapterTopics,
    Availability,
    BadMessage,
    Bridge,
    Command,
    Ignored,
    OtherColour,
    Parsed,
    Report,
    Reported,
    StateRequest,
    Strength,
    check_topic,
    decode_json,
    decode_text,
    encode_json,
    freeze,
    integer,
    number,
    target_output,
)
from devices.colour import HSV, XY, ZIGBEE, Colour, rgb_to_xy
from devices.protocol import LightState

_RESERVED_ENDINGS = ("set", "get", "availability")
_ACCOUNT_PREFIX = "z2m-"
_ACCOUNT_MAX = 48


def bridge_account(base_topic: str) -> str:
    """The broker account (username and client id) of the bridge on `base_topic`: a
    valid device id, the same for the same base topic. `zigbee2mqtt` gives
    `z2m-zigbee2mqtt`; a base topic that does not read as one (`Z2M/Home`) gives its
    lower-cased letters and digits and a short digest of the exact topic, so two base
    topics never share an account."""
    if re.fullmatch(r"[a-z0-9-]+", base_topic) and len(base_topic) + 4 <= _ACCOUNT_MAX:
        return _ACCOUNT_PREFIX + base_topic
    slug = re.sub(r"[^a-z0-9]+", "-", base_topic.lower()).strip("-")[:30].strip("-")
    digest = hashlib.sha256(base_topic.encode()).hexdigest()[:8]
    return f"{_ACCOUNT_PREFIX}{slug}-{digest}" if slug else f"{_ACCOUNT_PREFIX}{digest}"


_XY_DIGITS = 4


class Zigbee2MqttConfig(AdapterConfig):
    base_topic: str = "zigbee2mqtt"
    friendly_name: str

    @field_validator("base_topic")
    @classmethod
    def _base(cls, value: str) -> str:
        return check_topic(value, "base_topic")

    @field_validator("friendly_name")
    @classmethod
    def _name(cls, value: str) -> str:
        check_topic(value, "friendly_name")
        last = value.rsplit("/", 1)[-1]
        if value == "bridge" or value.startswith("bridge/"):
            raise ValueError("friendly_name must not be 'bridge': that is the bridge's own topic")
        if last in _RESERVED_ENDINGS or last.isdigit():
            raise ValueError(
                f"friendly_name {value!r} must not end in /set, /get, /availability or /<number>"
                " (Zigbee2MQTT refuses such names)"
            )
        return value


class Zigbee2MqttAdapter(Adapter):
    name = "zigbee2mqtt"
    strength = Strength.ECHO
    Config = Zigbee2MqttConfig

    def __init__(self, config: Zigbee2MqttConfig) -> None:
        self.config = config
        device = f"{config.base_topic}/{config.friendly_name}"
        self._state, self._availability = device, f"{device}/availability"
        self._bridge = f"{config.base_topic}/bridge/state"
        self._set, self._get = f"{device}/set", f"{device}/get"
        self._topics = AdapterTopics(
            reports=(self._bridge, self._availability, self._state),
            commands=(self._set, self._get),
        )
        self._bridge_account = Bridge(bridge_account(config.base_topic), config.base_topic)

    @property
    def bridge(self) -> Bridge:
        return self._bridge_account

    def command(self, target: LightState, *, ref: int = 0) -> tuple[Command, ...]:
        out = target_output(target)
        body: dict[str, object] = {"state": "ON" if out.on else "OFF"}
        if out.on:
            x, y = rgb_to_xy(out.colour)
            body["brightness"] = ZIGBEE.to_device(out.level, lit=True)
            body["color"] = {"x": round(x, _XY_DIGITS), "y": round(y, _XY_DIGITS)}
        if target.transition_s:
            body["transition"] = target.transition_s
        return (Command(self._set, encode_json(body)),)

    def state_request(self, *, ref: int = 0) -> StateRequest:
        body = {"state": "", "brightness": "", "color": {"x": "", "y": ""}}
        return StateRequest((Command(self._get, encode_json(body)),), Strength.READBACK)

    def _parse(self, topic: str, payload: bytes) -> Parsed:
        if topic in (self._availability, self._bridge):
            return Report(availability=_availability(payload))
        data = decode_json(payload)
        if not isinstance(data, dict):
            raise BadMessage("state is not a JSON object")
        if not any(key in data for key in ("state", "brightness", "color", "color_mode")):
            return Ignored("a state message without light fields")
        return Report(state=_light(data))


def _availability(payload: bytes) -> Availability:
    text = decode_text(payload).strip()
    value: Any = text
    if text.startswith("{"):
        data = decode_json(payload)
        value = data.get("state") if isinstance(data, dict) else None
    if value == "online":
        return Availability.ONLINE
    if value == "offline":
        return Availability.OFFLINE
    raise BadMessage(f"availability {text[:60]!r} is neither online nor offline")


def _light(data: dict[str, Any]) -> Reported:
    raw = {k: data[k] for k in ("state", "brightness", "color_mode", "color") if k in data}
    on: bool | None = None
    if "state" in data:
        if data["state"] not in ("ON", "OFF"):
            raise BadMessage(f"state {str(data['state'])[:40]!r} is not ON or OFF")
        on = data["state"] == "ON"
    brightness = None
    if "brightness" in data:
        # 0-254 per the Zigbee level cluster; some lights report 255, read as full.
        level = integer(data["brightness"], "brightness", 0, 255)
        brightness = ZIGBEE.to_percent(min(level, ZIGBEE.high))
    colour: Colour | OtherColour | None = None
    mode = data.get("color_mode")
    if mode is not None and mode not in ("xy", "hs"):
        colour = OtherColour(f"color_mode {str(mode)[:40]}")
    elif "color" in data:
        colour = _colour(data["color"], mode)
    return Reported(on=on, colour=colour, brightness=brightness, raw=freeze(raw))


def _colour(value: Any, mode: Any) -> Colour:
    if not isinstance(value, dict):
        raise BadMessage("color is not an object")
    if mode != "hs" and "x" in value and "y" in value:
        return XY(number(value["x"], "color.x", 0, 1), number(value["y"], "color.y", 0, 1))
    hue = value.get("hue", value.get("h"))
    sat = value.get("saturation", value.get("s"))
    if hue is not None and sat is not None:
        h = number(hue, "color.hue", 0, 360) % 360
        return HSV(h, number(sat, "color.saturation", 0, 100), 100.0)
    if "x" in value and "y" in value:
        return XY(number(value["x"], "color.x", 0, 1), number(value["y"], "color.y", 0, 1))
    raise BadMessage("color has neither x/y nor hue/saturation")
