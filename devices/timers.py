"""One timer heap for every device on an event loop: no thread per timer.

Two kinds of deadline, never mixed:
- `call_later(delay, fn)`: after `delay` seconds of monotonic time (backoff, late acks).
- `call_at(instant, fn)`: when the wall clock reaches `instant` (plan steps, timed by the
  device's own clock). The wall clock may jump, so a wall deadline is never turned into
  a monotonic one: `timeout()` is capped at `wall_slice` while a wall timer waits, and
  `run_due()` reads the wall clock again each time it runs.

The heap is not thread-safe: one loop thread owns it. Callbacks that raise are logged
and do not stop the others.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable
from datetime import datetime

from devices.clock import Clock

log = logging.getLogger(__name__)

WALL_SLICE_S = 0.5
"""The longest the loop sleeps while a wall-clock timer waits: a clock jump is seen by then."""


class Timer:
    """A handle to a scheduled call; `cancel()` it to drop the call."""

    __slots__ = ("cancelled", "fn")

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class TimerHeap:
    """Monotonic and wall-clock timers of one event loop."""

    def __init__(
        self,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        wall_slice: float = WALL_SLICE_S,
    ) -> None:
        self.clock = clock
        self.monotonic = monotonic
        self.wall_slice = wall_slice
        self._seq = itertools.count()
        self._mono: list[tuple[float, int, Timer]] = []
        self._wall: list[tuple[datetime, int, Timer]] = []

    def __len__(self) -> int:
        """Timers scheduled and not yet run (cancelled ones count until they are dropped)."""
        return len(self._mono) + len(self._wall)

    def call_later(self, delay: float, fn: Callable[[], object]) -> Timer:
        timer = Timer(fn)
        heapq.heappush(self._mono, (self.monotonic() + max(0.0, delay), next(self._seq), timer))
        return timer

    def call_at(self, instant: datetime, fn: Callable[[], object]) -> Timer:
        if instant.tzinfo is None:
            raise ValueError("call_at needs an aware instant")
        timer = Timer(fn)
        heapq.heappush(self._wall, (instant, next(self._seq), timer))
        return timer

    def timeout(self, cap: float) -> float:
        """Seconds the loop may sleep before `run_due` has work: 0 to `cap`."""
        self._drop_cancelled()
        wait = cap
        if self._mono:
            wait = min(wait, self._mono[0][0] - self.monotonic())
        if self._wall:
            until = (self._wall[0][0] - self.clock()).total_seconds()
            wait = min(wait, until, self.wall_slice)
        return max(0.0, wait)

    def run_due(self) -> int:
        """Run every timer whose deadline has come, earliest first; return how many ran.

        Timers that callbacks schedule for now or earlier run in the same pass. Due
        wall-clock timers (plan steps) run before due monotonic ones, so every step due
        at an instant is applied before the work those steps leave for later.
        """
        ran = 0
        while True:
            self._drop_cancelled()
            timer = None
            if self._wall and self._wall[0][0] <= self.clock():
                timer = heapq.heappop(self._wall)[2]
            elif self._mono and self._mono[0][0] <= self.monotonic():
                timer = heapq.heappop(self._mono)[2]
            if timer is None:
                return ran
            timer.cancelled = True  # it runs once
            ran += 1
            try:
                timer.fn()
            except Exception:
                log.exception("a timer callback failed")

    def _drop_cancelled(self) -> None:
        while self._mono and self._mono[0][2].cancelled:
            heapq.heappop(self._mono)
        while self._wall and self._wall[0][2].cancelled:
            heapq.heappop(self._wall)
