"""The device agent against a real Mosquitto with the test rig's ACL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from devices.agent import Agent, Behaviour
from devices.connection import BrokerAddress
from devices.fixture import Fixture, SimulatedFixture
from devices.protocol import (
    OFF,
    Ack,
    ControllerStatus,
    DeviceState,
    DeviceStatus,
    LightState,
    Stage,
    decode,
    encode,
)
from tests.devices.conftest import AgentFactory
from tests.devices.harness import (
    BLUE,
    RED,
    WHITE,
    Received,
    TestController,
    in_effect,
    now,
    plan,
    retained,
)
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.broker


def stages(ctl: TestController, device_id: str, version: int | None = None) -> list[str]:
    return [a.stage.value for a in ctl.acks(device_id) if version in (None, a.version)]


def test_plan_is_received_armed_and_applied_at_its_instant(
    mosquitto: Mosquitto, controller: TestController, make_agent: AgentFactory
) -> None:
    fixture = SimulatedFixture()
    agent = make_agent("dev-a", fixture=fixture, firmware="test-fw/1")
    step_at = now() + timedelta(seconds=1.5)
    controller.send_plan("dev-a", plan(1, (step_at, BLUE)))

    armed = controller.wait_ack("dev-a", 1, Stage.ARMED)
    assert armed is not None
    assert stages(controller, "dev-a") == ["received", "armed"]
    assert fixture.history == []  # not before its instant

    got = controller.wait_ack("dev-a", 1, Stage.APPLIED, timeout=6)
    assert got is not None
    ack, _ = got
    assert ack.device == "dev-a"
    assert ack.step_at == step_at
    assert ack.state == BLUE
    assert ack.applied_at is not None
    assert timedelta(0) <= ack.applied_at - step_at < timedelta(seconds=0.5)
    (applied_at, state), *rest = fixture.history
    assert rest == [] and state == BLUE
    assert timedelta(0) <= applied_at - step_at < timedelta(seconds=0.5)
    assert stages(controller, "dev-a") == ["received", "armed", "applied"]
    assert agent.applied_versions == [1]

    # the retained state tells a newcomer what the device shows, and why (the state
    # report follows the applied ack: wait for it)
    deadline = time.monotonic() + 30
    while True:
        raw = retained(mosquitto, controller.topics.state("dev-a"))
        assert raw is not None
        reported = decode(DeviceState, raw)
        if reported.plan_version is not None or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (reported.state, reported.plan_version, reported.step_at) == (BLUE, 1, step_at)
    assert reported.device == "dev-a" and reported.firmware == "test-fw/1"

    # the retained birth
    raw = retained(mosquitto, controller.topics.status("dev-a"))
    assert raw is not None
    birth = json.loads(raw)
    assert birth["v"] == 1 and birth["online"] is True and birth["firmware"] == "test-fw/1"
    assert decode(DeviceStatus, raw).since is not None


def test_every_step_fires_in_turn(controller: TestController, make_agent: AgentFactory) -> None:
    fixture = SimulatedFixture()
    agent = make_agent("dev-a", fixture=fixture)
    first = now() + timedelta(seconds=0.6)
    second = first + timedelta(seconds=0.6)
    controller.send_plan("dev-a", plan(1, (first, RED), (second, OFF)))
    assert agent.wait_applied(1, 5, step_at=second)
    assert [state for _, state in fixture.history] == [RED, OFF]
    for (applied_at, _), at in zip(fixture.history, (first, second), strict=True):
        assert timedelta(0) <= applied_at - at < timedelta(seconds=0.5)
    assert controller.wait(
        lambda r: (
            r.topic == controller.topics.ack("dev-a")
            and b'"applied"' in r.payload
            and b"state" in r.payload
            and decode(Ack, r.payload).step_at == second
        )
    )
    applied = [a for a in controller.acks("dev-a") if a.stage is Stage.APPLIED]
    assert [(a.step_at, a.state) for a in applied] == [(first, RED), (second, OFF)]


def test_repeated_and_older_versions_are_ignored(
    controller: TestController, make_agent: AgentFactory
) -> None:
    fixture = SimulatedFixture()
    agent = make_agent("dev-a", fixture=fixture)
    controller.send_plan("dev-a", in_effect(5, BLUE))
    assert controller.wait_ack("dev-a", 5, Stage.APPLIED)

    controller.send_plan("dev-a", in_effect(5, RED))  # same version again
    controller.send_plan("dev-a", in_effect(3, RED))  # older
    assert agent.wait_for(lambda: agent.plan_messages >= 3, 5)
    controller.send_plan("dev-a", in_effect(6, WHITE))
    assert controller.wait_ack("dev-a", 6, Stage.APPLIED)

    assert [(a.version, a.stage.value) for a in controller.acks("dev-a")] == [
        (5, "received"),
        (5, "armed"),
        (5, "applied"),
        (6, "received"),
        (6, "armed"),
        (6, "applied"),
    ]
    assert [state for _, state in fixture.history] == [BLUE, WHITE]
    assert agent.plan_version == 6


def test_retained_plan_redelivered_on_reconnect_does_no_harm(
    controller: TestController, make_agent: AgentFactory
) -> None:
    """A second agent incarnation gets the retained plan; the same one would ignore it."""
    fixture = SimulatedFixture()
    agent = make_agent("dev-a", fixture=fixture)
    controller.send_plan("dev-a", in_effect(1))
    assert agent.wait_applied(1, 5)
    # a resubscription makes the broker send the retained plan again
    client = agent._client
    assert client is not None
    client.subscribe(controller.topics.plan("dev-a"), qos=1)
    assert agent.wait_for(lambda: agent.plan_messages >= 2, 5)
    controller.send_plan("dev-a", in_effect(2, RED))
    assert controller.wait_ack("dev-a", 2, Stage.APPLIED)
    assert stages(controller, "dev-a", 1) == ["received", "armed", "applied"]
    assert len(fixture.history) == 2


def test_catch_up_applies_only_the_step_in_effect(
    controller: TestController, make_agent: AgentFactory
) -> None:
    fixture = SimulatedFixture()
    agent = make_agent("dev-a", fixture=fixture)
    t = now()
    p = plan(
        1,
        (t - timedelta(hours=2), RED),
        (t - timedelta(hours=1), BLUE),
        (t + timedelta(hours=1), OFF),
    )
    sent = controller.send_plan("dev-a", p)
    got = controller.wait_ack("dev-a", 1, Stage.APPLIED)
    assert got is not None
    ack, arrived = got
    assert arrived - sent < 1.0
    assert ack.step_at == p.steps[1].at and ack.state == BLUE
    assert [state for _, state in fixture.history] == [BLUE]
    assert agent.applied == [(1, p.steps[1].at)]
    assert stages(controller, "dev-a") == ["received", "armed", "applied"]


def test_plan_with_only_future_steps_applies_nothing_yet(
    controller: TestController, make_agent: AgentFactory
) -> None:
    fixture = SimulatedFixture()
    make_agent("dev-a", fixture=fixture)
    controller.send_plan("dev-a", plan(1, (now() + timedelta(hours=1), BLUE)))
    assert controller.wait_ack("dev-a", 1, Stage.ARMED)
    controller.send_plan("dev-a", in_effect(2, RED))  # a newer plan replaces it
    assert controller.wait_ack("dev-a", 2, Stage.APPLIED)
    assert [state for _, state in fixture.history] == [RED]


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("not_json", b"\xff{not json"),
        ("wrong_version", json.dumps({"v": 2, "version": 1}).encode()),
        (
            "extra_key",
            json.dumps(
                {"v": 1, "version": 1, "issued_at": "2030-01-01T00:00:00Z", "steps": [], "x": 1}
            ).encode(),
        ),
        (
            "naive_time",
            json.dumps(
                {"v": 1, "version": 1, "issued_at": "2030-01-01T00:00:00", "steps": []}
            ).encode(),
        ),
        ("oversized", b'{"v":1,"pad":"' + b"x" * (70 * 1024) + b'"}'),
        ("not_an_object", b"[1, 2, 3]"),
        ("empty", b""),
    ],
)
def test_malformed_plan_is_ignored_and_the_agent_keeps_working(
    controller: TestController, make_agent: AgentFactory, name: str, payload: bytes
) -> None:
    fixture = SimulatedFixture()
    agent = make_agent("dev-a", fixture=fixture)
    controller.send_plan("dev-a", payload, retain=False)
    assert agent.wait_for(lambda: agent.malformed_plans == 1, 5), name
    assert agent._worker is not None and agent._worker.is_alive()
    controller.send_plan("dev-a", in_effect(1))
    assert controller.wait_ack("dev-a", 1, Stage.APPLIED)
    assert stages(controller, "dev-a") == ["received", "armed", "applied"]
    assert [state for _, state in fixture.history] == [BLUE]


def test_unordered_steps_are_malformed(
    controller: TestController, make_agent: AgentFactory
) -> None:
    agent = make_agent("dev-a")
    body = {
        "v": 1,
        "version": 1,
        "issued_at": "2030-01-01T00:00:00Z",
        "steps": [
            {"at": "2030-01-01T01:00:00Z", "state": {"on": True}},
            {"at": "2030-01-01T00:00:00Z", "state": {"on": False}},
        ],
    }
    controller.send_plan("dev-a", json.dumps(body).encode(), retain=False)
    assert agent.wait_for(lambda: agent.malformed_plans == 1, 5)
    assert agent.plan_version == 0
    controller.barrier()
    assert controller.acks("dev-a") == []


def test_expired_plan_is_acked_expired_and_not_applied(
    controller: TestController, make_agent: AgentFactory
) -> None:
    fixture = SimulatedFixture()
    make_agent("dev-a", fixture=fixture)
    p = plan(1, (now() - timedelta(seconds=5), BLUE), not_after=now() - timedelta(seconds=1))
    controller.send_plan("dev-a", p)
    got = controller.wait_ack("dev-a", 1, Stage.EXPIRED)
    assert got is not None and got[0].reason
    controller.barrier()
    assert stages(controller, "dev-a") == ["received", "expired"]
    assert fixture.history == []


def test_not_after_in_the_future_is_fine(
    controller: TestController, make_agent: AgentFactory
) -> None:
    make_agent("dev-a")
    fresh = plan(1, (now() - timedelta(seconds=1), BLUE), not_after=now() + timedelta(minutes=1))
    controller.send_plan("dev-a", fresh)
    assert controller.wait_ack("dev-a", 1, Stage.APPLIED)


def test_steps_are_timed_by_the_agents_own_clock(
    controller: TestController, make_agent: AgentFactory
) -> None:
    """An agent whose clock is an hour ahead applies a step an hour earlier."""

    def ahead() -> datetime:
        return datetime.now(UTC) + timedelta(hours=1)

    fixture = SimulatedFixture(clock=ahead)
    agent = make_agent("dev-a", fixture=fixture, clock=ahead)
    p = plan(1, (ahead() + timedelta(seconds=0.8), BLUE))
    step_at = p.steps[0].at
    sent = controller.send_plan("dev-a", p)
    got = controller.wait_ack("dev-a", 1, Stage.APPLIED)
    assert got is not None
    ack, arrived = got
    assert 0.5 < arrived - sent < 1.8
    assert ack.applied_at is not None and ack.applied_at - step_at < timedelta(seconds=0.5)
    assert agent.applied == [(1, step_at)]


def test_behaviour_never_applies_but_reports_nothing(
    mosquitto: Mosquitto, controller: TestController, make_agent: AgentFactory
) -> None:
    fixture = SimulatedFixture()
    agent = make_agent("dev-a", fixture=fixture, behaviour=Behaviour(ack="never"))
    controller.send_plan("dev-a", in_effect(1))
    assert agent.wait_applied(1, 5)
    # a normal device would have acked and reported by now; a silent one says nothing
    assert not controller.wait(
        lambda r: r.topic in {controller.topics.state("dev-a"), controller.topics.ack("dev-a")},
        timeout=1.0,
    )
    assert controller.acks("dev-a") == []
    assert agent.acks_sent == []
    assert [state for _, state in fixture.history] == [BLUE]


def test_behaviour_late_sends_each_ack_late_but_applies_on_time(
    controller: TestController, make_agent: AgentFactory
) -> None:
    fixture = SimulatedFixture()
    agent = make_agent("dev-a", fixture=fixture, behaviour=Behaviour(ack="late", ack_delay_s=1.0))
    sent = controller.send_plan("dev-a", in_effect(1))
    assert agent.wait_applied(1, 5)
    applied_by = time.monotonic()
    assert applied_by - sent < 0.9
    assert controller.acks("dev-a") == []
    got = controller.wait_ack("dev-a", 1, Stage.APPLIED, timeout=5)
    assert got is not None
    received = controller.wait_ack("dev-a", 1, Stage.RECEIVED)
    assert received is not None
    assert received[1] - sent >= 0.95
    assert stages(controller, "dev-a") == ["received", "armed", "applied"]


def test_behaviour_reject_acks_rejected_and_applies_nothing(
    controller: TestController, make_agent: AgentFactory
) -> None:
    fixture = SimulatedFixture()
    agent = make_agent(
        "dev-a", fixture=fixture, behaviour=Behaviour(ack="reject", reject_reason="no DMX")
    )
    controller.send_plan("dev-a", in_effect(1))
    got = controller.wait_ack("dev-a", 1, Stage.REJECTED)
    assert got is not None
    assert got[0].reason == "no DMX" and got[0].device == "dev-a"
    controller.send_plan("dev-a", in_effect(1))  # a repeat is ignored
    assert agent.wait_for(lambda: agent.plan_messages >= 2, 5)
    controller.send_plan("dev-a", in_effect(2))
    assert controller.wait_ack("dev-a", 2, Stage.REJECTED)
    assert stages(controller, "dev-a") == ["rejected", "rejected"]
    assert fixture.history == [] and agent.applied == []


class BrokenFixture:
    def __init__(self) -> None:
        self._current = OFF

    def apply(self, state: LightState) -> LightState:
        raise OSError("DMX interface unplugged")

    @property
    def current(self) -> LightState:
        return self._current


def test_fixture_failure_is_acked_failed(
    controller: TestController, make_agent: AgentFactory
) -> None:
    fixture = BrokenFixture()
    assert isinstance(fixture, Fixture)
    make_agent("dev-a", fixture=fixture)
    controller.send_plan("dev-a", in_effect(1))
    got = controller.wait_ack("dev-a", 1, Stage.FAILED)
    assert got is not None
    assert got[0].reason == "DMX interface unplugged"
    assert stages(controller, "dev-a") == ["received", "armed", "failed"]


def test_controller_birth_makes_devices_report_their_state_again(
    controller: TestController, make_agent: AgentFactory
) -> None:
    make_agent("dev-a")
    controller.send_plan("dev-a", in_effect(1))

    def state_of(version: int) -> Callable[[Received], bool]:
        topic = controller.topics.state("dev-a")
        return lambda r: r.topic == topic and decode(DeviceState, r.payload).plan_version == version

    assert controller.wait(state_of(1))
    before = len(controller.states("dev-a"))
    birth = ControllerStatus(online=True, since=now())
    controller.publish(controller.topics.controller_status, encode(birth), retain=True)
    state_topic = controller.topics.state("dev-a")
    assert controller.wait(
        lambda r: r.topic == state_topic and len(controller.states("dev-a")) > before
    )
    state, _ = controller.states("dev-a")[-1]
    assert state.state == BLUE and state.plan_version == 1
    # neither the controller's last will nor garbage makes them report
    will = ControllerStatus(online=False)
    controller.publish(controller.topics.controller_status, encode(will), retain=True)
    controller.publish(controller.topics.controller_status, b"garbage", retain=False)
    controller.send_plan("dev-a", in_effect(2))
    assert controller.wait(state_of(2))
    assert len(controller.states("dev-a")) == before + 2


def test_clean_stop_publishes_offline_status(
    mosquitto: Mosquitto, controller: TestController, make_agent: AgentFactory
) -> None:
    agent = make_agent("dev-a")
    assert controller.wait_status("dev-a", online=True)
    started = time.monotonic()
    agent.stop()
    assert time.monotonic() - started < 3
    assert controller.wait_status("dev-a", online=False)
    raw = retained(mosquitto, controller.topics.status("dev-a"))
    assert raw is not None and json.loads(raw) == {"v": 1, "online": False}
    assert agent._worker is not None and not agent._worker.is_alive()
    assert not agent.connected


def test_last_will_marks_a_vanished_device_offline(
    controller: TestController, make_agent: AgentFactory
) -> None:
    agent = make_agent("dev-a")
    assert controller.wait_status("dev-a", online=True)
    client = agent._client
    assert client is not None
    client.loop_stop()  # the network thread dies without a DISCONNECT ...
    sock = client.socket()
    assert sock is not None
    sock.close()  # ... and the connection drops
    assert controller.wait_status("dev-a", online=False, timeout=10)
    agent.stop(timeout=0.5)


def test_agent_resubscribes_after_the_broker_restarts(
    mosquitto: Mosquitto, make_agent: AgentFactory
) -> None:
    agent = make_agent("dev-a")
    mosquitto.stop()
    assert agent.wait_for(lambda: not agent.connected, 5)
    mosquitto.start()
    assert agent.wait_for(lambda: agent.connects >= 2, 15)
    ctl = TestController(mosquitto)
    try:
        ctl.send_plan("dev-a", in_effect(1))
        assert ctl.wait_ack("dev-a", 1, Stage.APPLIED)
        assert ctl.wait_status("dev-a", online=True)  # a fresh birth after the reconnect
    finally:
        ctl.close()


@pytest.mark.parametrize(
    ("device_id", "url", "match"),
    [
        ("dev-a", "mqtt://dev-b:pw@127.0.0.1:1883", "username"),
        ("Dev-A", "mqtt://127.0.0.1:1883", "device id"),
        ("dev/a", "mqtt://127.0.0.1:1883", "device id"),
    ],
)
def test_agent_refuses_bad_identities(device_id: str, url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Agent(device_id, BrokerAddress.parse(url))


def test_stop_without_start_and_twice_is_harmless(make_agent: AgentFactory) -> None:
    agent = make_agent("dev-a", start=False)
    agent.stop()
    other = make_agent("dev-b")
    other.stop()
    other.stop()
    with pytest.raises(RuntimeError):
        other.start()
