"""An emulated Shelly Plus RGBW PM (Gen2 RPC over MQTT; the Shelly API docs, gen2:
ComponentsAndServices `RGBW`, `RGB`, `Light`, `Mqtt`; General `RPCProtocol`,
`Notifications`).

- Subscribes to `<prefix>/rpc`. A request is `{"id":..,"src":..,"method":..,"params":..}`;
  one without `src` gets no reply (there is nowhere to send it). The reply goes to
  `<src>/rpc`: `{"id":..,"src":"<device id>","dst":"<src>","result":..}`, or
  `"error":{"code":..,"message":..}` (404 for a method this profile has not, -103 for
  an invalid argument, -105 for an unknown component id).
- Methods of the profile's component (`RGBW`, `RGB` or `Light`, the config's `profile`):
  `.Set` (`id`, `on`, `brightness` 0-100, `rgb` [r,g,b], `white` 0-255 on RGBW,
  `transition_duration`; result `null`), `.Toggle`, `.GetStatus`; and `Shelly.GetStatus`.
- After a change it publishes `NotifyStatus` on `<prefix>/events/rpc` with the changed
  fields only, e.g. `{"src":..,"dst":"<prefix>/events","method":"NotifyStatus","params":
  {"ts":..,"rgbw:0":{"id":0,"output":true,"brightness":80,"rgb":[0,0,255]}}}`; nothing if
  nothing changed. With `status_updates=True` ("generic status update over MQTT") the
  whole status also goes to `<prefix>/status/<component>:0`.
- `<prefix>/online` `true` retained on connect; `false` the last will.
- `silent` suppresses the notifications and status, not the RPC replies: a reply says
  a command arrived, never that the light changed.

`config`: `{"prefix": ..., "profile": "rgbw"}` as the adapter's.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from devices.colour import RGB
from tests.emulators.base import Emulator, Shown

_COMPONENT = {"rgbw": "RGBW", "rgb": "RGB", "light": "Light"}


@dataclass(frozen=True)
class ShellyGen2Light:
    output: bool = False
    brightness: int = 100
    rgb: tuple[int, int, int] = (255, 255, 255)
    white: int = 0


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class ShellyGen2Emulator(Emulator[ShellyGen2Light]):
    vendor = "shelly-gen2"

    def __init__(
        self,
        *args: Any,
        device_id: str | None = None,
        status_updates: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = str(self.config["prefix"])
        self.profile = str(self.config.get("profile", "rgbw"))
        self.method_prefix = _COMPONENT[self.profile]
        self.component = f"{self.profile}:0"
        self.device_id = device_id or f"shellyplusrgbwpm-{self.client_id[-12:]}"
        self.status_updates = status_updates

    def initial_light(self) -> ShellyGen2Light:
        return ShellyGen2Light()

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(f"{self.prefix}/rpc", 1)]

    def will(self) -> tuple[str, bytes]:
        return f"{self.prefix}/online", b"false"

    def online_payload(self) -> bytes:
        return b"true"

    def on_connected(self) -> None:
        if self.status_updates:
            self._publish_status()

    @property
    def shown(self) -> Shown:
        light = self.light
        colour = RGB(*light.rgb) if self.profile != "light" else RGB(255, 255, 255)
        return Shown.of(light.output, colour, float(light.brightness), light.white)

    def malformed_messages(self) -> list[tuple[str, bytes]]:
        events, p = f"{self.prefix}/events/rpc", self.prefix
        c = self.component
        return [
            (events, b'{"method":"NotifyStatus","params":{"rgbw:0":'),
            (events, json.dumps({"method": "NotifyStatus", "params": [c]}).encode()),
            (events, json.dumps({"method": "NotifyStatus", "params": {c: "on"}}).encode()),
            (events, _notify(self.device_id, p, {c: {"id": 0, "output": "yes"}})),
            (events, _notify(self.device_id, p, {c: {"id": 0, "brightness": 180}})),
            (events, _notify(self.device_id, p, {c: {"id": 0, "rgb": [0, 0]}})),
            (f"{p}/online", b"perhaps"),
        ]

    # ---- RPC -------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            frame = json.loads(payload)
        except ValueError:
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("src"), str):
            return
        src, ref = frame["src"], frame.get("id")
        reply: dict[str, Any] = {"id": ref, "src": self.device_id, "dst": src}
        try:
            reply["result"] = self._call(frame.get("method"), frame.get("params") or {})
        except RpcError as exc:
            reply["error"] = {"code": exc.code, "message": str(exc)}
        self.send(f"{src}/rpc", json.dumps(reply, separators=(",", ":")).encode(), qos=1)

    def _call(self, method: Any, params: Any) -> Any:
        if not isinstance(params, dict):
            raise RpcError(-103, "Invalid argument 'params': expected object")
        if method == "Shelly.GetStatus":
            return {self.component: self._status()}
        if not isinstance(method, str) or not method.startswith(f"{self.method_prefix}."):
            raise RpcError(404, f"No handler for {str(method)[:60]}")
        action = method.split(".", 1)[1]
        if params.get("id") != 0:
            raise RpcError(-105, f"Argument 'id', value {params.get('id')!r} not found!")
        if action == "GetStatus":
            return self._status()
        if action == "Toggle":
            self._change(replace(self.light, output=not self.light.output))
            return None
        if action == "Set":
            self._change(self._set(params))
            return None
        raise RpcError(404, f"No handler for {method[:60]}")

    def _set(self, params: dict[str, Any]) -> ShellyGen2Light:
        light = self.light
        if "on" in params:
            if not isinstance(params["on"], bool):
                raise RpcError(-103, "Invalid argument 'on': expected boolean")
            light = replace(light, output=params["on"])
        if "brightness" in params:
            value = params["brightness"]
            if not _number(value) or not 0 <= value <= 100:
                raise RpcError(-103, "Invalid argument 'brightness': expected 0-100")
            light = replace(light, brightness=round(value))
        if "rgb" in params and self.profile != "light":
            rgb = params["rgb"]
            if not (isinstance(rgb, list) and len(rgb) == 3 and all(_byte(c) for c in rgb)):
                raise RpcError(-103, "Invalid argument 'rgb': expected [r, g, b], each 0-255")
            r, g, b = self.wrong(RGB(*rgb))
            light = replace(light, rgb=(r, g, b))
        if "white" in params and self.profile == "rgbw":
            if not _byte(params["white"]):
                raise RpcError(-103, "Invalid argument 'white': expected 0-255")
            light = replace(light, white=params["white"])
        if "transition_duration" in params and not _number(params["transition_duration"]):
            raise RpcError(-103, "Invalid argument 'transition_duration': expected number")
        return light

    def _change(self, light: ShellyGen2Light) -> None:
        before = self.light
        self.apply(light)
        old, new = asdict(before), asdict(light)
        changed = {k: v for k, v in new.items() if old[k] != v}
        if self.profile == "light":
            changed.pop("rgb", None)
        if self.profile != "rgbw":
            changed.pop("white", None)
        if not changed:
            return
        fields = {"id": 0, **_wire(changed), "source": "MQTT"}
        events = f"{self.prefix}/events/rpc"
        self.report(events, _notify(self.device_id, self.prefix, {self.component: fields}))
        if self.status_updates:
            self._publish_status()

    def _status(self) -> dict[str, Any]:
        light = self.light
        status: dict[str, Any] = {"id": 0, "source": "MQTT", "output": light.output}
        status["brightness"] = light.brightness
        if self.profile != "light":
            status["rgb"] = list(light.rgb)
        if self.profile == "rgbw":
            status["white"] = light.white
        status.update(
            temperature={"tC": 41.2, "tF": 106.2},
            aenergy={"total": 12.345, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1785447000},
            apower=6.1 if light.output else 0.0,
            voltage=24.1,
            current=0.25 if light.output else 0.0,
        )
        return status

    def _publish_status(self) -> None:
        body = json.dumps(self._status(), separators=(",", ":")).encode()
        self.report(f"{self.prefix}/status/{self.component}", body)


def _notify(device_id: str, prefix: str, params: dict[str, Any]) -> bytes:
    frame = {
        "src": device_id,
        "dst": f"{prefix}/events",
        "method": "NotifyStatus",
        "params": {"ts": round(time.time(), 2), **params},
    }
    return json.dumps(frame, separators=(",", ":")).encode()


def _wire(changed: dict[str, Any]) -> dict[str, Any]:
    out = dict(changed)
    if "rgb" in out:
        out["rgb"] = list(out["rgb"])
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _byte(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255
