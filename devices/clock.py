"""Time as an input: code takes a clock, tests pass their own.

Two readings, never mixed: `clock()` is the wall time (aware, UTC) for everything that
is stored, compared with schedules or sent to devices; `clock.monotonic()` is for
timeouts and intervals, which must not jump when the wall clock does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

Clock = Callable[[], datetime]
"""Returns the current instant, time-zone aware, in UTC."""


class TimeSource(Protocol):
    """A wall clock (call it) with a monotonic clock beside it."""

    def __call__(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The machine's clocks."""

    def __call__(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


system_clock = SystemClock()


class FakeClock:
    """A clock that moves only when told: `advance` moves both readings (time passes),
    `jump` moves the wall clock alone (someone set the system time)."""

    def __init__(self, start: datetime, monotonic: float = 1000.0) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware start time")
        self._now = start.astimezone(UTC)
        self._mono = monotonic
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, delta: timedelta | float) -> None:
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError("time does not run backwards; use jump() for a wall-clock step")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds

    def jump(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta

    def set(self, when: datetime) -> None:
        """Move time forward to `when` (both readings)."""
        self.advance(when - self())
