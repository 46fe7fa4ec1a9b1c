"""A device agent restarts mid-window against a real Mosquitto that retained an older plan.

The agent keeps its plan in its state file. After the restart it lights the window from
that file at once, refuses the older retained plan (no ack, no application), and tells
the controller which version it holds: in its birth and in the state report it answers
the stale plan with.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from devices.agent import Agent
from devices.connection import BrokerAddress
from devices.fixture import SimulatedFixture
from devices.planstore import FilePlanStore
from devices.protocol import OFF, DeviceState, DeviceStatus, Stage, decode
from tests.devices.harness import BLUE, RED, TestController, now, plan
from tests.support.mosquitto import Mosquitto

DEVICE = "reboot-dev"
PASSWORD = "reboot-pw"

pytestmark = pytest.mark.broker


@pytest.fixture
def controller(mosquitto: Mosquitto) -> Iterator[TestController]:
    mosquitto.add_users({DEVICE: PASSWORD})
    ctl = TestController(mosquitto)
    try:
        yield ctl
    finally:
        ctl.close()


def boot(mosquitto: Mosquitto, state_file: Path) -> tuple[Agent, SimulatedFixture]:
    """Power the device on: a dark fixture, the state file it had, then connect."""
    fixture = SimulatedFixture()
    agent = Agent(
        DEVICE,
        BrokerAddress.parse(mosquitto.url),
        password=PASSWORD,
        fixture=fixture,
        store=FilePlanStore(state_file, DEVICE),
    )
    agent.start()
    return agent, fixture


def test_agent_restarted_mid_window_keeps_its_plan_and_refuses_the_older_retained_one(
    mosquitto: Mosquitto, controller: TestController, tmp_path: Path
) -> None:
    state_file = tmp_path / "state" / f"agent-{DEVICE}.json"
    opened = now() - timedelta(seconds=1)
    newer = plan(2, (opened, BLUE), (now() + timedelta(minutes=10), OFF))

    first, _ = boot(mosquitto, state_file)
    try:
        assert first.wait_connected(10)
        controller.send_plan(DEVICE, newer)
        assert first.wait_applied(2, 10)
    finally:
        first.stop()
    assert state_file.stat().st_mode & 0o777 == 0o600

    # while it is down the broker comes to hold an older plan (say, restored from an
    # autosave that predates version 2)
    controller.send_plan(DEVICE, plan(1, (now() - timedelta(minutes=5), RED)))
    controller.barrier()
    before = len(controller.messages())

    second, fixture = boot(mosquitto, state_file)
    try:
        # the window's state is back at once, from the file, before the broker is heard
        assert fixture.current == BLUE
        assert second.resumed_step == (2, newer.steps[0].at)
        assert second.wait_connected(10)
        assert second.wait_for(lambda: second.stale_plans == 1, 10)
        controller.barrier()
        after = controller.messages()[before:]

        # the older retained plan: neither acked nor applied
        assert not [r for r in after if r.topic.endswith("/ack")]
        assert second.applied == [] and second.acks_sent == []
        assert [state for _, state in fixture.history] == [BLUE]
        assert second.plan_version == 2

        # it says which version it holds: in its birth, and in its state reports
        births = [decode(DeviceStatus, r.payload) for r in after if r.topic.endswith("/status")]
        assert births and births[-1].online and births[-1].plan_version == 2
        states = [decode(DeviceState, r.payload) for r in after if r.topic.endswith("/state")]
        assert states and all(s.plan_version == 2 for s in states)
        assert states[-1].step_at == newer.steps[0].at and states[-1].state == BLUE

        # the file still holds version 2, and a newer plan still goes through
        assert FilePlanStore(state_file, DEVICE).load().version == 2  # type: ignore[union-attr]
        controller.send_plan(DEVICE, plan(3, (now() - timedelta(seconds=1), RED)))
        assert second.wait_applied(3, 10)
        assert controller.wait_ack(DEVICE, 3, Stage.APPLIED)
        assert fixture.current == RED
    finally:
        second.stop()


def test_agent_restarted_without_its_state_file_waits_for_the_retained_plan(
    mosquitto: Mosquitto, controller: TestController, tmp_path: Path
) -> None:
    opened = now() - timedelta(seconds=1)
    current = plan(4, (opened, BLUE), (now() + timedelta(minutes=10), OFF))
    controller.send_plan(DEVICE, current)

    agent, fixture = boot(mosquitto, tmp_path / "lost" / f"agent-{DEVICE}.json")
    try:
        assert agent.resumed_step is None  # nothing stored to show
        assert agent.wait_applied(4, 10, step_at=current.steps[0].at)
        assert fixture.current == BLUE
        assert controller.wait_ack(DEVICE, 4, Stage.APPLIED)
        # it came from the broker: received, armed, then the step in effect applied
        assert [a.stage for a in agent.acks_sent] == [Stage.RECEIVED, Stage.ARMED, Stage.APPLIED]
    finally:
        agent.stop()
