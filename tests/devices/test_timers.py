"""The shared timer heap, on a FakeClock: monotonic and wall-clock deadlines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devices.clock import FakeClock
from devices.timers import TimerHeap

START = datetime(2025, 6, 21, 20, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def heap(clock: FakeClock) -> TimerHeap:
    return TimerHeap(clock, clock.monotonic, wall_slice=0.5)


def test_monotonic_timers_run_when_due_in_deadline_order(clock: FakeClock, heap: TimerHeap) -> None:
    ran: list[str] = []
    heap.call_later(2.0, lambda: ran.append("b"))
    heap.call_later(1.0, lambda: ran.append("a"))
    heap.call_later(2.0, lambda: ran.append("c"))  # same deadline: in scheduling order
    assert heap.run_due() == 0
    assert heap.timeout(10.0) == pytest.approx(1.0)
    clock.advance(1.0)
    assert heap.run_due() == 1
    assert ran == ["a"]
    clock.advance(5.0)
    assert heap.run_due() == 2
    assert ran == ["a", "b", "c"]
    assert len(heap) == 0
    assert heap.timeout(10.0) == 10.0


def test_a_cancelled_timer_never_runs(clock: FakeClock, heap: TimerHeap) -> None:
    ran: list[int] = []
    first = heap.call_later(1.0, lambda: ran.append(1))
    heap.call_later(3.0, lambda: ran.append(3))
    first.cancel()
    assert heap.timeout(10.0) == pytest.approx(3.0)  # the cancelled one no longer counts
    clock.advance(5.0)
    heap.run_due()
    assert ran == [3]


def test_wall_timers_follow_the_wall_clock_and_its_jumps(clock: FakeClock, heap: TimerHeap) -> None:
    ran: list[str] = []
    heap.call_at(START + timedelta(seconds=10), lambda: ran.append("step"))
    # a far wall deadline still wakes the loop every slice, to see clock jumps
    assert heap.timeout(60.0) == 0.5
    clock.jump(timedelta(seconds=-30))  # set back: the step moves 30 s further away
    clock.advance(10.0)
    assert heap.run_due() == 0
    clock.jump(timedelta(seconds=30))  # set right again: due now, with no time passed
    assert heap.timeout(60.0) == 0.0
    assert heap.run_due() == 1
    assert ran == ["step"]


def test_wall_timer_sleeps_only_until_its_instant_when_that_is_sooner(
    clock: FakeClock, heap: TimerHeap
) -> None:
    heap.call_at(START + timedelta(seconds=0.2), lambda: None)
    assert heap.timeout(60.0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="aware"):
        heap.call_at(datetime(2025, 1, 1), lambda: None)


def test_a_failing_callback_does_not_stop_the_others(
    clock: FakeClock, heap: TimerHeap, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    heap.call_later(1.0, boom)
    heap.call_later(1.0, lambda: ran.append(2))
    clock.advance(1.0)
    assert heap.run_due() == 2
    assert ran == [2]
    assert "a timer callback failed" in caplog.text


def test_timers_scheduled_by_a_callback_for_now_run_in_the_same_pass(
    clock: FakeClock, heap: TimerHeap
) -> None:
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        heap.call_later(0.0, lambda: ran.append("follow-up"))
        heap.call_later(1.0, lambda: ran.append("later"))

    heap.call_later(0.5, first)
    clock.advance(0.5)
    assert heap.run_due() == 2
    assert ran == ["first", "follow-up"]
