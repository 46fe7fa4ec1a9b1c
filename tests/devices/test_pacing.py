"""Connection pacing on a FakeClock: the connect gate and the retry backoff."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from devices.clock import FakeClock
from devices.pacing import Backoff, ConnectGate, Pacing


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 1, 1, tzinfo=UTC))


def test_gate_lets_a_burst_through_then_the_rate(clock: FakeClock) -> None:
    gate = ConnectGate(10.0, burst=3, limit=100, monotonic=clock.monotonic)
    assert [gate.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert gate.wait_s() == pytest.approx(0.1)
    clock.advance(0.05)
    assert not gate.try_acquire()
    clock.advance(0.05)
    assert gate.try_acquire()
    clock.advance(10.0)  # a long pause refills to the burst, not beyond
    assert sum(gate.try_acquire() for _ in range(10)) == 3


def test_gate_bounds_attempts_in_flight(clock: FakeClock) -> None:
    gate = ConnectGate(1000.0, burst=1000, limit=2, monotonic=clock.monotonic)
    assert gate.try_acquire() and gate.try_acquire()
    assert not gate.try_acquire()
    assert gate.wait_s() is None  # no token helps: wait for a release
    gate.release()
    assert gate.in_flight == 1
    assert gate.try_acquire()
    gate.release()
    gate.release()
    with pytest.raises(RuntimeError):
        gate.release()


def test_gate_and_pacing_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        ConnectGate(0, burst=1, limit=1)
    with pytest.raises(ValueError):
        ConnectGate(1, burst=0, limit=1)
    with pytest.raises(ValueError):
        Pacing(concurrency=0)
    with pytest.raises(ValueError):
        Backoff(initial=5, cap=1)
    with pytest.raises(ValueError):
        Backoff(jitter=1.0)


def test_backoff_doubles_up_to_its_cap_with_jitter_below_the_base() -> None:
    backoff = Backoff(initial=1.0, cap=30.0, jitter=0.5)
    rng = random.Random(7)
    for failures, base in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (60, 30.0)]:
        delays = [backoff.delay(failures, rng) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays), failures
        assert max(delays) - min(delays) > base * 0.3  # spread: devices do not come back together


def test_backoff_without_jitter_is_exact() -> None:
    backoff = Backoff(initial=0.5, cap=4.0, jitter=0.0)
    rng = random.Random(1)
    assert [backoff.delay(n, rng) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
