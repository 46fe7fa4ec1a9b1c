"""Readiness that tells the truth (controller/health.py).

- The database probe answers "not ready" within its bound while another connection
  holds the lock a writer needs (SQLite: the write lock; PostgreSQL: a table lock), on
  real SQLite and PostgreSQL, and "ready" again once it is released.
- The intake backlog (inbox plus the batch being stored) and its oldest message's age,
  on a fake clock: counted, bounded, and gone once stored; and the controller's
  /readyz and /metrics report them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from controller.app import Controller
from controller.broker.base import Incoming
from controller.health import BacklogBound, DatabaseProbe, Readiness
from controller.inbox import Backlog, Inbox
from controller.settings import load_settings
from controller.store.sql import database
from devices.clock import FakeClock
from devices.protocol import Topics
from tests.controller.test_staff_api import serve
from tests.support.databases import postgres_database
from tests.support.stores import sql_database

TOPICS = Topics("illuminate/v1")
BOUND_S = 0.5
WAIT_S = 30.0
"""How long a test waits for a probe that must return: generous (the bound is 0.5 s)."""
T0 = datetime(2025, 6, 10, 19, 0, tzinfo=UTC)


def _state(device: str, n: int = 0) -> Incoming:
    body = b'{"v":1,"on":false,"n":%d}' % n
    return Incoming(f"illuminate/v1/devices/{device}/state", body, True)


def _ack(device: str) -> Incoming:
    return Incoming(f"illuminate/v1/devices/{device}/ack", b"{}", False)


# ---- the backlog ------------------------------------------------------------------------


def test_backlog_counts_waiting_and_taken_until_settled_with_the_oldest_arrival() -> None:
    clock = FakeClock(T0)
    inbox = Inbox(TOPICS, monotonic=clock.monotonic)
    assert inbox.backlog() == Backlog(0, None)
    start = clock.monotonic()
    inbox.put(_ack("dev-a"))
    clock.advance(2)
    inbox.put(_ack("dev-b"))
    inbox.put(_ack("dev-a"))
    clock.advance(3)
    backlog = inbox.backlog()
    assert backlog == Backlog(3, start)
    assert backlog.age_s(clock.monotonic()) == 5.0

    taken = inbox.take(2, timeout=0)  # dev-a's two acks
    assert len(taken) == 2
    assert inbox.backlog() == Backlog(3, start)  # taken, not stored yet: still backlog
    clock.advance(1)
    inbox.settle()
    assert inbox.backlog() == Backlog(1, start + 2)
    assert inbox.backlog().age_s(clock.monotonic()) == 4.0

    inbox.take(10, timeout=0)
    inbox.take(10, timeout=0)  # a new take means the last one is done
    assert inbox.backlog() == Backlog(0, None)
    assert inbox.backlog().age_s(clock.monotonic()) == 0.0


def test_a_coalesced_report_keeps_the_count_and_ages_from_the_newest() -> None:
    clock = FakeClock(T0)
    inbox = Inbox(TOPICS, monotonic=clock.monotonic)
    inbox.put(_state("dev-a", 1))
    clock.advance(10)
    inbox.put(_state("dev-a", 2))  # replaces the first, which is dropped (counted)
    assert inbox.backlog() == Backlog(1, clock.monotonic())


def test_readiness_fails_while_the_backlog_is_over_its_count_or_age_bound() -> None:
    clock = FakeClock(T0)
    inbox = Inbox(TOPICS, monotonic=clock.monotonic)
    ready = Readiness(
        database=lambda: True,
        broker=lambda: True,
        backlog=inbox.backlog,
        bound=BacklogBound(max_count=3, max_age_s=30),
        monotonic=clock.monotonic,
    )
    assert ready.checks() == {"database": True, "broker": True, "intake": True}
    for device in ("dev-a", "dev-b", "dev-c"):
        inbox.put(_ack(device))
    assert ready.checks()["intake"] is True  # at the bound
    inbox.put(_ack("dev-d"))
    assert ready.checks()["intake"] is False  # over it
    inbox.take(2, timeout=0)
    inbox.settle()
    assert ready.checks()["intake"] is True

    clock.advance(30)
    assert ready.checks()["intake"] is True  # the oldest has waited exactly the bound
    clock.advance(0.5)
    assert ready.checks()["intake"] is False
    inbox.take(10, timeout=0)
    assert ready.checks()["intake"] is False  # taken, not stored: the age still counts
    inbox.settle()
    assert ready.checks() == {"database": True, "broker": True, "intake": True}


def test_the_controller_reports_its_backlog_on_readyz_and_metrics(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    settings = load_settings(
        None, data_dir=tmp_path, health={"backlog_max": 2, "backlog_age_s": 10}
    )
    controller = Controller(settings, clock=clock)  # not started: nothing takes the inbox
    try:
        with serve(controller.web) as http:
            _report_backlog(controller, clock, http)
    finally:
        controller.stop()


def _report_backlog(controller: Controller, clock: FakeClock, http: httpx.Client) -> None:
    def sample(name: str) -> float:
        for line in http.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")

    assert sample("illuminate_intake_backlog") == 0
    assert sample("illuminate_intake_oldest_age_seconds") == 0
    controller.inbox.put(_ack("dev-a"))
    clock.advance(4)
    controller.inbox.put(_ack("dev-b"))
    clock.advance(2.5)
    assert sample("illuminate_intake_backlog") == 2
    assert sample("illuminate_intake_oldest_age_seconds") == 6.5
    ready = http.get("/readyz")
    assert ready.status_code == 503  # the broker link is not up (never started)
    assert ready.json()["checks"] == {"database": True, "broker": False, "intake": True}
    controller.inbox.put(_ack("dev-c"))
    assert http.get("/readyz").json()["checks"]["intake"] is False
    controller.inbox.take(1, timeout=0)
    controller.inbox.settle()
    assert http.get("/readyz").json()["checks"]["intake"] is True
    clock.advance(8)  # dev-b's ack (the oldest left) has now waited 10.5 s
    assert sample("illuminate_intake_oldest_age_seconds") == 10.5
    assert http.get("/readyz").json()["checks"]["intake"] is False


# ---- the database probe -----------------------------------------------------------------


def _probe_returns(probe: DatabaseProbe) -> bool:
    """Run the probe on a thread of the test's; fail (not hang) if it does not return."""
    out: list[bool] = []
    thread = threading.Thread(target=lambda: out.append(probe()), daemon=True)
    thread.start()
    thread.join(WAIT_S)
    assert out, "the probe did not return while the database was locked"
    return out[0]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    with sql_database("sqlite", tmp_path):
        yield f"sqlite:///{tmp_path / 'illuminate.sqlite'}"


def test_sqlite_probe_is_not_ready_while_another_writer_holds_the_lock(sqlite_url: str) -> None:
    probe = DatabaseProbe(sqlite_url, timeout_s=BOUND_S)
    try:
        assert _probe_returns(probe) is True
        holder = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # a writer's lock; readers still read (WAL)
            holder.execute("UPDATE devices SET online = NULL")
            assert holder.execute("SELECT count(*) FROM devices").fetchone() == (0,)
            assert _probe_returns(probe) is False
            assert _probe_returns(probe) is False  # and again: nothing stuck behind it
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert _probe_returns(probe) is True
    finally:
        probe.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url, database(url):
        yield url


@pytest.mark.parametrize(
    ("table", "mode"),
    [("devices", "ACCESS EXCLUSIVE"), ("commands", "SHARE"), ("command_events", "EXCLUSIVE")],
)
def test_postgres_probe_is_not_ready_while_a_table_lock_stops_writers(
    postgres_url: str, table: str, mode: str
) -> None:
    probe = DatabaseProbe(postgres_url, timeout_s=BOUND_S)
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        assert _probe_returns(probe) is True
        with psycopg.connect(plain) as holder:
            holder.execute(f"LOCK TABLE {table} IN {mode} MODE")  # held until the rollback
            assert _probe_returns(probe) is False
            holder.rollback()
        assert _probe_returns(probe) is True
    finally:
        probe.dispose()


def test_a_probe_that_cannot_connect_is_not_ready() -> None:
    probe = DatabaseProbe("postgresql+psycopg://postgres@127.0.0.1:1/none", timeout_s=BOUND_S)
    try:
        assert _probe_returns(probe) is False
    finally:
        probe.dispose()


def test_a_stuck_probe_answers_not_ready_in_time_and_starts_no_other() -> None:
    release = threading.Event()
    started: list[int] = []

    class Stuck(DatabaseProbe):
        def _probe(self, result: list[bool]) -> None:
            started.append(1)
            release.wait(WAIT_S)
            result.append(True)

    probe = Stuck("sqlite://", timeout_s=0.05)
    try:
        assert _probe_returns(probe) is False  # the deadline passed
        assert _probe_returns(probe) is False  # still stuck: no second probe
        assert len(started) == 1
        release.set()
        assert probe._running is not None
        probe._running.join(WAIT_S)
        probe.timeout_s = WAIT_S  # a probe that returns at once, waited for generously
        assert _probe_returns(probe) is True
        assert len(started) == 2
    finally:
        release.set()
        probe.dispose()


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DatabaseProbe("sqlite://", timeout_s=0)
