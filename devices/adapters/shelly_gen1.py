"""Shelly Gen1 RGBW2 (and Shelly Bulb) in colour mode, over MQTT.

Sources: the Shelly Gen1 API docs (shelly-api-docs.shelly.cloud/gen1), "MQTT" section of
Shelly RGBW2 and Shelly Bulb: `shellies/<id>/color/0/set`, `.../color/0/status`,
`.../color/0`, `shellies/<id>/online`, `shellies/<id>/command`; also the LoxBerry wiki
copy of that page with a recorded status (`{"ison":true,"red":34,...,"gain":5,...}`).

- Command: `shellies/<id>/color/0/set` with `{"turn":"on","red":0-255,"green":..,
  "blue":..,"white":0,"gain":0-100}` (and `transition` 0-5000 ms when the target fades).
  The device shows the colour times the gain: the colour goes as it is, the level as gain.
  Off is `{"turn":"off"}`.
- State (strength `echo`: the device repeats its settings): `.../color/0/status` is the
  whole state as JSON (`ison`, `mode`, `red`, `green`, `blue`, `white`, `gain`, ...);
  `.../color/0` is `on` or `off`.
- Availability: `shellies/<id>/online` is `true` or `false`, retained (the last will).
- State query: `update` on `shellies/<id>/command` makes the device publish its state.
- The device must be in colour mode; in white mode it publishes on `.../white/<n>`.
"""

from __future__ import annotations

from typing import Any

from pydantic import field_validator

from devices.adapters.base import (
    Adapter,
    AdapterConfig,
    AdapterTopics,
    Availability,
    BadMessage,
    Command,
    OtherColour,
    Parsed,
    Report,
    Reported,
    StateRequest,
    Strength,
    check_topic,
    decode_object,
    decode_text,
    encode_json,
    freeze,
    integer,
    target_output,
)
from devices.colour import PERCENT, RGB, Colour
from devices.protocol import LightState

MAX_TRANSITION_MS = 5000


class ShellyGen1Config(AdapterConfig):
    id: str

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_topic(value, "id", levels=False, max_chars=64)


class ShellyGen1Adapter(Adapter):
    name = "shelly-gen1"
    strength = Strength.ECHO
    Config = ShellyGen1Config

    def __init__(self, config: ShellyGen1Config) -> None:
        self.config = config
        base = f"shellies/{config.id}"
        self._set, self._status = f"{base}/color/0/set", f"{base}/color/0/status"
        self._power, self._online = f"{base}/color/0", f"{base}/online"
        self._command = f"{base}/command"
        self._topics = AdapterTopics(
            reports=(self._online, self._status, self._power),
            commands=(self._set, self._command),
        )

    def command(self, target: LightState, *, ref: int = 0) -> tuple[Command, ...]:
        out = target_output(target)
        body: dict[str, object] = {"turn": "on" if out.on else "off"}
        if out.on:
            r, g, b = out.colour
            body.update(red=r, green=g, blue=b, white=0)
            body["gain"] = PERCENT.to_device(target.level, lit=True)
        if target.transition_s:
            body["transition"] = min(MAX_TRANSITION_MS, round(target.transition_s * 1000))
        return (Command(self._set, encode_json(body)),)

    def state_request(self, *, ref: int = 0) -> StateRequest:
        return StateRequest((Command(self._command, b"update"),), Strength.ECHO)

    def _parse(self, topic: str, payload: bytes) -> Parsed:
        if topic in (self._online, self._power):
            text = decode_text(payload).strip()
            if topic == self._online:
                if text in ("true", "false"):
                    online = Availability.ONLINE if text == "true" else Availability.OFFLINE
                    return Report(availability=online)
                raise BadMessage(f"online {text[:40]!r} is not true or false")
            if text in ("on", "off"):
                return Report(state=Reported(on=text == "on"))
            raise BadMessage(f"power {text[:40]!r} is not on or off")
        return Report(state=_status(decode_object(payload)))


def _status(data: dict[str, Any]) -> Reported:
    keys = ("ison", "mode", "red", "green", "blue", "white", "gain", "effect")
    raw = {k: data[k] for k in keys if k in data}
    on = None
    if "ison" in data:
        if not isinstance(data["ison"], bool):
            raise BadMessage("ison is not true or false")
        on = data["ison"]
    colour: Colour | OtherColour | None = None
    if data.get("mode", "color") != "color":
        colour = OtherColour(f"mode {str(data['mode'])[:40]}")
    elif data.get("effect", 0) not in (0, None):
        colour = OtherColour(f"effect {str(data['effect'])[:40]}")
    elif all(k in data for k in ("red", "green", "blue")):
        colour = RGB(*(integer(data[k], k, 0, 255) for k in ("red", "green", "blue")))
    white = integer(data["white"], "white", 0, 255) if "white" in data else None
    brightness = None
    if "gain" in data:
        brightness = PERCENT.to_percent(integer(data["gain"], "gain", 0, 100))
    return Reported(on=on, colour=colour, brightness=brightness, white=white, raw=freeze(raw))
