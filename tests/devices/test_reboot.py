"""A device that reboots: it resumes from its plan store, on a FakeClock, without a network.

A "reboot" is a new `NativeDevice` (new fixture, dark; new timers) on the same store and
the same clock; `resume()` is what the session calls at boot, before connecting.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devices.clock import FakeClock
from devices.fixture import SimulatedFixture
from devices.native import Behaviour, NativeDevice
from devices.planstore import FilePlanStore, HeldPlan, MemoryPlanStore, PlanStore
from devices.protocol import (
    OFF,
    Ack,
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


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def window(version: int, opens: float = 10, closes: float = 100) -> Plan:
    """A plan for one window: on at `opens`, off at `closes` (seconds after START)."""
    return Plan(
        version=version,
        issued_at=START,
        steps=[PlanStep(at=at(opens), state=BLUE), PlanStep(at=at(closes), state=OFF)],
    )


@dataclass
class Sent:
    topic: str
    payload: bytes


class Boot:
    """One boot of device dev-a: a fresh fixture and timers on a store and a clock."""

    def __init__(
        self, store: PlanStore, clock: FakeClock, behaviour: Behaviour | None = None
    ) -> None:
        self.clock = clock
        self.timers = TimerHeap(clock, clock.monotonic)
        self.fixture = SimulatedFixture(clock=clock)
        self.sent: list[Sent] = []
        self.device = NativeDevice(
            "dev-a",
            fixture=self.fixture,
            timers=self.timers,
            publish=lambda t, p, r: self.sent.append(Sent(t, p)),
            cond=threading.Condition(),
            behaviour=behaviour,
            store=store,
        )
        self.device.resume()
        self.timers.run_due()  # as the host's loop does after each turn

    def deliver(self, plan: Plan) -> None:
        """The broker hands the device a plan (a retained one on connect, say)."""
        self.device.on_message(TOPICS.plan("dev-a"), encode(plan))
        self.timers.run_due()

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


def test_the_plan_is_stored_and_taken_up_again_after_a_reboot() -> None:
    clock, store = FakeClock(START), MemoryPlanStore()
    first = Boot(store, clock)
    first.deliver(window(3))
    assert store.load() == HeldPlan(version=3, plan=window(3))
    first.advance(10)
    assert store.load() == HeldPlan(version=3, plan=window(3), applied=(3, at(10)))

    clock.advance(20)  # it is down for 20 s, inside the window
    second = Boot(store, clock)
    assert second.device.plan_version == 3
    assert second.fixture.current == BLUE  # at once, before any message
    assert second.device.resumed_step == (3, at(10))
    assert second.device.applied == [] and second.sent == []  # not a new application
    assert decode(DeviceStatus, second.device.birth()).plan_version == 3
    second.device.on_connected()
    assert second.states()[-1].plan_version == 3 and second.states()[-1].step_at == at(10)
    second.advance(70)  # the window closes on time, by the stored plan
    assert second.device.applied == [(3, at(100))]
    assert second.fixture.current == OFF
    assert second.acks() == [(3, Stage.APPLIED)]


def test_reboot_mid_window_with_the_stored_plan_lights_at_once(tmp_path: Path) -> None:
    clock = FakeClock(START)
    path = tmp_path / "agent-dev-a.json"
    first = Boot(FilePlanStore(path, "dev-a"), clock)
    first.deliver(window(5))
    first.advance(30)
    assert first.fixture.current == BLUE

    clock.advance(5)
    second = Boot(FilePlanStore(path, "dev-a"), clock)  # the file, read anew
    assert second.fixture.current == BLUE
    assert [state for _, state in second.fixture.history] == [BLUE]
    second.deliver(window(5))  # the broker's retained copy, the same version
    assert second.sent == [] and second.device.stale_plans == 0
    assert second.device.applied == []
    second.advance(65)
    assert second.fixture.current == OFF


def test_reboot_mid_window_without_the_stored_plan_waits_for_the_retained_one() -> None:
    clock = FakeClock(START)
    first = Boot(MemoryPlanStore(), clock)
    first.deliver(window(5))
    first.advance(30)

    clock.advance(5)
    second = Boot(MemoryPlanStore(), clock)  # its store was lost: it boots empty
    assert second.device.plan_version == 0
    assert second.fixture.current == OFF and second.fixture.history == []
    assert decode(DeviceStatus, second.device.birth()).plan_version is None
    second.advance(20)
    assert second.fixture.history == []  # dark: nothing to run until the plan arrives
    second.deliver(window(5))
    # a late plan: the step in effect now at once, only the later ones timed
    assert second.fixture.current == BLUE
    assert second.device.applied == [(5, at(10))]
    assert second.acks() == [(5, Stage.RECEIVED), (5, Stage.ARMED), (5, Stage.APPLIED)]
    second.advance(45)
    assert second.device.applied == [(5, at(10)), (5, at(100))]


def test_after_a_reboot_an_older_retained_plan_is_refused() -> None:
    clock, store = FakeClock(START), MemoryPlanStore()
    first = Boot(store, clock)
    first.deliver(window(8))
    first.advance(15)

    second = Boot(store, clock)
    older = Plan(version=6, issued_at=START, steps=[PlanStep(at=START, state=RED)])
    second.deliver(older)  # a broker restored from an old autosave still holds v6
    assert second.device.stale_plans == 1
    assert second.device.plan_version == 8
    assert second.fixture.current == BLUE
    assert second.acks() == []  # nothing acked for the stale version
    # answered as the protocol says: a state report naming the version held
    [report] = second.states()
    assert report.plan_version == 8 and report.step_at == at(10)
    assert store.load() == HeldPlan(version=8, plan=window(8), applied=(8, at(10)))
    # and a newer one still replaces it
    second.deliver(window(9, opens=12))
    assert second.device.applied == [(9, at(12))]


def test_a_step_that_fell_due_while_down_is_applied_and_acked_at_boot() -> None:
    clock, store = FakeClock(START), MemoryPlanStore()
    first = Boot(store, clock)
    first.deliver(window(2))  # armed; nothing in effect yet
    clock.advance(50)  # it was down when the window opened
    second = Boot(store, clock)
    assert second.fixture.current == BLUE
    assert second.device.applied == [(2, at(10))]
    assert second.acks() == [(2, Stage.APPLIED)]
    assert second.device.resumed_step is None


def test_a_boot_after_the_window_shows_the_state_that_holds_now() -> None:
    clock, store = FakeClock(START), MemoryPlanStore()
    first = Boot(store, clock)
    first.deliver(window(2))
    first.advance(20)
    clock.advance(3600)  # down across the window's end
    second = Boot(store, clock)
    assert second.fixture.current == OFF
    assert second.device.applied == [(2, at(100))]  # only the latest due step
    assert len(second.timers) == 0


def test_a_refused_version_is_held_across_a_reboot() -> None:
    clock, store = FakeClock(START), MemoryPlanStore()
    first = Boot(store, clock, Behaviour(ack="reject"))
    first.deliver(window(4))
    assert first.acks() == [(4, Stage.REJECTED)]
    assert store.load() == HeldPlan(version=4)
    second = Boot(store, clock)
    second.deliver(window(4))  # the retained copy of what it refused
    assert second.sent == [] and second.fixture.history == []
    assert second.device.plan_version == 4


def test_a_corrupt_state_file_means_an_empty_start_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "agent-dev-a.json"
    path.write_bytes(b'{"format":1,"device":"dev-a","version":')
    boot = Boot(FilePlanStore(path, "dev-a"), FakeClock(START + timedelta(seconds=30)))
    assert boot.device.plan_version == 0
    assert (tmp_path / "agent-dev-a.json.corrupt").exists()
    boot.deliver(window(1))
    assert boot.fixture.current == BLUE
    assert FilePlanStore(path, "dev-a").load() == HeldPlan(
        version=1, plan=window(1), applied=(1, at(10))
    )


class Failing:
    """A store whose every call fails."""

    def load(self) -> HeldPlan | None:
        raise RuntimeError("flash worn out")

    def save(self, held: HeldPlan) -> None:
        raise RuntimeError("flash worn out")


def test_a_failing_store_does_not_stop_the_device() -> None:
    boot = Boot(Failing(), FakeClock(START))
    boot.deliver(window(1))
    boot.advance(10)
    assert boot.device.applied == [(1, at(10))]
    assert boot.acks() == [(1, Stage.RECEIVED), (1, Stage.ARMED), (1, Stage.APPLIED)]
