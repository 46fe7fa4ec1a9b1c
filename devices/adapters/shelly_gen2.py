"""Shelly Gen2/Gen3 lighting controllers (Plus RGBW PM and kin), RPC over MQTT.

Sources: the Shelly API docs (shelly-api-docs.shelly.cloud/gen2): ComponentsAndServices
`RGBW`, `RGB`, `Light` (`*.Set` parameters and status), `Mqtt` (`<topic_prefix>/rpc`,
`<topic_prefix>/events/rpc`, `<topic_prefix>/status/<component>:<id>`,
`<topic_prefix>/online`), General `RPCProtocol` (request, response and error frames) and
`Notifications` (`NotifyStatus` carries the changed part of a component's status).

- Command: `<prefix>/rpc` with `{"id":<ref>,"src":"<prefix>-illuminate","method":
  "RGBW.Set","params":{"id":0,"on":true,"rgb":[r,g,b],"white":0,"brightness":1-100}}`
  (`transition_duration` in seconds when the target fades). The method follows the
  device profile: `RGBW.Set`, `RGB.Set`, or `Light.Set` (a white dimmer: no colour).
  The colour is sent as it is with the level as brightness: Shelly multiplies them.
- Replies go to `<src>/rpc`: `result` means accepted, `error` refused with a message.
  A reply says the command arrived, not that the light changed. `src` is derived from the
  prefix, so each device's replies have a topic of their own and its broker account stays
  scoped to its own topics.
- State (strength `readback`, the device reports its output component's status):
  `NotifyStatus` on `<prefix>/events/rpc`, e.g. `{"method":"NotifyStatus","params":
  {"ts":..,"rgbw:0":{"id":0,"output":true,"brightness":80,"rgb":[0,0,255]}}}`, and the whole
  status on `<prefix>/status/rgbw:0` when "generic status update over MQTT" is on.
- Availability: `<prefix>/online` is `true` or `false`, retained.
- State query: `<Component>.GetStatus`, answered on `<src>/rpc` (strength `readback`).
"""

from __future__ import annotations

from typing import Any, Literal

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
    Reply,
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
    number,
    rgb_list,
    target_output,
)
from devices.colour import PERCENT, PERCENT_FROM_1, Colour
from devices.protocol import LightState

Profile = Literal["rgbw", "rgb", "light"]
_METHOD = {"rgbw": "RGBW", "rgb": "RGB", "light": "Light"}
_MAX_REASON = 200


class ShellyGen2Config(AdapterConfig):
    prefix: str
    profile: Profile = "rgbw"

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_topic(value, "prefix")


class ShellyGen2Adapter(Adapter):
    name = "shelly-gen2"
    strength = Strength.READBACK
    Config = ShellyGen2Config

    def __init__(self, config: ShellyGen2Config) -> None:
        self.config = config
        self.controls_colour = config.profile != "light"
        self.component = f"{config.profile}:0"
        self.src = f"{config.prefix}-illuminate"
        prefix = config.prefix
        self._rpc, self._events = f"{prefix}/rpc", f"{prefix}/events/rpc"
        self._status, self._online = f"{prefix}/status/{self.component}", f"{prefix}/online"
        self._replies = f"{self.src}/rpc"
        self._topics = AdapterTopics(
            reports=(self._online, self._events, self._status, self._replies),
            commands=(self._rpc,),
        )

    def _request(self, method: str, params: dict[str, object], ref: int) -> Command:
        body = {"id": ref, "src": self.src, "method": method, "params": params}
        return Command(self._rpc, encode_json(body))

    def command(self, target: LightState, *, ref: int = 0) -> tuple[Command, ...]:
        out = target_output(target)
        params: dict[str, object] = {"id": 0, "on": out.on}
        if out.on:
            params["brightness"] = PERCENT_FROM_1.to_device(target.level, lit=True)
            if self.config.profile != "light":
                params["rgb"] = list(out.colour)
            if self.config.profile == "rgbw":
                params["white"] = 0
        if target.transition_s:
            params["transition_duration"] = target.transition_s
        return (self._request(f"{_METHOD[self.config.profile]}.Set", params, ref),)

    def state_request(self, *, ref: int = 0) -> StateRequest:
        method = f"{_METHOD[self.config.profile]}.GetStatus"
        return StateRequest((self._request(method, {"id": 0}, ref),), Strength.READBACK)

    def _parse(self, topic: str, payload: bytes) -> Parsed:
        if topic == self._online:
            text = decode_text(payload).strip()
            if text in ("true", "false"):
                return Report(
                    availability=Availability.ONLINE if text == "true" else Availability.OFFLINE
                )
            raise BadMessage(f"online {text[:40]!r} is not true or false")
        data = decode_object(payload)
        if topic == self._status:
            return Report(state=self._light(data))
        if topic == self._replies:
            return self._reply(data)
        method = data.get("method")
        if method not in ("NotifyStatus", "NotifyFullStatus"):
            return Ignored(f"notification {str(method)[:40]!r}")
        params = data.get("params")
        if not isinstance(params, dict):
            raise BadMessage("notification params is not an object")
        status = params.get(self.component)
        if status is None:
            return Ignored(f"a notification without {self.component}")
        if not isinstance(status, dict):
            raise BadMessage(f"{self.component} is not an object")
        return Report(state=self._light(status))

    def _reply(self, data: dict[str, Any]) -> Parsed:
        ref = data.get("id")
        if isinstance(ref, bool) or not isinstance(ref, int | str | None):
            raise BadMessage("reply id is neither a number nor text")
        if isinstance(ref, str):
            ref = ref[:100]
        if "error" in data:
            error = data["error"]
            if not isinstance(error, dict):
                raise BadMessage("reply error is not an object")
            reason = f"{error.get('code')}: {error.get('message')}"[:_MAX_REASON]
            return Report(reply=Reply(ref, False, reason))
        if "result" not in data:
            raise BadMessage("reply has neither result nor error")
        result = data["result"]
        state = None
        if isinstance(result, dict) and "output" in result:  # a GetStatus answer
            state = self._light(result)
        return Report(state=state, reply=Reply(ref, True))

    def _light(self, status: dict[str, Any]) -> Reported:
        raw = {k: status[k] for k in ("output", "brightness", "rgb", "white") if k in status}
        on = None
        if "output" in status:
            if not isinstance(status["output"], bool):
                raise BadMessage("output is not true or false")
            on = status["output"]
        brightness = None
        if "brightness" in status:
            brightness = PERCENT.to_percent(number(status["brightness"], "brightness", 0, 100))
        colour: Colour | None = rgb_list(status["rgb"], "rgb") if "rgb" in status else None
        white = integer(status["white"], "white", 0, 255) if "white" in status else None
        return Reported(on=on, colour=colour, brightness=brightness, white=white, raw=freeze(raw))
