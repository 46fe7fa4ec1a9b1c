"""A wall clock that does not jump: the system's, followed through slews, held through steps.

Every monument applies its plan by its own NTP-synced clock, so when the controller's
system clock is stepped (a wrong manual setting, a faulty time source, a VM resumed),
the devices are right and the controller is wrong. The controller's time therefore runs
on from its last good reading by the monotonic clock, and a step of the system clock is
logged and counted (`illuminate_clock_steps_total`), not followed: no timeout fires
early, no window is replanned, the public page does not lie. A step that is still there
after `follow_after_s` is taken as a deliberate correction, and followed. Another step
while one is held (the clock moves again by a second or more) is logged and counted on
its own, and its hold starts again.

`offset()` says how far the system clock reads from this one (zero unless a step is
held): a scheduler that keeps time by the system clock (APScheduler) must add it to
every instant of this clock, or a held forward step makes every wake-up overdue at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from devices.clock import TimeSource

log = logging.getLogger(__name__)

STEP_S = 1.0
FOLLOW_AFTER_S = 900.0


class SteadyClock:
    def __init__(
        self,
        source: TimeSource,
        *,
        step_s: float = STEP_S,
        follow_after_s: float = FOLLOW_AFTER_S,
        on_step: Callable[[float], None] = lambda _seconds: None,
    ) -> None:
        self.source = source
        self.step_s = step_s
        self.follow_after_s = follow_after_s
        self.on_step = on_step
        self._lock = threading.Lock()
        self._wall = source()
        self._mono = source.monotonic()
        self._step_seen: float | None = None
        self._step_off = 0.0
        self._offset = 0.0

    def monotonic(self) -> float:
        return self.source.monotonic()

    def __call__(self) -> datetime:
        with self._lock:
            wall, mono = self.source(), self.source.monotonic()
            steady = self._wall + timedelta(seconds=mono - self._mono)
            off = (wall - steady).total_seconds()
            if abs(off) < self.step_s:
                self._wall, self._mono, self._step_seen = wall, mono, None
                self._offset = 0.0
                return wall
            self._offset = off
            if self._step_seen is None or abs(off - self._step_off) >= self.step_s:
                self._step_seen, self._step_off = mono, off
                log.warning(
                    "the system clock stepped by %+.1f s; keeping time by the monotonic clock "
                    "(devices keep their own); following it if it holds for %.0f s",
                    off,
                    self.follow_after_s,
                )
                self.on_step(off)
            elif mono - self._step_seen >= self.follow_after_s:
                log.warning("the system clock step of %+.1f s held: following it", off)
                self._wall, self._mono, self._step_seen = wall, mono, None
                self._offset = 0.0
                return wall
            return steady

    def offset(self) -> timedelta:
        """The system clock's reading minus this clock's, as of now."""
        self()
        with self._lock:
            return timedelta(seconds=self._offset)
