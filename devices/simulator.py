"""The fleet simulator: many native agents in one process, each its own MQTT client.

Every simulated device has its own connection, client id and credentials (username =
device id), so the broker's ACL treats it exactly as a real device. A fleet comes from a
JSON or YAML file (a list of devices, or `{"devices": [...]}`) or is generated from a
count and a prefix. Knobs make some devices misbehave: start offline, never ack, ack
late, reject.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from devices.agent import FIRMWARE, Agent, Behaviour
from devices.clock import Clock, system_clock
from devices.connection import BrokerAddress
from devices.fixture import SimulatedFixture
from devices.protocol import DeviceId, Topics, check_device_id

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "sim-"


class SimDevice(BaseModel):
    """One simulated device. `start_offline_s`: connect only after that many seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: DeviceId
    password: str = Field(min_length=1, max_length=1000)
    behaviour: Behaviour = Behaviour()
    start_offline_s: float | None = Field(default=None, ge=0, le=86400)


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
    """Runs the agents of a `FleetSpec`, each with its own connection and fixture."""

    def __init__(
        self,
        spec: FleetSpec,
        broker: BrokerAddress,
        *,
        topics: Topics | None = None,
        clock: Clock = system_clock,
        firmware: str = FIRMWARE,
        ca_file: str | None = None,
        agent_factory: Callable[[SimDevice], Agent] | None = None,
    ) -> None:
        self.spec = spec
        self.fixtures: dict[str, SimulatedFixture] = {}
        self.agents: dict[str, Agent] = {}
        bare = BrokerAddress(broker.host, broker.port, broker.tls)
        for device in spec.devices:
            if agent_factory is not None:
                agent = agent_factory(device)
            else:
                fixture = SimulatedFixture(clock=clock)
                self.fixtures[device.id] = fixture
                agent = Agent(
                    device.id,
                    bare,
                    password=device.password,
                    topics=topics,
                    fixture=fixture,
                    clock=clock,
                    behaviour=device.behaviour,
                    firmware=firmware,
                    ca_file=ca_file,
                )
            self.agents[device.id] = agent
        self._stop = threading.Event()
        self._starter: threading.Thread | None = None
        self._started = False

    def __len__(self) -> int:
        return len(self.agents)

    @property
    def immediate(self) -> list[str]:
        """Ids of the devices that connect at start."""
        return [d.id for d in self.spec.devices if d.start_offline_s is None]

    def start(self) -> None:
        """Start the devices that connect at once; the others start on their delay."""
        if self._started:
            raise RuntimeError("the fleet was already started")
        self._started = True
        for device_id in self.immediate:
            self.agents[device_id].start()
        delayed = sorted(
            (d.start_offline_s, d.id) for d in self.spec.devices if d.start_offline_s is not None
        )
        if delayed:
            self._starter = threading.Thread(
                target=self._start_later, args=(delayed,), name="fleet-starter", daemon=True
            )
            self._starter.start()

    def _start_later(self, delayed: Sequence[tuple[float, str]]) -> None:
        began = time.monotonic()
        for delay, device_id in delayed:
            if self._stop.wait(max(0.0, began + delay - time.monotonic())):
                return
            log.info("fleet: %s comes online after %.1fs", device_id, delay)
            self.agents[device_id].start()

    def connected_count(self) -> int:
        return sum(1 for agent in self.agents.values() if agent.connected)

    def wait_started(self, timeout: float = 10.0, *, include_offline: bool = False) -> bool:
        """Wait until the devices that start at once (or all, if asked) are connected."""
        ids = list(self.agents) if include_offline else self.immediate
        deadline = time.monotonic() + timeout
        for device_id in ids:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.agents[device_id].wait_connected(remaining):
                return False
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every agent cleanly (in parallel); safe to call more than once."""
        self._stop.set()
        if self._starter is not None:
            self._starter.join(timeout)
        agents = list(self.agents.values())
        if not agents:
            return
        with ThreadPoolExecutor(max_workers=min(32, len(agents))) as pool:
            for future in [pool.submit(agent.stop, timeout) for agent in agents]:
                try:
                    future.result()
                except Exception:
                    log.exception("fleet: an agent failed to stop")
