"""APScheduler as the timer: wake the reconciler at every transition, and on a tick.

It is never the source of truth. Wake-ups are one-shot DateTriggers with deterministic
ids (so re-planning replaces rather than duplicates them); misfires are never dropped,
and a late wake-up simply runs the level-triggered reconcile late.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)

MAX_WAKEUPS = 200


class Timer:
    def __init__(self, wake: Callable[[], Iterable[datetime]], tick: timedelta) -> None:
        """`wake` runs a reconcile and returns the instants to wake up at next."""
        self._wake = wake
        self._tick = tick
        self._busy = threading.Lock()
        self._stopping = threading.Event()
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )

    def start(self) -> None:
        self._scheduler.add_job(
            self.fire,
            IntervalTrigger(seconds=self._tick.total_seconds(), timezone=UTC),
            id="safety-tick",
            replace_existing=True,
        )
        self._scheduler.start()

    def stop(self) -> None:
        # APScheduler's shutdown() holds the job-store lock while it waits for running
        # jobs; a job that adds a wake-up then waits for that lock: a deadlock. So first
        # let any fire() in flight finish and make later ones return at once.
        with self._busy:
            self._stopping.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def fire(self) -> None:
        with self._busy:
            if self._stopping.is_set():
                return
            try:
                instants = list(self._wake())
            except Exception:
                log.exception("reconcile failed; the safety tick will try again")
                return
            self.plan(instants)

    def soon(self) -> None:
        """Run a reconcile on the timer's thread as soon as it can; requests coalesce."""
        if self._stopping.is_set():
            return
        self._scheduler.add_job(
            self.fire,
            DateTrigger(run_date=datetime.now(UTC), timezone=UTC),
            id="soon",
            replace_existing=True,
        )

    def plan(self, instants: Iterable[datetime]) -> None:
        for at in sorted(set(instants))[:MAX_WAKEUPS]:
            self._scheduler.add_job(
                self.fire,
                DateTrigger(run_date=at, timezone=UTC),
                id=f"wake-{at.isoformat()}",
                replace_existing=True,
            )

    def pending(self) -> list[datetime]:
        """Instants of the wake-ups planned (empty before start)."""
        if not self._scheduler.running:
            return []
        return sorted(
            job.next_run_time for job in self._scheduler.get_jobs() if job.id.startswith("wake-")
        )
