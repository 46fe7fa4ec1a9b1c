"""An emulated WLED (wled/WLED `wled00/mqtt.cpp`, `json.cpp`, `set.cpp`, `led.cpp`).

- Subscribes, at QoS 0, to `<topic>` (brightness text, `ON`/`OFF`/`T`), `<topic>/col`
  (`#RRGGBB`, `#WWRRGGBB`, `hRRGGBB` or a 32-bit decimal) and `<topic>/api` (the JSON
  API when the payload starts with `{`, else the HTTP API: `A=`, `R=`, `G=`, `B=`,
  `W=`, `T=`, `FX=`).
- A segment's `col` entry is `[r, g, b(, w)]`, `"[WW]RRGGBB"` or `{"r","g","b","w"}`.
- Reports as `publishMqtt()` does: `<topic>/g` (`bri`, 0 when off), `<topic>/c`
  (`#%06X` of `W<<24|R<<16|G<<8|B`), `<topic>/status` `online` and `<topic>/v` (XML), at
  QoS 0, retained only with `retain=True` (WLED's "retain" setting). Once on connect;
  after a command only if the state changed, and at most once per `cooldown_s`
  (`INTERFACE_UPDATE_COOLDOWN`, 1000 ms): a change inside the cooldown is published at
  its end, coalesced with any later one.
- Last will `<topic>/status` `offline`, retained; `online` on connect.
- Off is `bri` 0 (the last brightness kept for `ON`). Malformed JSON is ignored, as
  `deserializeJson` leaves an empty document.

`config`: `{"topic": ...}` as the adapter's.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from typing import Any

from devices.colour import BYTE, RGB
from tests.emulators.base import Emulator, Shown

COOLDOWN_S = 1.0
DEFAULT_COLOUR = RGB(255, 160, 0)  # WLED's default orange


@dataclass(frozen=True)
class WledLight:
    bri: int = 128
    bri_last: int = 128
    colour: RGB = DEFAULT_COLOUR
    white: int = 0
    fx: int = 0

    @property
    def on(self) -> bool:
        return self.bri > 0


class WledEmulator(Emulator[WledLight]):
    vendor = "wled"

    def __init__(
        self,
        *args: Any,
        cooldown_s: float = COOLDOWN_S,
        retain: bool = False,
        rgbw: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.topic = str(self.config["topic"])
        self.cooldown_s = cooldown_s
        self.retain = retain
        self.rgbw = rgbw
        self._last_update = float("-inf")
        self.updates: list[float] = []
        """When each interface update began (monotonic): the cooldown counts from these."""
        self._update_due = False

    def initial_light(self) -> WledLight:
        return WledLight()

    def subscriptions(self) -> list[tuple[str, int]]:
        t = self.topic
        return [(t, 0), (f"{t}/col", 0), (f"{t}/api", 0)]

    def will(self) -> tuple[str, bytes]:
        return f"{self.topic}/status", b"offline"

    def online_payload(self) -> bytes:
        return b"online"

    def on_connected(self) -> None:
        self._publish_state()

    @property
    def shown(self) -> Shown:
        light = self.light
        return Shown.of(light.on, light.colour, BYTE.to_percent(light.bri), light.white)

    def malformed_messages(self) -> list[tuple[str, bytes]]:
        t = self.topic
        return [
            (f"{t}/c", b"#00GG00"),
            (f"{t}/g", b"bright"),
            (f"{t}/g", b"300"),
            (f"{t}/status", b"maybe"),
            (f"{t}/v", b"<html>busy</html>"),
            (f"{t}/c", b"\xff\xfe\x00"),
        ]

    # ---- commands --------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        text = payload.decode("utf-8", errors="replace")
        before = self.light
        if topic == self.topic:
            light = _brightness_payload(before, text)
        elif topic == f"{self.topic}/col":
            light = replace(before, **self._colour(_colour_text(text)))
        elif topic == f"{self.topic}/api":
            light = self._json(before, text) if text.startswith("{") else self._http(before, text)
        else:
            return
        self.apply(light)
        if light != before:
            self._update_due = True
            self._schedule_update()

    def _colour(self, wrgb: tuple[int, int, int, int]) -> dict[str, Any]:
        w, r, g, b = wrgb
        return {"colour": self.wrong(RGB(r, g, b)), "white": w}

    def _json(self, light: WledLight, text: str) -> WledLight:
        try:
            doc = json.loads(text)
        except ValueError:
            return light
        if not isinstance(doc, dict):
            return light
        bri = light.bri
        if _is_int(doc.get("bri")):
            bri = int(doc["bri"]) & 0xFF
        light = replace(light, bri=bri, bri_last=bri or light.bri_last)
        on = doc.get("on", bri > 0)
        if on == "t":
            on = not light.on
        if isinstance(on, bool) and on != light.on:
            light = _toggle(light)
        segs = doc.get("seg")
        for seg in segs if isinstance(segs, list) else [segs] if isinstance(segs, dict) else []:
            if not isinstance(seg, dict) or seg.get("id", 0) != 0:
                continue
            cols = seg.get("col")
            if isinstance(cols, list) and cols:
                first = _json_colour(cols[0])
                if first is not None:
                    light = replace(light, **self._colour(first))
            if _is_int(seg.get("fx")):
                light = replace(light, fx=int(seg["fx"]))
        return light

    def _http(self, light: WledLight, text: str) -> WledLight:
        args = dict(part.partition("=")[::2] for part in text.split("&") if part)
        w, r, g, b = light.white, *light.colour
        for key, value in args.items():
            if not value.isdigit():
                continue
            number = int(value) & 0xFF
            if key == "A":
                light = replace(light, bri=number, bri_last=number or light.bri_last)
            elif key in ("R", "G", "B", "W"):
                w, r, g, b = [
                    number if key == k else old
                    for k, old in (("W", w), ("R", r), ("G", g), ("B", b))
                ]
            elif key == "FX":
                light = replace(light, fx=number)
        if (w, r, g, b) != (light.white, *light.colour):
            light = replace(light, **self._colour((w, r, g, b)))
        toggle = args.get("T")
        if toggle == "2" or (toggle == "1" and not light.on) or (toggle == "0" and light.on):
            light = _toggle(light)
        return light

    # ---- reports ---------------------------------------------------------------------

    def _schedule_update(self) -> None:
        """`updateInterfaces`: publish now, or when the cooldown since the last ends."""
        wait = self._last_update + self.cooldown_s - _now()
        if wait <= 0:
            self._interface_update()
        else:
            self.later(wait, self._interface_update)

    def _interface_update(self) -> None:
        if not self._update_due or _now() - self._last_update < self.cooldown_s:
            return
        self._update_due = False
        self._last_update = _now()
        self.updates.append(self._last_update)
        self._publish_state()

    def _publish_state(self) -> None:
        light, t, keep = self.light, self.topic, self.retain
        r, g, b = light.colour
        value = (light.white << 24) | (r << 16) | (g << 8) | b
        self.report(f"{t}/g", str(light.bri).encode(), retain=keep)
        self.report(f"{t}/c", f"#{value:06X}".encode(), retain=keep)
        self.send(f"{t}/status", b"online", retain=True)
        self.report(f"{t}/v", self._xml(light).encode(), retain=keep)

    def _xml(self, light: WledLight) -> str:
        r, g, b = light.colour
        wv = light.white if self.rgbw else -1
        return (
            f'<?xml version="1.0" ?><vs><ac>{light.bri}</ac><cl>{r}</cl><cl>{g}</cl>'
            f"<cl>{b}</cl><cs>0</cs><cs>0</cs><cs>0</cs><ns>0</ns><nr>1</nr><nl>0</nl>"
            f"<nf>1</nf><nd>60</nd><nt>0</nt><fx>{light.fx}</fx><sx>128</sx><ix>128</ix>"
            f"<fp>0</fp><wv>{wv}</wv><ws>0</ws><ps>0</ps><cy>0</cy><ds>WLED</ds><ss>0</ss></vs>"
        )


def _now() -> float:
    return time.monotonic()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _toggle(light: WledLight) -> WledLight:
    if light.bri == 0:
        return replace(light, bri=light.bri_last)
    return replace(light, bri_last=light.bri, bri=0)


def _brightness_payload(light: WledLight, text: str) -> WledLight:
    """`parseMQTTBriPayload`: ON/on/true, T/t (toggle), else a number (strtoul)."""
    if "ON" in text or "on" in text or "true" in text:
        return replace(light, bri=light.bri_last)
    if "T" in text or "t" in text:
        return _toggle(light)
    digits = re.match(r"\s*(\d*)", text)
    value = int(digits.group(1)) & 0xFF if digits and digits.group(1) else 0
    if value == 0 and light.bri > 0:
        return replace(light, bri_last=light.bri, bri=0)
    return replace(light, bri=value, bri_last=value or light.bri_last)


def _colour_text(text: str) -> tuple[int, int, int, int]:
    """`colorFromDecOrHexString`: W, R, G, B from `#hex`, `hhex` or a decimal."""
    text = text.strip()
    try:
        value = int(text[1:], 16) if text[:1] in ("#", "h", "H") else int(text or "0")
    except ValueError:
        value = 0
    value &= 0xFFFFFFFF
    return (value >> 24) & 0xFF, (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF


def _json_colour(value: Any) -> tuple[int, int, int, int] | None:
    """One entry of a segment's `col`: [r, g, b(, w)], "[WW]RRGGBB" hex text, or
    {"r","g","b","w"} (each optional; missing channels are 0 here)."""
    if isinstance(value, list) and 1 <= len(value) <= 4 and all(_is_int(c) for c in value):
        r, g, b, w = ([int(c) & 0xFF for c in value] + [0, 0, 0, 0])[:4]
        return w, r, g, b
    if isinstance(value, dict):
        r, g, b, w = (
            int(value.get(k, 0)) & 0xFF if _is_int(value.get(k, 0)) else 0 for k in "rgbw"
        )
        return w, r, g, b
    if isinstance(value, str) and re.fullmatch(r"([0-9A-Fa-f]{2})?[0-9A-Fa-f]{6}", value):
        number = int(value, 16)
        return (number >> 24) & 0xFF, (number >> 16) & 0xFF, (number >> 8) & 0xFF, number & 0xFF
    return None
