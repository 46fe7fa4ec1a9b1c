"""The adapter interface for third-party lighting controllers, and the shapes it speaks in.

An adapter is pure: it builds MQTT messages and reads them, and never touches a network
or a clock. For one registered device it answers:

- `command(target)`: the live messages that make the device show `target` (a native
  `LightState`). They are never retained: a retained command replays after a reboot
  (Tasmota's "ghost switching").
- `topics`: what the device publishes (the controller subscribes to these, and the
  device's broker account may write them) and what it reads (the account may read them).
  All are exact topics, no wildcards, so the controller can route a message by lookup.
- `parse(topic, payload)`: one device message as a `Report` (some reported state and/or
  an availability and/or a command reply), `Ignored` (nothing this adapter uses), or
  `Malformed` (with the reason). It never raises, whatever the bytes.
- `confirms(target, reported)`: whether what the device reported matches the target
  within the tolerance its encoding allows. Off matches off whatever the colour; a wrong
  colour never matches.
- `strength`: how strong a matching report is (`echo` when the firmware repeats its own
  target; `readback` when the device re-read its output).
- `state_request()`: a message that makes the device report again, where it has one,
  with the strength of the reports it brings (Zigbee2MQTT's `/get` is a real `readback`).
- `bridge`: None for a device that is its own MQTT client; a `Bridge` where one client
  speaks for several registered devices (a Zigbee2MQTT bridge and its lights), which then
  share that client's one broker account.

Devices report in pieces (WLED sends brightness and colour on separate topics), so the
controller keeps one `Reported` per device and folds each new one in with `merged`.

What a target means on a device: the light shows the target colour times its level, as
a native fixture does. `target_output` gives that as a chroma and an effective level;
each adapter sends whichever its vendor's encoding takes.
"""

from __future__ import annotations

import functools
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from devices.colour import (
    DEFAULT_TOLERANCE,
    RGB,
    Colour,
    Tolerance,
    chroma,
    colour_matches,
    hex_to_rgb,
    intensity_percent,
    value_percent,
)
from devices.protocol import LightState

MAX_PAYLOAD_BYTES = 64 * 1024
"""Vendor messages above this size are refused unread."""
MAX_TOPIC_CHARS = 200


class Strength(StrEnum):
    """How a confirmation was obtained, weakest first."""

    ECHO = "echo"
    READBACK = "readback"
    MEASURED = "measured"  # a light sensor saw it; reserved for sensors


class Availability(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


def combined(by_topic: Mapping[str, Availability]) -> Availability | None:
    """A device's availability from what each of its availability topics last said:
    online only while every one says online. A Zigbee light is behind its bridge: the
    bridge's last will (`bridge/state` offline) leaves the light's own retained
    `online` in place, and a controller that subscribes afresh gets that one last, so
    no single topic has the last word. None: none heard yet."""
    if not by_topic:
        return None
    if any(a is Availability.OFFLINE for a in by_topic.values()):
        return Availability.OFFLINE
    return Availability.ONLINE


@dataclass(frozen=True)
class Command:
    """One MQTT message to a device. `retain` is always False, and checked."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False

    def __post_init__(self) -> None:
        if self.retain:
            raise ValueError("commands to third-party devices are never retained")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos {self.qos!r} is not 0, 1 or 2")


@dataclass(frozen=True)
class StateRequest:
    """Messages that make a device report its state again, and what that report proves."""

    commands: tuple[Command, ...]
    strength: Strength


@dataclass(frozen=True)
class AdapterTopics:
    """`reports`: the device publishes, the controller subscribes (in this order: the
    order matters where one topic speaks for several devices, see Zigbee2MQTT).
    `commands`: the controller publishes, the device subscribes.
    Together they are the scope of the device's broker account."""

    reports: tuple[str, ...]
    commands: tuple[str, ...]


@dataclass(frozen=True)
class Bridge:
    """One MQTT client that speaks for several registered devices (a Zigbee2MQTT bridge
    for its lights). They share its broker account, named `account` (a valid device id:
    it is the bridge's username and client id), whose scope is every topic under `base`
    (`<base>/#`), both ways: the bridge owns its base topic, and its lights can be added,
    renamed or removed with no change of rights on the broker."""

    account: str
    base: str

    @property
    def scope_filter(self) -> str:
        return f"{self.base}/#"


@dataclass(frozen=True)
class OtherColour:
    """The device shows something that is not a colour we can compare (a colour
    temperature, a white-only mode, an effect). It never matches a colour target."""

    description: str


@dataclass(frozen=True)
class Reported:
    """What a device said about its output. None: this message did not say.

    - `colour`: in the device's own encoding (RGB, HSV or xy), or `OtherColour`.
    - `brightness`: percent, converted from the device's scale.
    - `white`: a separate white channel, 0-255, where the device has one.
    - `raw`: the figures as the device sent them, for staff to see.
    - `reset`: the device says its state is unknown now (Home Assistant's
      `"state": null`): what was reported before no longer holds.
    """

    on: bool | None = None
    colour: Colour | OtherColour | None = None
    brightness: float | None = None
    white: int | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    reset: bool = False

    def merged(self, newer: Reported) -> Reported:
        """This report overlaid with a newer one: what the newer one says wins."""
        if newer.reset:
            return replace(newer, reset=False)
        return Reported(
            on=newer.on if newer.on is not None else self.on,
            colour=newer.colour if newer.colour is not None else self.colour,
            brightness=newer.brightness if newer.brightness is not None else self.brightness,
            white=newer.white if newer.white is not None else self.white,
            raw=MappingProxyType({**self.raw, **newer.raw}),
        )

    @property
    def empty(self) -> bool:
        return (
            not self.reset and self.on is None and self.colour is None and self.brightness is None
        )


@dataclass(frozen=True)
class Reply:
    """A device's answer to a command: accepted, or refused with its reason. It says the
    command arrived, never that the light changed."""

    ref: int | str | None
    accepted: bool
    reason: str | None = None


@dataclass(frozen=True)
class Report:
    state: Reported | None = None
    availability: Availability | None = None
    reply: Reply | None = None


@dataclass(frozen=True)
class Ignored:
    """A message this adapter does not use (another command's result, an event)."""

    reason: str


@dataclass(frozen=True)
class Malformed:
    """A message on the device's topics that could not be read. Count it, skip it."""

    reason: str


Parsed = Report | Ignored | Malformed


class AdapterConfigError(ValueError):
    """A registration the adapter refuses. The message names the field and the fault."""


class AdapterConfig(BaseModel):
    """Base for each adapter's `config` at registration: strict, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class BadMessage(Exception):
    """Raised inside an adapter's `_parse` for a message it cannot read."""


@dataclass(frozen=True)
class Output:
    """What a target shows: off, or a chroma (brightest channel 255) at an effective level
    (percent of full output: the target's level times its colour's own value)."""

    on: bool
    colour: RGB
    chroma: RGB
    level: float


def target_output(target: LightState) -> Output:
    """The visible output of a target. On at level 0, or on in black, shows nothing, and
    is sent and confirmed as off."""
    return _output(target.on, target.color, target.level)


@functools.lru_cache(maxsize=4096)
def _output(on: bool, color: str, level: float) -> Output:
    # memoised: a fan-out sends thousands of lights the same few targets, and the colour
    # arithmetic was a third of each live command's encoding
    colour = hex_to_rgb(color)
    if not on or level == 0 or max(colour) == 0:
        return Output(False, colour, chroma(colour), 0.0)
    return Output(True, colour, chroma(colour), level * value_percent(colour) / 100)


class Adapter(ABC):
    """One registered third-party device. Subclasses set `name`, `strength`, `Config`."""

    name: ClassVar[str]
    strength: ClassVar[Strength]
    Config: ClassVar[type[AdapterConfig]]
    tolerance: Tolerance = DEFAULT_TOLERANCE
    controls_colour: bool = True
    """False for a white-only light: only on/off and brightness are compared."""

    _topics: AdapterTopics
    """Set by each adapter's constructor from its config."""

    @property
    def topics(self) -> AdapterTopics:
        return self._topics

    @property
    def bridge(self) -> Bridge | None:
        """The client this device speaks through, when it shares one (see `Bridge`)."""
        return None

    @abstractmethod
    def command(self, target: LightState, *, ref: int = 0) -> tuple[Command, ...]:
        """The live messages for `target`. `ref` is the controller's correlation number
        (the command's version); adapters whose vendor echoes an id use it."""

    def state_request(self, *, ref: int = 0) -> StateRequest | None:
        """Messages that make the device report again, or None where it has none."""
        return None

    @abstractmethod
    def _parse(self, topic: str, payload: bytes) -> Parsed:
        """Read one message. Raise BadMessage (or anything) for bad input."""

    def parse(self, topic: str, payload: bytes | bytearray) -> Parsed:
        """One device message, read. Never raises."""
        try:
            if not isinstance(topic, str):
                return Malformed("topic is not text")
            if not isinstance(payload, bytes | bytearray):
                return Malformed("payload is not bytes")
            if len(payload) > MAX_PAYLOAD_BYTES:
                return Malformed(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}")
            if topic not in self.topics.reports:
                return Ignored(f"{topic!r} is not one of this device's report topics")
            parsed = self._parse(topic, bytes(payload))
        except BadMessage as exc:
            return Malformed(str(exc))
        except Exception as exc:  # a parser bug must not stop the intake either
            return Malformed(f"unreadable: {type(exc).__name__}: {exc}")
        if isinstance(parsed, Report) and _says_nothing(parsed):
            return Ignored("a message without light fields")
        return parsed

    def confirms(self, target: LightState, reported: Reported) -> bool:
        """Whether `reported` shows `target`, within this adapter's tolerance."""
        want = target_output(target)
        if not want.on:
            return reported.on is False
        if reported.on is not True or reported.brightness is None:
            return False
        tol = self.tolerance
        if not self.controls_colour:
            return abs(reported.brightness - target.level) <= tol.level
        colour = reported.colour
        if colour is None or isinstance(colour, OtherColour):
            return False
        if reported.white is not None and reported.white > tol.white:
            return False
        if not colour_matches(colour, want.colour, tol):
            return False
        return abs(intensity_percent(colour, reported.brightness) - want.level) <= tol.level


def _says_nothing(report: Report) -> bool:
    if report.availability is not None or report.reply is not None:
        return False
    return report.state is None or report.state.empty


# ---- reading and writing vendor payloads: shared by the vendor modules ---------------


def encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _no_constant(name: str) -> Any:
    raise BadMessage(f"{name} is not a number")


def decode_json(payload: bytes) -> Any:
    """JSON text to Python, refusing non-UTF-8, NaN/Infinity and absurdly long numbers."""
    text = decode_text(payload)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BadMessage(f"not JSON: {exc.msg} at {exc.pos}") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise BadMessage(f"not JSON: {exc}") from None


def decode_object(payload: bytes) -> dict[str, Any]:
    data = decode_json(payload)
    if not isinstance(data, dict):
        raise BadMessage("payload is not a JSON object")
    return data


def decode_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadMessage("payload is not UTF-8") from None


def number(value: Any, what: str, low: float, high: float) -> float:
    """A JSON number within [low, high]; booleans are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadMessage(f"{what} is {type(value).__name__}, not a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise BadMessage(f"{what} {value!r} is outside {low:g}-{high:g}")
    return float(value)


def integer(value: Any, what: str, low: int, high: int) -> int:
    """A JSON integer within [low, high] (a float with no fraction is accepted)."""
    got = number(value, what, low, high)
    if got != int(got):
        raise BadMessage(f"{what} {value!r} is not a whole number")
    return int(got)


def rgb_list(value: Any, what: str) -> RGB:
    """[r, g, b] (a fourth element, white, is ignored here)."""
    if not isinstance(value, list) or len(value) not in (3, 4):
        raise BadMessage(f"{what} is not a list of 3 channels")
    return RGB(*(integer(c, what, 0, 255) for c in value[:3]))


def freeze(raw: Mapping[Any, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(raw))


def check_topic(value: str, what: str, *, levels: bool = True, max_chars: int = 150) -> str:
    """A topic (or a piece of one) from a registration: no wildcards, no NUL, not a
    `$` system topic, no empty levels; `levels=False` refuses `/` too."""
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > max_chars:
        raise ValueError(f"{what} is {len(value)} characters; at most {max_chars}")
    if any(ch in value for ch in "+#\x00"):
        raise ValueError(f"{what} {value!r} must not contain '+', '#' or NUL")
    if value.startswith("$"):
        raise ValueError(f"{what} {value!r} must not start with '$'")
    if not levels and "/" in value:
        raise ValueError(f"{what} {value!r} must be one topic level, without '/'")
    if "" in value.split("/"):
        raise ValueError(f"{what} {value!r} has an empty topic level (leading, trailing or //)")
    if any(ch.isspace() and ch != " " for ch in value):
        raise ValueError(f"{what} {value!r} must not contain tabs or line breaks")
    return value
