"""WLED over MQTT.

Sources: wled/WLED `wled00/mqtt.cpp` (topics, the `/g` and `/c` formats, the status last
will), `wled00/json.cpp` (`deserializeState`: `on`, `bri`, `tt`, `seg`), `wled00/led.cpp`
(`setValuesFromSegment`: `/c` is the first selected segment's primary colour), and the
MQTT page of kno.wled.ge.

- Command: JSON on `<topic>/api` (WLED parses a payload starting with `{` as its JSON
  API). `seg` is an object without `id`, so it applies to every selected segment, as the
  colour picker does; `fx: 0` is the solid effect; `tt` is a one-off transition in
  100 ms units. The colour is sent as it is, with the level as `bri` 0-255: WLED shows
  the colour times `bri`/255.
- State (strength `echo`, WLED repeats what it holds): `<topic>/g` is `bri` as text
  (0 when off), `<topic>/c` is `#%06X` of `W<<24|R<<16|G<<8|B` (7 or 8 hex digits when
  white is set), `<topic>/v` is the XML state (`<ac>` brightness, `<cl>` R, G, B).
  WLED publishes at QoS 0, throttled, and retains only if its settings say so.
- Availability: `<topic>/status` is `online` or `offline` (the last will), retained.
- WLED has no state query over MQTT: JSON sent to `/api` gets no reply.
"""

from __future__ import annotations

import re

from pydantic import field_validator

from devices.adapters.base import (
    Adapter,
    AdapterConfig,
    AdapterTopics,
    Availability,
    BadMessage,
    Command,
    Ignored,
    Parsed,
    Report,
    Reported,
    Strength,
    check_topic,
    decode_text,
    encode_json,
    freeze,
    target_output,
)
from devices.colour import BYTE, RGB
from devices.protocol import LightState

# WLED truncates its device topic at MQTT_MAX_TOPIC_LEN (32 by default, wled00/const.h).
MAX_DEVICE_TOPIC = 32
_HEX_COLOUR_RE = re.compile(r"^#([0-9A-Fa-f]{1,8})$")
_AC_RE = re.compile(r"<ac>(\d{1,3})</ac>")
_CL_RE = re.compile(r"<cl>(\d{1,3})</cl>")
_WV_RE = re.compile(r"<wv>(-?\d{1,3})</wv>")


class WledConfig(AdapterConfig):
    topic: str

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic(value, "topic", max_chars=MAX_DEVICE_TOPIC)


class WledAdapter(Adapter):
    name = "wled"
    strength = Strength.ECHO
    Config = WledConfig

    def __init__(self, config: WledConfig) -> None:
        self.config = config
        base = config.topic
        self._g, self._c, self._v = f"{base}/g", f"{base}/c", f"{base}/v"
        self._status, self._api = f"{base}/status", f"{base}/api"
        self._topics = AdapterTopics(
            reports=(self._status, self._g, self._c, self._v), commands=(self._api,)
        )

    def command(self, target: LightState, *, ref: int = 0) -> tuple[Command, ...]:
        out = target_output(target)
        body: dict[str, object] = {"on": out.on}
        if out.on:
            r, g, b = out.colour
            body["bri"] = BYTE.to_device(target.level, lit=True)
            body["seg"] = {"col": [[r, g, b, 0]], "fx": 0}
        body["tt"] = min(65535, round(target.transition_s * 10))
        return (Command(self._api, encode_json(body)),)

    def _parse(self, topic: str, payload: bytes) -> Parsed:
        text = decode_text(payload).strip()
        if topic == self._status:
            if text == "online":
                return Report(availability=Availability.ONLINE)
            if text == "offline":
                return Report(availability=Availability.OFFLINE)
            raise BadMessage(f"status {text[:40]!r} is not online or offline")
        if topic == self._g:
            bri = _byte(text, "brightness")
            return Report(
                state=Reported(on=bri > 0, brightness=BYTE.to_percent(bri), raw=freeze({"g": bri}))
            )
        if topic == self._c:
            match = _HEX_COLOUR_RE.fullmatch(text)
            if match is None:
                raise BadMessage(f"colour {text[:40]!r} is not #RRGGBB or #WWRRGGBB")
            value = int(match.group(1), 16)
            colour = RGB((value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF)
            return Report(state=Reported(colour=colour, white=value >> 24, raw=freeze({"c": text})))
        return self._parse_xml(text)

    def _parse_xml(self, text: str) -> Parsed:
        ac = _AC_RE.search(text)
        cl = _CL_RE.findall(text)
        if not text.startswith("<?xml") and not text.startswith("<vs>"):
            raise BadMessage("/v payload is not WLED's XML state")
        if ac is None or len(cl) < 3:
            return Ignored("/v without brightness and colour")
        bri = _byte(ac.group(1), "brightness")
        colour = RGB(*(_byte(c, "colour channel") for c in cl[:3]))
        wv = _WV_RE.search(text)
        white = int(wv.group(1)) if wv is not None and int(wv.group(1)) >= 0 else None
        if white is not None and white > 255:
            raise BadMessage(f"white {white} is outside 0-255")
        return Report(
            state=Reported(
                on=bri > 0,
                colour=colour,
                brightness=BYTE.to_percent(bri),
                white=white,
                raw=freeze({"ac": bri, "cl": list(colour)}),
            )
        )


def _byte(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 3 or int(text) > 255:
        raise BadMessage(f"{what} {text[:40]!r} is not a number 0-255")
    return int(text)
