"""The timer: wake the reconciler at every transition instant, and on a safety tick.

It is never the source of truth: a reconcile is level-triggered, so a late wake-up just
reconciles late, and none is ever dropped.

Two clocks, two jobs:
- the safety tick runs every `tick` seconds on the monotonic clock (its own thread), so a
  step of the wall clock can neither stop it nor make it race;
- transition instants are wall-clock instants, handed to a `Wakeups` scheduler (APScheduler
  in production, `ManualWakeups` in tests). If the wall clock steps back, the tick still
  reconciles every `tick`; if it steps forward, overdue wake-ups run at once, coalesced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

log = logging.getLogger(__name__)

MAX_WAKEUPS = 200


class Wakeups(Protocol):
    """The scheduler seam: call `fire` at wall-clock instants, or soon."""

    def start(self, fire: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...

    def plan(self, instants: Iterable[datetime]) -> None:
        """Wake at each instant (planning one again replaces it, never duplicates it)."""

    def soon(self) -> None:
        """Wake as soon as possible; many requests make one wake-up."""

    def planned(self) -> list[datetime]: ...


class ApsWakeups:
    """APScheduler 3: one-shot DateTriggers with deterministic ids; misfires never dropped."""

    def __init__(self) -> None:
        self._fire: Callable[[], None] | None = None
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )

    def start(self, fire: Callable[[], None]) -> None:
        self._fire = fire
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            # remove the jobs first (under the scheduler's job-store lock, so after any
            # round of due jobs in progress): APScheduler 3 otherwise races a shutdown
            # against removing the one-shot job it has just run
            self._scheduler.remove_all_jobs()
            self._scheduler.shutdown(wait=True)

    def _add(self, at: datetime, job_id: str) -> None:
        if self._fire is None or not self._scheduler.running:
            return
        self._scheduler.add_job(
            self._fire, DateTrigger(run_date=at, timezone=UTC), id=job_id, replace_existing=True
        )

    def plan(self, instants: Iterable[datetime]) -> None:
        for at in instants:
            self._add(at, f"wake-{at.isoformat()}")

    def soon(self) -> None:
        self._add(datetime.now(UTC), "soon")

    def planned(self) -> list[datetime]:
        if not self._scheduler.running:
            return []
        return sorted(
            job.next_run_time for job in self._scheduler.get_jobs() if job.id.startswith("wake-")
        )


class ManualWakeups:
    """Wake-ups a test runs by hand: `due(now)` fires what is due, like the real one."""

    def __init__(self) -> None:
        self._fire: Callable[[], None] | None = None
        self._planned: set[datetime] = set()
        self.soon_requested = 0

    def start(self, fire: Callable[[], None]) -> None:
        self._fire = fire

    def stop(self) -> None:
        self._fire = None

    def plan(self, instants: Iterable[datetime]) -> None:
        self._planned.update(instants)

    def soon(self) -> None:
        self.soon_requested += 1

    def planned(self) -> list[datetime]:
        return sorted(self._planned)

    def due(self, now: datetime) -> int:
        """Fire once if any wake-up is due at `now` (they coalesce), or a soon was asked."""
        due = {at for at in self._planned if at <= now}
        self._planned -= due
        if (due or self.soon_requested) and self._fire is not None:
            self.soon_requested = 0
            self._fire()
            return 1
        return 0


class Timer:
    def __init__(
        self,
        wake: Callable[[], Iterable[datetime]],
        tick: timedelta,
        wakeups: Wakeups,
    ) -> None:
        """`wake` runs a reconcile and returns the instants to wake up at next."""
        self._wake = wake
        self._tick = tick.total_seconds()
        self.wakeups = wakeups
        self._busy = threading.Lock()
        self._stopping = threading.Event()
        self._ticker: threading.Thread | None = None
        self.fired = 0

    def start(self) -> None:
        self.wakeups.start(self.fire)
        self._ticker = threading.Thread(target=self._tick_loop, name="safety-tick", daemon=True)
        self._ticker.start()

    def _tick_loop(self) -> None:
        # Event.wait measures on the monotonic clock: wall-clock steps do not touch it
        while not self._stopping.wait(self._tick):
            self.fire()

    def stop(self) -> None:
        # APScheduler's shutdown() holds the job-store lock while it waits for running
        # jobs; a job that adds a wake-up then waits for that lock: a deadlock. So first
        # let any fire() in flight finish and make later ones return at once.
        with self._busy:
            self._stopping.set()
        self.wakeups.stop()
        if self._ticker is not None:
            self._ticker.join(timeout=10)

    def fire(self) -> None:
        with self._busy:
            if self._stopping.is_set():
                return
            self.fired += 1
            try:
                instants = list(self._wake())
            except Exception:
                log.exception("reconcile failed; the safety tick will try again")
                return
            self.plan(instants)

    def soon(self) -> None:
        """Run a reconcile on the timer's thread as soon as it can; requests coalesce."""
        if not self._stopping.is_set():
            self.wakeups.soon()

    def plan(self, instants: Iterable[datetime]) -> None:
        self.wakeups.plan(sorted(set(instants))[:MAX_WAKEUPS])

    def pending(self) -> list[datetime]:
        """Instants of the wake-ups planned."""
        return self.wakeups.planned()
