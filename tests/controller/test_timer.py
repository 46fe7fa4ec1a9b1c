"""The timer on manual wake-ups, and the steady clock on a fake clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from controller.steady import SteadyClock
from controller.timer import MAX_WAKEUPS, ApsWakeups, ManualWakeups, Timer
from devices.clock import FakeClock

T0 = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)
S = T0 + timedelta(minutes=30)
E = T0 + timedelta(hours=3)


class Reconciles:
    def __init__(self, clock: FakeClock, instants: list[datetime]) -> None:
        self.clock = clock
        self.instants = instants
        self.runs: list[datetime] = []

    def __call__(self) -> list[datetime]:
        self.runs.append(self.clock())
        return [t for t in self.instants if t > self.clock()]


def test_a_fire_plans_the_wakeups_the_reconcile_asks_for_and_they_run() -> None:
    clock = FakeClock(T0)
    wake = Reconciles(clock, [S, S + timedelta(seconds=30), E])
    wakeups = ManualWakeups()
    timer = Timer(wake, timedelta(seconds=30), wakeups)
    wakeups.start(timer.soon)
    timer.fire()
    assert timer.pending() == [S, S + timedelta(seconds=30), E]
    assert timer.run_requested() is False
    clock.set(S)
    assert wakeups.due(clock()) == 1
    assert timer.run_requested() is True
    assert wake.runs == [T0, S]
    clock.set(E + timedelta(minutes=1))  # late wake-ups run late, together, never dropped
    assert wakeups.due(clock()) == 2
    assert timer.run_requested() is True
    assert timer.run_requested() is False
    assert wake.runs[-1] == E + timedelta(minutes=1)
    assert timer.pending() == []


def test_a_wakeup_the_next_reconcile_no_longer_asks_for_is_dropped() -> None:
    """A grace's end for a command since superseded: the reconcile that superseded it
    returns the instants it still needs, and the stale one never wakes it (at 10,000
    devices each stale wake-up was a reconcile of its own in the middle of a fan-out)."""
    clock = FakeClock(T0)
    stale = S + timedelta(seconds=30)
    wake = Reconciles(clock, [stale, E])
    wakeups = ManualWakeups()
    timer = Timer(wake, timedelta(seconds=30), wakeups)
    wakeups.start(timer.soon)
    timer.fire()
    assert timer.pending() == [stale, E]
    wake.instants = [E]
    timer.fire()
    assert timer.pending() == [E]
    clock.set(stale)
    assert wakeups.due(clock()) == 0
    assert timer.run_requested() is False


def test_many_soon_requests_make_one_reconcile() -> None:
    clock = FakeClock(T0)
    wake = Reconciles(clock, [])
    timer = Timer(wake, timedelta(seconds=30), ManualWakeups())
    for _ in range(50):
        timer.soon()
    assert timer.run_requested() is True
    assert timer.run_requested() is False
    assert len(wake.runs) == 1


def test_only_the_nearest_wakeups_are_planned() -> None:
    clock = FakeClock(T0)
    many = [T0 + timedelta(seconds=i) for i in range(1, 1000)]
    wakeups = ManualWakeups()
    timer = Timer(Reconciles(clock, many), timedelta(seconds=30), wakeups)
    timer.fire()
    assert timer.pending() == many[:MAX_WAKEUPS]


def test_wakeups_within_a_second_coalesce_into_one_at_its_end() -> None:
    """A fan-out's grace ends, one per publish, milliseconds apart: one wake-up (and one
    reconcile) per second, never one each; a whole-second instant keeps its own."""
    clock = FakeClock(T0)
    burst = [S + timedelta(milliseconds=3 * i + 1) for i in range(300)]  # 1 ms .. 898 ms
    wakeups = ManualWakeups()
    timer = Timer(Reconciles(clock, [S, *burst, E]), timedelta(seconds=30), wakeups)
    wakeups.start(timer.soon)
    timer.fire()
    assert timer.pending() == [S, S + timedelta(seconds=1), E]
    clock.set(S + timedelta(seconds=1))
    assert wakeups.due(clock()) == 2
    assert timer.run_requested() is True
    assert timer.run_requested() is False


def test_a_failing_reconcile_keeps_the_timer_alive() -> None:
    calls = []

    def broken() -> list[datetime]:
        calls.append(1)
        raise RuntimeError("database down")

    timer = Timer(broken, timedelta(seconds=30), ManualWakeups())
    timer.fire()
    timer.fire()
    assert len(calls) == 2


def test_the_safety_tick_runs_on_its_own_and_stops() -> None:
    fired = threading.Event()
    count = []

    def wake() -> list[datetime]:
        count.append(1)
        if len(count) >= 3:
            fired.set()
        return []

    timer = Timer(wake, timedelta(seconds=0.05), ManualWakeups())
    timer.start()
    try:
        assert fired.wait(30), "the safety tick did not fire three times in 30 s"
    finally:
        timer.stop()
    after = len(count)
    timer.fire()  # a stopped timer does nothing
    assert len(count) == after


def test_aps_wakeups_run_at_the_instant() -> None:
    ran = threading.Event()
    wakeups = ApsWakeups()
    wakeups.start(ran.set)
    try:
        wakeups.plan([datetime.now(UTC) + timedelta(milliseconds=100)])
        assert ran.wait(30)
    finally:
        wakeups.stop()


def test_aps_wakeups_drop_the_instants_planned_no_more() -> None:
    wakeups = ApsWakeups()
    wakeups.start(lambda: None)
    try:
        at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
        later = at + timedelta(minutes=1)
        wakeups.plan([at, later])
        assert wakeups.planned() == [at, later]
        wakeups.plan([later])
        assert wakeups.planned() == [later]
        assert wakeups.run_times() == [later]
        wakeups.plan([])
        assert wakeups.planned() == []
    finally:
        wakeups.stop()


def test_aps_wakeups_move_each_instant_by_the_offset_of_the_system_clock() -> None:
    """A held step of +1 h: APScheduler's clock reads an hour ahead of the instants'.
    Scheduled as given, every wake-up would be overdue at once, and each reconcile
    would plan them again: a loop. They are scheduled an hour later instead."""
    offset = [timedelta(hours=1)]
    wakeups = ApsWakeups(offset=lambda: offset[0])
    wakeups.start(lambda: None)
    try:
        at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
        wakeups.plan([at])
        assert wakeups.planned() == [at]
        assert wakeups.run_times() == [at + timedelta(hours=1)]
        offset[0] = timedelta(hours=-1)
        wakeups.plan([at])  # the same instant again: replaced, moved by the new offset
        assert wakeups.planned() == [at]
        assert wakeups.run_times() == [at - timedelta(hours=1)]
    finally:
        wakeups.stop()


# the steady clock -------------------------------------------------------------------


@pytest.mark.parametrize("jump", [timedelta(hours=1), timedelta(hours=-1)], ids=["+1h", "-1h"])
def test_a_step_of_the_system_clock_is_not_followed(jump: timedelta) -> None:
    source = FakeClock(T0)
    steps: list[float] = []
    clock = SteadyClock(source, follow_after_s=900, on_step=steps.append)
    source.advance(10)
    assert clock() == T0 + timedelta(seconds=10)
    source.jump(jump)
    assert clock() == T0 + timedelta(seconds=10)
    source.advance(5)
    assert clock() == T0 + timedelta(seconds=15)
    assert steps == [jump.total_seconds()]
    assert clock.monotonic() == source.monotonic()


def test_small_differences_are_followed_and_a_step_that_holds_is_taken() -> None:
    source = FakeClock(T0)
    clock = SteadyClock(source, follow_after_s=60)
    source.jump(timedelta(milliseconds=300))  # a slew-sized correction
    assert clock() == T0 + timedelta(milliseconds=300)
    source.jump(timedelta(minutes=10))
    assert clock() == T0 + timedelta(milliseconds=300)
    source.advance(59)
    assert clock() == T0 + timedelta(seconds=59.3)
    source.advance(1)
    assert clock() == source()  # held for 60 s: a deliberate correction, followed


def test_the_offset_from_the_system_clock_is_that_of_the_step_held() -> None:
    source = FakeClock(T0)
    clock = SteadyClock(source, follow_after_s=60)
    assert clock.offset() == timedelta()
    source.jump(timedelta(hours=1))
    assert clock.offset() == timedelta(hours=1)
    source.advance(60)
    assert clock.offset() == timedelta()  # followed


def test_a_second_step_while_one_is_held_is_counted_and_held_anew() -> None:
    source = FakeClock(T0)
    steps: list[float] = []
    clock = SteadyClock(source, follow_after_s=60, on_step=steps.append)
    source.jump(timedelta(hours=1))
    assert clock() == T0
    source.advance(50)
    source.jump(timedelta(hours=-2))  # now an hour behind
    assert clock() == T0 + timedelta(seconds=50)
    assert steps == [3600.0, -3600.0]
    assert clock.offset() == timedelta(hours=-1)
    source.advance(50)  # 100 s after the first step, 50 after the second: still held
    assert clock() == T0 + timedelta(seconds=100)
    source.advance(10)
    assert clock() == source()  # the second step held for 60 s: followed
