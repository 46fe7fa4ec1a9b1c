"""Clock discipline on the device: the controller's beacons give the offset, and a device
whose clock is off by more than the tolerance applies by the controller's time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from devices.clock import FakeClock
from devices.clocksync import ControllerTime
from devices.fixture import SimulatedFixture
from devices.native import NativeDevice
from devices.protocol import (
    MAX_CLOCK_OFFSET_MS,
    OFF,
    Ack,
    ControllerStatus,
    DeviceState,
    LightState,
    Plan,
    PlanStep,
    Stage,
    Topics,
    decode,
    encode,
)
from devices.timers import TimerHeap

CONTROLLER_START = datetime(2025, 7, 30, 19, 0, tzinfo=UTC)
BLUE = LightState(on=True, color="#009EDB", level=80)
TOPICS = Topics()
TOLERANCE_MS = 1000


class Skewed:
    """A device whose own clock is `skew_s` off the controller's; both run together."""

    def __init__(self, skew_s: float) -> None:
        self.skew = timedelta(seconds=skew_s)
        self.clock = FakeClock(CONTROLLER_START + self.skew)
        self.timers = TimerHeap(self.clock, self.clock.monotonic)
        self.sent: list[tuple[str, bytes]] = []
        self.device = NativeDevice(
            "dev-a",
            fixture=SimulatedFixture(clock=self.clock),
            timers=self.timers,
            publish=lambda t, p, r: self.sent.append((t, p)),
            cond=threading.Condition(),
        )
        # these tests are about what a device does with an estimate it trusts: one
        # beacon is enough here (how many it takes is tested on ControllerTime below)
        self.device.controller_time = ControllerTime(
            self.clock, self.clock.monotonic, min_samples=1, min_span_s=0
        )

    def controller_now(self) -> datetime:
        return self.clock() - self.skew

    def beacon(self, delay_s: float = 0.0) -> None:
        """A beacon the controller sent `delay_s` before it arrives now."""
        sent_at = self.controller_now() - timedelta(seconds=delay_s)
        body = ControllerStatus(online=True, now=sent_at, clock_tolerance_ms=TOLERANCE_MS)
        self.device.on_message(TOPICS.controller_status, encode(body))
        self.timers.run_due()

    def plan(self, version: int, *steps: tuple[float, LightState], **extra: object) -> None:
        """Steps at controller-time offsets (s) from CONTROLLER_START."""
        body = Plan.model_validate(
            {
                "version": version,
                "issued_at": self.controller_now(),
                "steps": [
                    PlanStep(at=CONTROLLER_START + timedelta(seconds=s), state=st)
                    for s, st in steps
                ],
                **extra,
            }
        )
        self.device.on_message(TOPICS.plan("dev-a"), encode(body))
        self.timers.run_due()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.timers.run_due()

    def acks(self) -> list[Ack]:
        return [decode(Ack, p) for t, p in self.sent if t.endswith("/ack")]

    def states(self) -> list[DeviceState]:
        return [decode(DeviceState, p) for t, p in self.sent if t.endswith("/state")]

    def applied_steps(self) -> list[datetime]:
        return [at for _version, at in self.device.applied]


def at(seconds: float) -> datetime:
    return CONTROLLER_START + timedelta(seconds=seconds)


def test_a_device_90_s_ahead_switches_at_the_controllers_second_after_correction() -> None:
    rig = Skewed(+90)
    rig.beacon()
    rig.plan(1, (-60, OFF), (10, BLUE))
    # by its own clock the step is 80 s past; by the controller's it is 10 s ahead
    assert rig.applied_steps() == [at(-60)]
    rig.advance(9.9)
    assert rig.applied_steps() == [at(-60)]
    rig.advance(0.1)
    assert rig.applied_steps() == [at(-60), at(10)]
    applied = [a for a in rig.acks() if a.stage is Stage.APPLIED]
    assert applied[-1].applied_at == at(10)  # stamped in the controller's time
    assert applied[-1].clock_offset_ms == -90_000
    assert rig.states()[-1].clock_offset_ms == -90_000


def test_a_device_90_s_behind_switches_at_the_controllers_second_after_correction() -> None:
    rig = Skewed(-90)
    rig.beacon()
    rig.plan(1, (-60, OFF), (10, BLUE))
    rig.advance(9.9)
    assert rig.applied_steps() == [at(-60)]
    rig.advance(0.1)  # by its own clock this is 80 s before the step
    assert rig.applied_steps() == [at(-60), at(10)]


def test_a_device_within_tolerance_keeps_its_own_clock_and_reports_the_offset() -> None:
    rig = Skewed(+0.5)
    rig.beacon()
    assert rig.states()[-1].clock_offset_ms == -500  # reported when first known
    rig.plan(1, (10, BLUE))
    rig.advance(9.4)
    assert rig.applied_steps() == []
    rig.advance(0.1)  # its own clock reads the step's instant: it applies by that
    assert rig.applied_steps() == [at(10)]


def test_a_step_applied_early_before_the_first_beacon_is_taken_back_and_applied_on_time() -> None:
    rig = Skewed(+90)
    rig.plan(1, (-60, OFF), (10, BLUE))  # no beacon yet: its own clock says the step is due
    assert rig.applied_steps() == [at(10)]
    rig.beacon()
    assert rig.applied_steps() == [at(10), at(-60)]  # back to what holds now
    assert rig.device.fixture.current == OFF
    rig.advance(10)
    assert rig.applied_steps() == [at(10), at(-60), at(10)]
    assert rig.device.fixture.current.matches(BLUE)


def test_not_after_is_judged_by_the_controllers_time() -> None:
    rig = Skewed(+90)
    rig.beacon()
    rig.plan(1, (0, BLUE), not_after=at(30))  # 60 s past by its own clock, not by ours
    assert [a.stage for a in rig.acks()] == [Stage.RECEIVED, Stage.ARMED, Stage.APPLIED]


def test_a_late_plan_applies_the_state_that_holds_now_and_only_the_steps_to_come() -> None:
    rig = Skewed(+90)
    rig.beacon()
    rig.advance(25)
    rig.plan(1, (0, BLUE), (10, OFF), (20, BLUE), (40, OFF))
    assert rig.applied_steps() == [at(20)]
    rig.advance(15)
    assert rig.applied_steps() == [at(20), at(40)]
    steps = [a.step_at for a in rig.acks() if a.stage is Stage.APPLIED]
    assert steps == [at(20), at(40)]


def test_the_offset_is_reported_again_only_when_it_moves_beyond_the_tolerance() -> None:
    rig = Skewed(+90)
    rig.beacon()
    rig.beacon(delay_s=0.3)  # a slower beacon: the estimate keeps the faster one
    assert len(rig.states()) == 1
    rig.clock.jump(timedelta(seconds=-90))  # someone set the device's clock right
    rig.beacon()
    assert [s.clock_offset_ms for s in rig.states()] == [-90_000, 0]


def test_the_estimate_keeps_the_fastest_beacon_and_follows_a_step_of_the_own_clock() -> None:
    clock = FakeClock(CONTROLLER_START)
    sync = ControllerTime(clock, clock.monotonic, min_samples=1, min_span_s=0)
    assert sync.offset_ms() is None and sync.correction() == timedelta(0)
    sync.observe(CONTROLLER_START - timedelta(seconds=5))  # held up 5 s on the way
    assert sync.offset_ms() == -5000
    clock.advance(1)
    sync.observe(CONTROLLER_START + timedelta(seconds=1))  # came straight through
    clock.advance(1)
    sync.observe(CONTROLLER_START)  # held up 2 s
    assert sync.offset_ms() == 0
    clock.jump(timedelta(minutes=3))
    assert sync.offset_ms() == -180_000
    assert sync.correction() == timedelta(minutes=-3)


def test_a_clock_years_off_reports_the_largest_offset_the_protocol_takes() -> None:
    clock = FakeClock(datetime(1970, 1, 1, tzinfo=UTC))
    sync = ControllerTime(clock, clock.monotonic, min_samples=1, min_span_s=0)
    sync.observe(CONTROLLER_START)
    assert sync.reported_ms() == MAX_CLOCK_OFFSET_MS
    assert sync.correction() == CONTROLLER_START - clock()


def test_beacons_held_up_in_a_storm_are_not_taken_for_a_clock_that_runs_ahead() -> None:
    """A device whose clock is right hears its first beacons a minute late (a connection
    storm): it keeps its own clock, reports no offset, and counts the estimate only once
    it rests on enough beacons over a minute, by when a fast one came through."""
    clock = FakeClock(CONTROLLER_START)
    sync = ControllerTime(clock, clock.monotonic)
    for _ in range(5):  # a beacon a second, each held up 70 s
        sync.observe(clock() - timedelta(seconds=70))
        assert sync.offset_ms() is None and sync.reported_ms() is None
        assert sync.correction() == timedelta(0) and not sync.beyond_tolerance()
        clock.advance(1)
    clock.advance(30)
    sync.observe(clock() - timedelta(seconds=40))  # the storm is passing
    assert sync.offset_ms() is None  # 35 s of beacons: not yet
    clock.advance(30)
    sync.observe(clock() - timedelta(milliseconds=20))  # came straight through
    assert sync.settled()
    assert sync.offset_ms() == -20
    assert sync.correction() == timedelta(0)


def test_an_estimate_that_settled_corrects_a_clock_that_is_truly_off() -> None:
    clock = FakeClock(CONTROLLER_START + timedelta(seconds=90))  # 90 s ahead
    sync = ControllerTime(clock, clock.monotonic)
    for _ in range(3):
        sync.observe(clock() - timedelta(seconds=90))
        clock.advance(30)
    assert sync.settled()
    assert sync.correction() == timedelta(seconds=-90)
