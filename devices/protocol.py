"""Native protocol v1: topics and payload models, the one codec both sides use.

Every payload is parsed once, at the edge, into a frozen pydantic model. Parsing is
strict: unknown keys are refused, sizes are bounded, ids and timestamps are validated.
`decode` raises `ProtocolError` with a machine-readable `kind`, so callers can count
bad input by cause without parsing messages. Every number has bounds that every
database backend can store: a number outside them is `out_of_range`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

PROTOCOL_VERSION = 1
DEFAULT_ROOT = "illuminate/v1"
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_STEPS = 512
MAX_REASON_CHARS = 500
MAX_VERSION = 2**31 - 1
"""The highest plan version: what a 32-bit signed column holds on every database."""
MAX_REPORTED_VERSION = 2**30
"""The highest plan version a device may report holding. Below MAX_VERSION, so the
controller can always issue a version past the one a device reports."""
MAX_CLOCK_OFFSET_MS = 10**9
"""About 11.6 days: any offset reported beyond it is refused as out of range."""

DEVICE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,47}$"
_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)
_TOPIC_ROOT_RE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_COLOR_RE = re.compile(r"^#[0-9A-Fa-f]{6}$")


class ProtocolError(ValueError):
    """A payload or topic that the protocol refuses. `kind` names the cause."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def is_device_id(value: str) -> bool:
    return bool(_DEVICE_ID_RE.fullmatch(value))


def check_device_id(value: str) -> str:
    if not isinstance(value, str) or not is_device_id(value):
        raise ValueError(
            f"invalid device id {value!r}: use 1-48 lower-case letters, digits and '-',"
            " starting with a letter or digit"
        )
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a time zone (RFC 3339, for example ...Z)")
    return value.astimezone(UTC)


def format_instant(value: datetime) -> str:
    """RFC 3339 UTC with a Z, milliseconds only when they are not zero."""
    value = _utc(value)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


Instant = Annotated[
    datetime,
    AfterValidator(_utc),
    PlainSerializer(format_instant, return_type=str, when_used="json"),
]
DeviceId = Annotated[str, AfterValidator(check_device_id)]


def _check_color(value: str) -> str:
    if not _COLOR_RE.fullmatch(value):
        raise ValueError("color must be #RRGGBB")
    return value.upper()


Color = Annotated[str, AfterValidator(_check_color)]
"""#RRGGBB, kept in upper case."""


class _Wire(BaseModel):
    # strict: no coercion ("7" is not a version, 1 is not true, a number is not a time);
    # RFC 3339 strings still parse as instants because decode() validates JSON text.
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=1000, strict=True)


class LightState(_Wire):
    """What a fixture shows. `color` is #RRGGBB, `level` a percentage."""

    on: bool
    color: Color = "#000000"
    level: int = Field(default=0, ge=0, le=100)
    transition_s: float = Field(default=0, ge=0, le=3600)

    def matches(self, other: LightState) -> bool:
        """Same visible output: off equals off whatever the colour."""
        if not self.on and not other.on:
            return True
        return (self.on, self.color, self.level) == (other.on, other.color, other.level)


OFF = LightState(on=False)


class PlanStep(_Wire):
    at: Instant
    state: LightState


class Plan(_Wire):
    v: Literal[1] = 1
    version: int = Field(ge=1, le=MAX_VERSION)
    issued_at: Instant
    not_after: Instant | None = None
    steps: list[PlanStep] = Field(max_length=MAX_STEPS)
    test: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Plan:
        ats = [step.at for step in self.steps]
        if ats != sorted(ats) or len(set(ats)) != len(ats):
            raise ValueError("steps must be in strictly increasing time order")
        return self

    def step_at(self, now: datetime) -> PlanStep | None:
        """The step in effect at `now`: the last one whose instant has come."""
        current = None
        for step in self.steps:
            if step.at <= now:
                current = step
            else:
                break
        return current


class Stage(StrEnum):
    RECEIVED = "received"
    ARMED = "armed"
    APPLIED = "applied"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"


SENSOR_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
MAX_SENSOR_COUNT = 65535
MAX_LUX = 10**6


class SensorCounts(_Wire):
    """A colour sensor's raw channel counts (clear, red, green, blue), as it read them."""

    c: int = Field(ge=0, le=MAX_SENSOR_COUNT)
    r: int = Field(ge=0, le=MAX_SENSOR_COUNT)
    g: int = Field(ge=0, le=MAX_SENSOR_COUNT)
    b: int = Field(ge=0, le=MAX_SENSOR_COUNT)


class Reading(_Wire):
    """What a light sensor at the monument saw after a step was applied (optional in an
    `applied` ack). `color` is the chroma it saw (#RRGGBB, brightest channel FF, or
    #000000 when it saw no light), `level` the output it saw in percent of the fixture's
    full output, `sensor` the sensor's model; `lux` and `counts` are the raw figures,
    when it has them."""

    color: Color
    level: float = Field(ge=0, le=100)
    sensor: str = Field(pattern=SENSOR_NAME_PATTERN)
    lux: float | None = Field(default=None, ge=0, le=MAX_LUX)
    counts: SensorCounts | None = None


class Ack(_Wire):
    v: Literal[1] = 1
    version: int = Field(ge=1, le=MAX_VERSION)
    stage: Stage
    device: DeviceId | None = None
    step_at: Instant | None = None
    applied_at: Instant | None = None
    state: LightState | None = None
    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)
    clock_offset_ms: int | None = Field(
        default=None, ge=-MAX_CLOCK_OFFSET_MS, le=MAX_CLOCK_OFFSET_MS
    )
    reading: Reading | None = None
    """Applied acks of a device with a light sensor: what the sensor saw (optional)."""

    @model_validator(mode="after")
    def _applied_has_evidence(self) -> Ack:
        if self.stage is Stage.APPLIED and (
            self.step_at is None or self.applied_at is None or self.state is None
        ):
            raise ValueError("an applied ack needs step_at, applied_at and state")
        if self.reading is not None and self.stage is not Stage.APPLIED:
            raise ValueError("only an applied ack carries a reading")
        return self


class DeviceState(_Wire):
    """The actual output, reported retained by the device."""

    v: Literal[1] = 1
    device: DeviceId | None = None
    state: LightState
    plan_version: int | None = Field(default=None, ge=0, le=MAX_REPORTED_VERSION)
    step_at: Instant | None = None
    reported_at: Instant
    firmware: str | None = Field(default=None, max_length=100)
    clock_synced: bool | None = None
    clock_offset_ms: int | None = Field(
        default=None, ge=-MAX_CLOCK_OFFSET_MS, le=MAX_CLOCK_OFFSET_MS
    )
    """The controller's clock minus the device's, as the device measured it from the
    controller's clock beacons (None: not measured yet)."""


class DeviceStatus(_Wire):
    """Birth (`online: true`) and last will (`online: false`).

    `plan_version` (optional, birth only): the highest plan version the device holds,
    which it kept across a reboot; a device without a plan, or of an older firmware,
    leaves it out.
    """

    v: Literal[1] = 1
    device: DeviceId | None = None
    online: bool
    firmware: str | None = Field(default=None, max_length=100)
    since: Instant | None = None
    plan_version: int | None = Field(default=None, ge=1, le=2**53)


class ControllerStatus(_Wire):
    """Birth (`online: true`, retained) and last will (`online: false`) of the controller;
    or, with `now`, a clock beacon (not retained): the controller's time when it sent
    it, and the offset beyond which a device applies by the controller's time."""

    v: Literal[1] = 1
    online: bool
    since: Instant | None = None
    now: Instant | None = None
    clock_tolerance_ms: int | None = Field(default=None, ge=1, le=MAX_CLOCK_OFFSET_MS)


class Kind(StrEnum):
    PLAN = "plan"
    ACK = "ack"
    STATE = "state"
    STATUS = "status"


@dataclass(frozen=True)
class DeviceTopic:
    device_id: str
    kind: Kind


@dataclass(frozen=True)
class Topics:
    """The topic builder and parser, in one place."""

    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        if not _TOPIC_ROOT_RE.fullmatch(self.root):
            raise ValueError(
                f"invalid topic root {self.root!r}: use levels of letters, digits, '_' and '-'"
            )

    def device(self, device_id: str, kind: Kind) -> str:
        check_device_id(device_id)
        return f"{self.root}/devices/{device_id}/{kind.value}"

    def plan(self, device_id: str) -> str:
        return self.device(device_id, Kind.PLAN)

    def ack(self, device_id: str) -> str:
        return self.device(device_id, Kind.ACK)

    def state(self, device_id: str) -> str:
        return self.device(device_id, Kind.STATE)

    def status(self, device_id: str) -> str:
        return self.device(device_id, Kind.STATUS)

    @property
    def controller_status(self) -> str:
        return f"{self.root}/controller/status"

    @property
    def controller_barrier(self) -> str:
        """The controller's own catch-up barrier (controller/barrier.py): it alone
        writes and reads it."""
        return f"{self.root}/controller/barrier"

    def device_filter(self, kind: Kind) -> str:
        """Subscription filter for one kind of device topic, all devices."""
        return f"{self.root}/devices/+/{kind.value}"

    def parse(self, topic: str) -> DeviceTopic | None:
        """The device and kind a topic names, or None when it is not a device topic."""
        prefix = f"{self.root}/devices/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        if len(parts) != 2 or not is_device_id(parts[0]):
            return None
        try:
            kind = Kind(parts[1])
        except ValueError:
            return None
        return DeviceTopic(parts[0], kind)


M = TypeVar("M", bound=BaseModel)
_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def decode(model: type[M], payload: bytes | bytearray | str) -> M:
    """Parse one payload strictly. Raises ProtocolError(kind=...) on any fault."""
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("oversized", f"{len(raw)} bytes is over {MAX_PAYLOAD_BYTES}")
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("not_json", str(exc)) from None
    except RecursionError:
        raise ProtocolError("not_json", "nested too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid", "payload must be a JSON object")
    version = data.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError("wrong_version", f"unsupported v={version!r}")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        if first["loc"][:1] == ("stage",):
            kind = "unknown_stage"
        elif first["type"] in _RANGE_ERRORS:
            kind = "out_of_range"
        else:
            kind = "invalid"
        raise ProtocolError(kind, f"{where}: {first['msg']}") from None


def encode(message: BaseModel) -> bytes:
    """Compact JSON, no unset optional fields, timestamps as RFC 3339 UTC."""
    return message.model_dump_json(exclude_none=True).encode()
