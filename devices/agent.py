"""The device agent that runs at a monument: native protocol v1, device side.

The agent holds one MQTT connection (username = client id = device id). It receives
retained, versioned plans on its own plan topic, arms them, and applies each step to its
fixture at the step's instant by its own clock, acknowledging every stage.

What the agent holds (its plan, the highest version it took, the last step applied)
lives in a `PlanStore`: `illuminate agent` keeps it in a state file, so after a reboot
the agent resumes its plan at once and refuses any older version the broker retained.

The agent is one `DeviceSession` (its connection) on a `DeviceHost` of its own (one
loop thread, `_worker`, that runs the connection, the plan state machine of
`devices.native` and the step timers). The fleet simulator runs the very same sessions,
thousands to a host. See `devices.native` for the protocol rules.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from devices.clock import Clock, system_clock
from devices.connection import BrokerAddress
from devices.fixture import Fixture, SimulatedFixture
from devices.host import DeviceHost
from devices.native import FIRMWARE, AckMode, Behaviour, describe
from devices.planstore import PlanStore
from devices.protocol import Topics, check_device_id
from devices.sensor import Sensor
from devices.session import DeviceSession

__all__ = ["FIRMWARE", "AckMode", "Agent", "Behaviour", "describe"]

log = logging.getLogger(__name__)


class Agent(DeviceSession):
    """One native device on its own loop thread: connection, plan, step timer, fixture.

    Call `start()` once and `stop()` once. The read-only properties and the `wait_*`
    methods are safe to use from any thread (tests use them to wait for progress).
    """

    def __init__(
        self,
        device_id: str,
        address: BrokerAddress,
        *,
        password: str | None = None,
        topics: Topics | None = None,
        fixture: Fixture | None = None,
        clock: Clock = system_clock,
        behaviour: Behaviour | None = None,
        firmware: str = FIRMWARE,
        ca_file: str | None = None,
        keepalive_s: int = 30,
        store: PlanStore | None = None,
        clock_synced: Callable[[], bool | None] | None = None,
        sensor: Sensor | None = None,
    ) -> None:
        """`store` keeps the plan across restarts (default: in memory, lost on exit);
        `clock_synced` says whether the clock is synchronised, for the state report;
        `sensor` is a light sensor facing the lit surface (`devices/sensor.py`): its
        reading of each applied step goes in the step's ack."""
        check_device_id(device_id)
        host = DeviceHost(clock=clock, name=f"agent-{device_id}")
        super().__init__(
            host,
            device_id,
            address,
            password=password,
            topics=topics,
            fixture=fixture if fixture is not None else SimulatedFixture(clock=clock),
            behaviour=behaviour,
            firmware=firmware,
            ca_file=ca_file,
            keepalive_s=keepalive_s,
            store=store,
            clock_synced=clock_synced,
            sensor=sensor,
        )
        host.add(self)

    @property
    def _worker(self) -> threading.Thread | None:
        """The loop thread (None before `start()`)."""
        return self._host.thread

    def start(self) -> None:
        """Connect in the background (retrying) and start the loop. Returns at once."""
        self._host.start()
        log.info("agent %s: connecting to %s", self.device_id, self.address.redacted())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly: `online:false` published, disconnected, the loop joined."""
        self._host.stop(timeout)
