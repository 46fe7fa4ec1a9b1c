"""The timer: wake the reconciler at every transition instant, and on a safety tick.

It is never the source of truth: a reconcile is level-triggered, so a late wake-up just
reconciles late, and none is ever dropped.

Two clocks, two jobs:
- the safety tick runs every `tick` seconds on the monotonic clock (its own thread), so a
  step of the wall clock can neither stop it nor make it race;
- transition instants are wall-clock instants, handed to a `Wakeups` scheduler (APScheduler
  in production, `ManualWakeups` in tests). If the wall clock steps back, the tick still
  reconciles every `tick`; if it steps forward, overdue wake-ups run at once, coalesced.
  The instants are the controller's steady clock's (controller/steady.py), which holds
  through a step that APScheduler, on the system clock, follows at once: `ApsWakeups`
  adds the steady clock's `offset()` to each, so a held step moves no wake-up (without
  it, a step forward made every instant overdue, and each reconcile planned them again:
  a loop of reconciles until the step was followed).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

log = logging.getLogger(__name__)

MAX_WAKEUPS = 200


def whole_second(at: datetime) -> datetime:
    """`at`, rounded up to its whole second."""
    if at.microsecond == 0:
        return at
    return at.replace(microsecond=0) + timedelta(seconds=1)


class Wakeups(Protocol):
    """The scheduler seam: call `fire` at wall-clock instants, or soon."""

    def start(self, fire: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...

    def plan(self, instants: Iterable[datetime]) -> None:
        """Wake at each instant, and only at these: the set replaces the one planned
        before (an instant planned again is replaced, never duplicated; one left out is
        dropped, since each reconcile returns every instant it still needs)."""

    def planned(self) -> list[datetime]: ...


class ApsWakeups:
    """APScheduler 3: one-shot DateTriggers with deterministic ids; misfires never dropped.

    `offset()` is how far the system clock (APScheduler's) reads from the clock the
    instants are on; each instant is scheduled at `instant + offset()`."""

    def __init__(self, offset: Callable[[], timedelta] = timedelta) -> None:
        self._offset = offset
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
        offset = self._offset()
        wanted = {f"wake-{at.isoformat()}": at for at in instants}
        if self._scheduler.running:
            for job in self._scheduler.get_jobs():
                if job.id.startswith("wake-") and job.id not in wanted:
                    # (one that has just run is gone already: a one-shot job goes once run)
                    with contextlib.suppress(JobLookupError):
                        self._scheduler.remove_job(job.id)
        for job_id, at in wanted.items():
            # the id names the instant on the caller's clock: planned again, it is replaced
            self._add(at + offset, job_id)

    def planned(self) -> list[datetime]:
        """The instants planned, on the caller's clock."""
        if not self._scheduler.running:
            return []
        return sorted(
            datetime.fromisoformat(job.id.removeprefix("wake-"))
            for job in self._scheduler.get_jobs()
            if job.id.startswith("wake-")
        )

    def run_times(self) -> list[datetime]:
        """When APScheduler will run them, on the system clock."""
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

    def start(self, fire: Callable[[], None]) -> None:
        self._fire = fire

    def stop(self) -> None:
        self._fire = None

    def plan(self, instants: Iterable[datetime]) -> None:
        self._planned = set(instants)

    def planned(self) -> list[datetime]:
        return sorted(self._planned)

    def due(self, now: datetime) -> int:
        """Fire for the wake-ups due at `now`; returns how many were due."""
        due = {at for at in self._planned if at <= now}
        self._planned -= due
        if due and self._fire is not None:
            self._fire()
        return len(due)


class Timer:
    """Runs the reconcile on its own thread whenever asked: by a wake-up, by the safety
    tick, or by `soon()`. Requests only set a flag, so they never block (an APScheduler
    job that ran the reconcile itself would make the next wake-up be skipped while it
    runs), and any number of requests during a run make one run after it."""

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
        self._requested = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.fired = 0

    def start(self) -> None:
        self.wakeups.start(self.soon)
        for target, name in ((self._tick_loop, "safety-tick"), (self._work_loop, "reconcile")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _tick_loop(self) -> None:
        # Event.wait measures on the monotonic clock: wall-clock steps do not touch it
        while not self._stopping.wait(self._tick):
            self.soon()

    def _work_loop(self) -> None:
        while not self._stopping.is_set():
            if self._requested.wait(0.5):
                self.run_requested()

    def stop(self) -> None:
        # first let any fire() in flight finish and make later ones return at once
        with self._busy:
            self._stopping.set()
        self._requested.set()
        self.wakeups.stop()
        for thread in self._threads:
            thread.join(timeout=10)

    def soon(self) -> None:
        """Reconcile on the timer's thread as soon as it can; requests coalesce."""
        self._requested.set()

    def run_requested(self) -> bool:
        """Run one reconcile if one was asked for (the worker thread, or a test)."""
        if not self._requested.is_set():
            return False
        self._requested.clear()
        self.fire()
        return True

    def fire(self) -> None:
        """Reconcile now, on the caller's thread, and plan the wake-ups it asks for."""
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

    def plan(self, instants: Iterable[datetime]) -> None:
        """Plan the wake-ups, each rounded up to its whole second: a fan-out's 10,000
        grace ends (one per publish, milliseconds apart) wake the reconciler once a
        second, not once each. Transitions fall on whole seconds and keep their
        instant; anything else is reconciled at most a second late (a reconcile is
        level-triggered, so later is never wrong)."""
        self.wakeups.plan(sorted({whole_second(at) for at in instants})[:MAX_WAKEUPS])

    def pending(self) -> list[datetime]:
        """Instants of the wake-ups planned."""
        return self.wakeups.planned()
