"""Readiness that tells the truth: the database answers in time, the broker link is up,
and the intake keeps up. `/readyz` answers from `Readiness.checks`.

- **Database.** `DatabaseProbe` asks for what the intake needs, not just a connection:
  with SQLite, the write lock (`BEGIN IMMEDIATE`; in WAL mode reads never wait, so a
  `SELECT 1` answers while every writer is stuck behind another's lock); with
  PostgreSQL, the lock writers take on the tables the intake writes (`ROW EXCLUSIVE`,
  under `lock_timeout` and `statement_timeout`) and a read of the devices. Each probe
  uses a fresh connection with the bound as its busy/connect timeout, and runs on a
  thread of its own that the caller waits for at most the bound plus a second: a
  database that hangs in a way no timeout covers (a lost network) still answers "not
  ready" in time. While a probe is stuck, the next one waits for it as long, then
  answers "not ready" without starting another: probes never pile up.
- **Broker.** The link is connected and subscribed.
- **Intake.** The backlog (messages received and not stored yet, `Inbox.backlog`) is
  within its bound, in count and in the age of its oldest message.

Devices offline are reported on /metrics (`illuminate_devices_offline`) and do not
fail readiness: a fleet that lost its power or its network is not a controller that
cannot serve; taking the controller out of a load balancer would only hide the page
that says so.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from controller.inbox import Backlog

log = logging.getLogger(__name__)

DATABASE_TIMEOUT_S = 2.0
DEADLINE_MARGIN_S = 1.0
BACKLOG_MAX = 10_000
BACKLOG_AGE_S = 30.0
WRITTEN_TABLES = ("devices", "commands", "command_events")
"""The tables the intake writes: a writer's lock on them is what the probe asks for."""


class DatabaseProbe:
    """Can a writer get at the database within `timeout_s`? (See the module.)"""

    def __init__(self, url: str, timeout_s: float = DATABASE_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.timeout_s = timeout_s
        self.sqlite = url.startswith("sqlite")
        self.engine = self._engine(url)
        self._running: threading.Thread | None = None
        self._lock = threading.Lock()

    def _engine(self, url: str) -> Engine:
        if self.sqlite:
            args: dict[str, Any] = {
                "check_same_thread": False,
                "timeout": self.timeout_s,  # the busy timeout
                "isolation_level": None,  # transactions begun by hand (BEGIN IMMEDIATE)
            }
        else:
            args = {"connect_timeout": max(2, math.ceil(self.timeout_s))}
        return create_engine(url, poolclass=NullPool, connect_args=args)

    @property
    def deadline_s(self) -> float:
        """How long a caller waits for one probe: the database's own timeouts end it
        at `timeout_s`; this is the backstop for a hang they do not cover."""
        return self.timeout_s + DEADLINE_MARGIN_S

    def __call__(self) -> bool:
        with self._lock:
            last = self._running
            if last is not None and last.is_alive():
                last.join(self.deadline_s)
                if last.is_alive():
                    return False  # the last probe is stuck: start no other
            result: list[bool] = []
            thread = threading.Thread(
                target=self._probe, args=(result,), name="database-probe", daemon=True
            )
            self._running = thread
            thread.start()
            thread.join(self.deadline_s)
        return bool(result) and result[0]

    def _probe(self, result: list[bool]) -> None:
        try:
            connection = self.engine.raw_connection()
            try:
                cursor = connection.cursor()
                if self.sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                    cursor.execute("SELECT 1 FROM devices LIMIT 1").fetchall()
                    cursor.execute("ROLLBACK")
                else:
                    ms = max(1, int(self.timeout_s * 1000))
                    cursor.execute(f"SET LOCAL lock_timeout = {ms}")
                    cursor.execute(f"SET LOCAL statement_timeout = {ms}")
                    tables = ", ".join(WRITTEN_TABLES)
                    cursor.execute(f"LOCK TABLE {tables} IN ROW EXCLUSIVE MODE")
                    cursor.execute("SELECT 1 FROM devices LIMIT 1")
                    cursor.fetchall()
                    connection.rollback()
                cursor.close()
            finally:
                connection.close()
            result.append(True)
        except Exception as exc:
            log.warning("readiness: the database did not answer: %s", str(exc).splitlines()[0])
            result.append(False)

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass(frozen=True)
class BacklogBound:
    """How much unstored intake is still 'keeping up'."""

    max_count: int = BACKLOG_MAX
    max_age_s: float = BACKLOG_AGE_S

    def within(self, backlog: Backlog, now: float) -> bool:
        return backlog.count <= self.max_count and backlog.age_s(now) <= self.max_age_s


class Readiness:
    """The checks /readyz reports; ready when every one is True."""

    def __init__(
        self,
        database: Callable[[], bool],
        broker: Callable[[], bool],
        backlog: Callable[[], Backlog],
        bound: BacklogBound,
        monotonic: Callable[[], float],
    ) -> None:
        self.database = database
        self.broker = broker
        self.backlog = backlog
        self.bound = bound
        self.monotonic = monotonic

    def checks(self) -> dict[str, bool]:
        return {
            "database": self.database(),
            "broker": self.broker(),
            "intake": self.bound.within(self.backlog(), self.monotonic()),
        }
