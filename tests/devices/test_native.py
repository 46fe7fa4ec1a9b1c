"""The device state machine (plans, acks, state) without a network, on a FakeClock."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from devices.clock import FakeClock
from devices.fixture import SimulatedFixture
from devices.native import Behaviour, NativeDevice
from devices.protocol import (
    Ack,
    ControllerStatus,
    DeviceState,
    DeviceStatus,
    LightState,
    Plan,
    PlanStep,
    Stage,
    Topics,
    decode,
    encode,
)
from devices.timers import TimerHeap

START = datetime(2025, 6, 21, 20, 0, tzinfo=UTC)
BLUE = LightState(on=True, color="#1E50FF", level=80)
RED = LightState(on=True, color="#FF0000", level=60)
TOPICS = Topics()


@dataclass
class Sent:
    topic: str
    payload: bytes
    retain: bool


class Rig:
    """A device, its fake clock and timers, and what it published."""

    def __init__(self, behaviour: Behaviour | None = None, fixture: object = None) -> None:
        self.clock = FakeClock(START)
        self.timers = TimerHeap(self.clock, self.clock.monotonic)
        self.sent: list[Sent] = []
        self.fixture = fixture if fixture is not None else SimulatedFixture(clock=self.clock)
        self.device = NativeDevice(
            "dev-a",
            fixture=self.fixture,  # type: ignore[arg-type]
            timers=self.timers,
            publish=lambda t, p, r: self.sent.append(Sent(t, p, r)),
            cond=threading.Condition(),
            behaviour=behaviour,
        )

    def plan(self, version: int, *steps: tuple[float, LightState], **extra: object) -> None:
        body = Plan.model_validate(
            {
                "version": version,
                "issued_at": self.clock(),
                "steps": [PlanStep(at=START + timedelta(seconds=s), state=st) for s, st in steps],
                **extra,
            }
        )
        self.device.on_message(TOPICS.plan("dev-a"), encode(body))
        self.timers.run_due()  # as the host's loop does after each message

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.timers.run_due()

    def acks(self) -> list[tuple[int, Stage]]:
        return [
            (a.version, a.stage)
            for a in (decode(Ack, s.payload) for s in self.sent if s.topic.endswith("/ack"))
        ]

    def states(self) -> list[DeviceState]:
        return [decode(DeviceState, s.payload) for s in self.sent if s.topic.endswith("/state")]


def test_plan_is_received_armed_and_each_step_applied_at_its_instant() -> None:
    rig = Rig()
    rig.plan(1, (10, BLUE), (20, RED))
    assert rig.acks() == [(1, Stage.RECEIVED), (1, Stage.ARMED)]
    rig.advance(9.9)
    assert rig.device.applied == []
    rig.advance(0.1)
    assert rig.device.applied == [(1, START + timedelta(seconds=10))]
    applied = [decode(Ack, s.payload) for s in rig.sent if b'"applied"' in s.payload]
    assert applied[0].applied_at == START + timedelta(seconds=10)
    assert applied[0].state == BLUE and applied[0].device == "dev-a"
    rig.advance(10)
    assert rig.acks()[-1] == (1, Stage.APPLIED)
    assert [st.state for st in rig.states()] == [BLUE, RED]
    assert all(s.retain for s in rig.sent if s.topic.endswith("/state"))
    assert not any(s.retain for s in rig.sent if s.topic.endswith("/ack"))
    assert len(rig.timers) == 0  # nothing left armed


def test_catch_up_applies_only_the_step_in_effect() -> None:
    rig = Rig()
    rig.clock.advance(25)
    rig.plan(1, (10, BLUE), (20, RED), (30, BLUE))
    assert rig.device.applied == [(1, START + timedelta(seconds=20))]
    rig.advance(5)
    assert rig.device.applied[-1] == (1, START + timedelta(seconds=30))


def test_a_clock_jump_applies_only_the_latest_due_step() -> None:
    rig = Rig()
    rig.plan(1, (10, BLUE), (20, RED))
    rig.clock.jump(timedelta(seconds=60))
    rig.timers.run_due()
    assert rig.device.applied == [(1, START + timedelta(seconds=20))]


def test_a_newer_plan_replaces_the_armed_one() -> None:
    rig = Rig()
    rig.plan(1, (10, BLUE))
    rig.plan(2, (20, RED))
    rig.advance(30)
    assert rig.device.applied == [(2, START + timedelta(seconds=20))]
    assert rig.device.plan_version == 2


def test_repeated_plans_are_ignored_and_older_ones_answered_with_the_state() -> None:
    rig = Rig()
    rig.plan(5, (0, BLUE))
    before = len(rig.sent)
    rig.plan(5, (0, RED))  # a retained redelivery
    assert len(rig.sent) == before
    rig.plan(3, (0, RED))  # a sender counting below us
    assert len(rig.sent) == before + 1
    assert rig.states()[-1].plan_version == 5
    assert rig.device.plan_messages == 3 and rig.device.plan_version == 5


def test_malformed_plan_is_counted_and_ignored() -> None:
    rig = Rig()
    rig.device.on_message(TOPICS.plan("dev-a"), b"{not json")
    assert rig.device.malformed_plans == 1
    assert rig.sent == []


def test_expired_plan_is_acked_expired_and_not_applied() -> None:
    rig = Rig()
    rig.clock.advance(60)
    rig.plan(1, (0, BLUE), not_after=START + timedelta(seconds=30))
    assert rig.acks() == [(1, Stage.RECEIVED), (1, Stage.EXPIRED)]
    assert rig.device.applied == []


def test_behaviour_late_sends_acks_late_by_the_monotonic_clock() -> None:
    rig = Rig(Behaviour(ack="late", ack_delay_s=5))
    rig.plan(1, (0, BLUE))
    assert rig.device.applied == [(1, START)]  # applied on time
    assert rig.acks() == []
    rig.clock.jump(timedelta(hours=1))  # a wall-clock jump does not hurry the acks
    rig.timers.run_due()
    assert rig.acks() == []
    rig.advance(5)
    assert rig.acks() == [(1, Stage.RECEIVED), (1, Stage.ARMED), (1, Stage.APPLIED)]
    assert [a.stage for a in rig.device.acks_sent] == [Stage.RECEIVED, Stage.ARMED, Stage.APPLIED]


def test_behaviour_never_applies_but_publishes_nothing() -> None:
    rig = Rig(Behaviour(ack="never"))
    rig.plan(1, (0, BLUE))
    rig.device.on_connected()
    assert rig.device.applied == [(1, START)]
    assert rig.sent == []


def test_behaviour_reject_acks_rejected_and_applies_nothing() -> None:
    rig = Rig(Behaviour(ack="reject", reject_reason="not today"))
    rig.plan(1, (0, BLUE))
    assert rig.acks() == [(1, Stage.REJECTED)]
    assert decode(Ack, rig.sent[0].payload).reason == "not today"
    assert rig.device.applied == []


def test_a_failing_fixture_is_acked_failed() -> None:
    class Broken(SimulatedFixture):
        def apply(self, state: LightState) -> LightState:
            raise OSError("DMX interface unplugged")

    rig = Rig(fixture=Broken())
    rig.plan(1, (0, BLUE))
    failed = decode(Ack, rig.sent[-1].payload)
    assert failed.stage is Stage.FAILED and failed.reason == "DMX interface unplugged"


def test_connect_and_controller_birth_report_the_state() -> None:
    rig = Rig()
    rig.device.on_connected()
    assert len(rig.states()) == 1
    birth = encode(ControllerStatus(online=True, since=START))
    rig.device.on_message(TOPICS.controller_status, birth)
    rig.device.on_message(TOPICS.controller_status, encode(ControllerStatus(online=False)))
    rig.device.on_message(TOPICS.controller_status, b"garbage")
    assert len(rig.states()) == 2
    assert decode(DeviceStatus, rig.device.birth()).online
    assert decode(DeviceStatus, rig.device.offline()) == DeviceStatus(online=False)


@pytest.mark.parametrize("history", [1, 3])
def test_observation_history_is_bounded(history: int) -> None:
    rig = Rig()
    rig.device = NativeDevice(
        "dev-a",
        fixture=SimulatedFixture(),
        timers=rig.timers,
        publish=lambda t, p, r: None,
        cond=threading.Condition(),
        history=history,
    )
    for version in range(1, 6):
        rig.plan(version, (0, BLUE))
    assert len(rig.device.applied) == history
    assert rig.device.applied[-1][0] == 5
    assert len(rig.device.acks_sent) == history


def test_devices_on_one_loop_all_apply_a_shared_step_before_any_reports_it() -> None:
    clock = FakeClock(START)
    timers = TimerHeap(clock, clock.monotonic)
    events: list[str] = []

    class Recording(SimulatedFixture):
        def apply(self, state: LightState) -> LightState:
            events.append("apply")
            return super().apply(state)

    def publish(topic: str, payload: bytes, retain: bool) -> None:
        if b'"applied"' in payload:
            events.append("report")

    plan = Plan(
        version=1,
        issued_at=START,
        steps=[
            PlanStep(at=START, state=LightState(on=False)),
            PlanStep(at=START + timedelta(seconds=10), state=BLUE),
        ],
    )
    for i in range(3):
        device = NativeDevice(
            f"dev-{i}",
            fixture=Recording(clock=clock),
            timers=timers,
            publish=publish,
            cond=threading.Condition(),
        )
        device.on_message(TOPICS.plan(f"dev-{i}"), encode(plan))
    timers.run_due()
    events.clear()
    clock.advance(10)
    timers.run_due()
    assert events == ["apply"] * 3 + ["report"] * 3
