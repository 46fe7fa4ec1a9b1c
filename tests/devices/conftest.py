from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devices.agent import Agent
from devices.connection import BrokerAddress
from devices.fixture import SimulatedFixture
from tests.devices.harness import TestController
from tests.support.mosquitto import Mosquitto

PASSWORD = "device-pw"


@pytest.fixture
def controller(mosquitto: Mosquitto) -> Iterator[TestController]:
    """A test-side controller client, subscribed to every device's ack/state/status."""
    ctl = TestController(mosquitto)
    try:
        yield ctl
    finally:
        ctl.close()


AgentFactory = Callable[..., Agent]


@pytest.fixture
def make_agent(mosquitto: Mosquitto) -> Iterator[AgentFactory]:
    """`make_agent("dev-a", behaviour=..., ...)`: account added, started, connected.

    Pass `start=False` to get it unstarted. Every agent made is stopped at the end.
    """
    made: list[Agent] = []

    def make(device_id: str, *, start: bool = True, **kwargs: Any) -> Agent:
        mosquitto.add_users({device_id: PASSWORD})
        kwargs.setdefault("fixture", SimulatedFixture())
        agent = Agent(device_id, BrokerAddress.parse(mosquitto.url), password=PASSWORD, **kwargs)
        made.append(agent)
        if start:
            agent.start()
            assert agent.wait_connected(10), f"{device_id} did not connect"
        return agent

    try:
        yield make
    finally:
        for agent in made:
            agent.stop()
