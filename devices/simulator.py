"""The fleet simulator: many native devices in one process, each its own MQTT client.

Every simulated device has its own connection, client id and credentials (username =
device id), so the broker's ACL treats it exactly as a real device. All of them run on
one event loop (`devices.host`), the same sessions and protocol state machine the
single agent runs, so one process carries thousands of devices. A fleet comes from a
JSON or YAML file (a list of devices, or `{"devices": [...]}`) or is generated from a
count and a prefix. Knobs make some devices misbehave: start offline, never ack, ack
late, reject.

Each device keeps what it holds (plan, version, last step) in a `MemoryPlanStore` by
default: ten thousand devices must not write a file per step. Given a `state_dir`, each
keeps a `FilePlanStore` there (`<id>.json`), so a fleet restarted on the same folder
resumes its plans as rebooted agents do. Given an `applied_log`, every step any device
applies is appended to that file (`devices.appliedlog`), so a test can tell afterwards
every version each device applied.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from devices.appliedlog import AppliedLog
from devices.clock import Clock, system_clock
from devices.connection import BrokerAddress
from devices.fixture import SimulatedFixture
from devices.host import ConnectionSummary, DeviceHost
from devices.native import FIRMWARE, Behaviour
from devices.pacing import Pacing
from devices.planstore import FilePlanStore, MemoryPlanStore, PlanStore
from devices.protocol import DeviceId, Topics, check_device_id
from devices.sensor import SimulatedSensor
from devices.session import DeviceSession

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "sim-"
FLEET_HISTORY = 32
"""Acks and applied steps each simulated device remembers (bounded: fleets are large)."""


class SimSensor(BaseModel):
    """A simulated device's light sensor: it sees what the fixture shows, or, with
    `wrong_colour` (#RRGGBB), that colour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wrong_colour: str | None = Field(default=None, pattern=r"^#[0-9A-Fa-f]{6}$")


class SimDevice(BaseModel):
    """One simulated device. `start_offline_s`: connect only after that many seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: DeviceId
    password: str = Field(min_length=1, max_length=1000)
    behaviour: Behaviour = Behaviour()
    start_offline_s: float | None = Field(default=None, ge=0, le=86400)
    sensor: SimSensor | None = None
    """A simulated light sensor (its readings go in the applied acks)."""


class FleetSpec(BaseModel):
    """The devices of a simulated fleet. Ids are unique."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: list[SimDevice] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        for device in self.devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} appears more than once")
            seen.add(device.id)
        return self

    @classmethod
    def load(cls, path: str | Path) -> FleetSpec:
        """Read a fleet file: JSON (`.json`) or YAML (anything else).

        Raises ValueError with a readable message on any fault.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read fleet file {path}: {exc.strerror or exc}") from None
        try:
            data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"fleet file {path} is not valid JSON/YAML: {exc}") from None
        if isinstance(data, list):
            data = {"devices": data}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}"
                for err in exc.errors()[:5]
            )
            raise ValueError(f"fleet file {path}: {problems}") from None

    @classmethod
    def generate(cls, count: int, password: str, prefix: str = DEFAULT_PREFIX) -> FleetSpec:
        """`count` well-behaved devices named prefix001, prefix002, ... sharing a password."""
        if count < 1:
            raise ValueError("the fleet needs at least one device")
        width = max(3, len(str(count)))
        ids = [f"{prefix}{n:0{width}d}" for n in range(1, count + 1)]
        for device_id in (ids[0], ids[-1]):
            try:
                check_device_id(device_id)
            except ValueError:
                raise ValueError(
                    f"prefix {prefix!r} makes invalid device ids such as {device_id!r}: "
                    "use lower-case letters, digits and '-'"
                ) from None
        return cls(devices=[SimDevice(id=i, password=password) for i in ids])

    def with_knobs(
        self,
        *,
        offline: int = 0,
        silent: int = 0,
        late: int = 0,
        reject: int = 0,
        offline_s: float = 10.0,
        late_s: float = 5.0,
        reject_reason: str | None = None,
    ) -> FleetSpec:
        """Make some devices misbehave, in disjoint groups taken in order.

        The first `offline` devices connect only after `offline_s` seconds, the next
        `silent` never ack, the next `late` ack `late_s` seconds late, the next `reject`
        reject every plan. The rest keep the behaviour they had.
        """
        counts = {"offline": offline, "silent": silent, "late": late, "reject": reject}
        for name, n in counts.items():
            if n < 0:
                raise ValueError(f"--{name} must not be negative")
        if sum(counts.values()) > len(self.devices):
            raise ValueError(
                f"the knobs ask for {sum(counts.values())} devices but the fleet has "
                f"{len(self.devices)}"
            )
        reason = {"reject_reason": reject_reason} if reject_reason else {}
        devices = list(self.devices)
        i = 0
        for _ in range(offline):
            devices[i] = devices[i].model_copy(update={"start_offline_s": offline_s})
            i += 1
        for mode, n, extra in (
            ("never", silent, {}),
            ("late", late, {"ack_delay_s": late_s}),
            ("reject", reject, reason),
        ):
            for _ in range(n):
                behaviour = Behaviour.model_validate(
                    {**devices[i].behaviour.model_dump(), "ack": mode, **extra}
                )
                devices[i] = devices[i].model_copy(update={"behaviour": behaviour})
                i += 1
        return FleetSpec(devices=devices)


class Fleet:
    """Runs the devices of a `FleetSpec` on one event loop, each with its own connection.

    `agents[id]` is each device's `DeviceSession` (the same observation API as `Agent`),
    `fixtures[id]` its simulated fixture, `stores[id]` its plan store. Connecting is
    paced by `pacing`; `summary()` tells how many devices are online and why the others
    are not.
    """

    def __init__(
        self,
        spec: FleetSpec,
        broker: BrokerAddress,
        *,
        topics: Topics | None = None,
        clock: Clock = system_clock,
        firmware: str = FIRMWARE,
        ca_file: str | None = None,
        pacing: Pacing | None = None,
        keepalive_s: int = 30,
        history: int = FLEET_HISTORY,
        name: str = "fleet",
        state_dir: str | Path | None = None,
        applied_log: str | Path | None = None,
    ) -> None:
        self.spec = spec
        self.applied_log = AppliedLog(applied_log) if applied_log is not None else None
        on_applied = self.applied_log.record if self.applied_log is not None else None
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.stores: dict[str, PlanStore] = {}
        self.host = DeviceHost(clock=clock, pacing=pacing, name=name)
        self.fixtures: dict[str, SimulatedFixture] = {}
        self.agents: dict[str, DeviceSession] = {}
        bare = BrokerAddress(broker.host, broker.port, broker.tls)
        for device in spec.devices:
            fixture = SimulatedFixture(clock=clock)
            self.fixtures[device.id] = fixture
            store: PlanStore = (
                FilePlanStore(self.state_dir / f"{device.id}.json", device.id)
                if self.state_dir is not None
                else MemoryPlanStore()
            )
            self.stores[device.id] = store
            session = DeviceSession(
                self.host,
                device.id,
                bare,
                password=device.password,
                topics=topics,
                fixture=fixture,
                behaviour=device.behaviour,
                firmware=firmware,
                ca_file=ca_file,
                keepalive_s=keepalive_s,
                history=history,
                # one line per device would drown a large fleet: summary() says it
                problem_level=logging.INFO,
                store=store,
                on_applied=on_applied,
                sensor=(
                    SimulatedSensor(wrong_colour=device.sensor.wrong_colour)
                    if device.sensor is not None
                    else None
                ),
            )
            # Simulated devices share this host's clock. A beacon's arrival on a loop
            # that carries thousands of them measures that loop's lag, not a clock
            # (seconds, in a connection storm), so they keep the host's clock: the
            # estimate never settles, and they report no offset.
            session.device.controller_time.min_span_s = math.inf
            self.agents[device.id] = session
            self.host.add(session, start_after=device.start_offline_s)

    def __len__(self) -> int:
        return len(self.agents)

    @property
    def immediate(self) -> list[str]:
        """Ids of the devices that connect at start."""
        return [d.id for d in self.spec.devices if d.start_offline_s is None]

    def start(self) -> None:
        """Start connecting (paced); devices that start offline connect after their delay."""
        self.host.start()

    def connected_count(self) -> int:
        return self.host.online_count()

    def summary(self) -> ConnectionSummary:
        return self.host.summary()

    def wait_started(self, timeout: float = 10.0, *, include_offline: bool = False) -> bool:
        """Wait until the devices that start at once (or all, if asked) are connected."""
        sessions = list(self.agents.values())
        if not include_offline:
            sessions = [self.agents[i] for i in self.immediate]
        needed = len(sessions)
        deadline = time.monotonic() + timeout
        cond = self.host.cond
        with cond:
            while True:
                # the count is cheap; look at each device only when it could be done
                if self.host.online_count() >= needed and all(s.connected for s in sessions):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                cond.wait(min(remaining, 1.0))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every device cleanly (offline status, disconnect); safe to call twice."""
        self.host.stop(timeout)
        if self.applied_log is not None:
            self.applied_log.close()
