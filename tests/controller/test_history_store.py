"""One contract for the record's store: memory, SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from controller.store.db import alembic_config, migrate
from controller.store.history import (
    DeviceEvent,
    EventKind,
    HistoryStore,
    MemoryHistory,
    Verdict,
    WindowRecord,
)
from controller.store.history_sql import sql_history
from controller.store.tables import Base
from tests.support.stores import SQL_KINDS, Database, sql_database

NOW = datetime(2026, 7, 30, 19, 30, tzinfo=UTC)
BLUE = {"on": True, "color": "#009EDB", "level": 80, "transition_s": 0.0}
OFF = {"on": False, "color": "#000000", "level": 0, "transition_s": 0.0}
TABLES = ("device_events", "controller_runs", "window_outcomes")


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


@pytest.fixture(params=["memory", *SQL_KINDS])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HistoryStore]:
    if request.param == "memory":
        yield MemoryHistory()
        return
    with sql_database(request.param, tmp_path) as (_, sessions, _stores):
        yield sql_history(sessions)


@pytest.fixture(params=SQL_KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with sql_database(request.param, tmp_path) as found:
        yield found


def step(device: str, version: int, step_at: datetime, received: datetime, **kw: object):
    return DeviceEvent(
        device,
        EventKind.STEP,
        received,
        version=version,
        step_at=step_at,
        applied_at=kw.pop("applied_at", step_at),  # type: ignore[arg-type]
        state=kw.pop("state", BLUE),  # type: ignore[arg-type]
        source=kw.pop("source", "ack"),  # type: ignore[arg-type]
    )


def test_each_step_is_kept_once_the_first_report_winning(history: HistoryStore) -> None:
    start = step("d1", 1, at(0), at(0.1))
    end = step("d1", 1, at(60), at(60.1), state=OFF)
    assert history.add_events([start, end]) == 2
    # the same steps told again (the retained state, a batch decided twice), and in one
    # batch twice over: nothing new; the first report's times stay
    again = step("d1", 1, at(0), at(5), applied_at=at(4), source="state")
    assert history.add_events([again, again, step("d1", 1, at(60), at(61), state=OFF)]) == 0
    assert history.events(["d1"]) == [start, end]
    # another version, another device: new steps
    assert history.add_events([step("d1", 2, at(0), at(6)), step("d2", 1, at(0), at(0.2))]) == 2
    assert [(e.device_id, e.version) for e in history.step_events(None, at(0))] == [
        ("d1", 1),
        ("d2", 1),
        ("d1", 2),
        ("d1", 1),
    ]
    assert [e.step_at for e in history.step_events(["d1"], at(30))] == [at(60)]


def test_status_events_are_all_kept_and_filtered(history: HistoryStore) -> None:
    events = [
        DeviceEvent("d1", EventKind.OFFLINE, at(1)),
        DeviceEvent("d1", EventKind.ONLINE, at(2)),
        DeviceEvent("d1", EventKind.OFFLINE, at(3)),
        step("d1", 1, at(0), at(4)),
        DeviceEvent("d2", EventKind.ONLINE, at(5)),
    ]
    assert history.add_events(events) == 5
    assert history.add_events([DeviceEvent("d1", EventKind.OFFLINE, at(3))]) == 1
    status = (EventKind.ONLINE, EventKind.OFFLINE)
    got = history.events(["d1"], kinds=status)
    assert [(e.kind, e.received_at) for e in got] == [
        (EventKind.OFFLINE, at(1)),
        (EventKind.ONLINE, at(2)),
        (EventKind.OFFLINE, at(3)),
        (EventKind.OFFLINE, at(3)),
    ]
    assert [e.received_at for e in history.events(["d1"], since=at(2), until=at(4))] == [
        at(2),
        at(3),
        at(3),
    ]
    newest = history.events(None, limit=2)
    assert [e.received_at for e in newest] == [at(4), at(5)]  # the newest, oldest first
    assert history.first_heard() == {"d1": at(1), "d2": at(5)}
    assert history.first_heard(["d2", "d3"]) == {"d2": at(5)}
    assert history.events(["nobody"]) == []


def test_runs_start_beat_and_stop(history: HistoryStore) -> None:
    first = history.start_run(at(0))
    history.beat(first.id, at(1))
    history.beat(first.id, at(0.5))  # a beat never moves it back
    history.beat(first.id, at(2), stopped=True)
    history.beat(first.id, at(9))  # a stopped run stays stopped
    second = history.start_run(at(10))
    history.beat(second.id, at(11))
    runs = history.runs()
    assert [(r.id, r.started_at, r.alive_at, r.stopped_at) for r in runs] == [
        (first.id, at(0), at(2), at(2)),
        (second.id, at(10), at(11), None),
    ]
    assert [r.id for r in history.runs(since=at(5))] == [second.id]
    assert second.id != first.id


def record(device: str, campaign: str, start: float, verdict: Verdict, **kw: object):
    return WindowRecord(
        device_id=device,
        site_id=kw.pop("site", "menin-gate"),  # type: ignore[arg-type]
        campaign_id=campaign,
        starts_at=at(start),
        ends_at=at(start + 60),
        state=BLUE,
        verdict=verdict,
        decided_at=kw.pop("decided", at(start + 61)),  # type: ignore[arg-type]
        confirmed_at=kw.pop("confirmed", None),  # type: ignore[arg-type]
        reported_at=kw.pop("reported", None),  # type: ignore[arg-type]
    )


def test_outcomes_are_replaced_by_key_and_kept(history: HistoryStore) -> None:
    missed = record("d1", "blue-heart", 0, Verdict.MISSED)
    other = record("d2", "blue-heart", 0, Verdict.CONFIRMED, site="cloth-hall", confirmed=at(0))
    later = record("d1", "blue-heart", 1440, Verdict.UNCONFIRMED)
    elsewhere = record("d1", "orange-day", 0, Verdict.OFFLINE)
    assert history.put_outcomes([missed, other, later, elsewhere]) == 4
    late = replace(missed, verdict=Verdict.CONFIRMED_LATE, confirmed_at=at(0), reported_at=at(70))
    history.put_outcomes([late])
    assert history.outcomes(campaign_id="blue-heart") == [late, other, later]
    assert history.outcomes(device_id="d1") == [late, elsewhere, later]
    assert history.outcomes(ends_since=at(100)) == [later]
    assert history.outcomes(device_id="d1", starts_before=at(1)) == [late, elsewhere]
    assert history.outcomes(campaign_id="nothing") == []


def test_migration_0008_matches_the_tables_and_goes_down_and_up(db: Database) -> None:
    engine = db[0]
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if any(t in repr(d) for t in TABLES)] == []
    cfg = alembic_config(str(engine.url))
    below = ScriptDirectory.from_config(cfg).get_revision("0008").down_revision
    assert isinstance(below, str)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, below)
    with engine.connect() as conn:
        assert not set(TABLES) & set(inspect(conn).get_table_names())
    migrate(engine)
    with engine.connect() as conn:
        assert set(TABLES) <= set(inspect(conn).get_table_names())


def test_many_devices_at_once(history: HistoryStore) -> None:
    """More devices than one insert or one IN (...) list holds."""
    ids = [f"d{i:05d}" for i in range(2500)]
    events = [DeviceEvent(d, EventKind.ONLINE, at(i / 1000)) for i, d in enumerate(ids)]
    events += [step(d, 1, at(1), at(2)) for d in ids]
    assert history.add_events(events) == 5000
    assert history.add_events(events[2500:]) == 0
    assert len(history.events(ids, kinds=[EventKind.ONLINE])) == 2500
    assert [e.device_id for e in history.events(ids, limit=3)] == ids[-3:]
    assert len(history.step_events(ids, at(0))) == 2500
    assert len(history.first_heard(ids)) == 2500
