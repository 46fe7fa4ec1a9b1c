"""The history store on SQLAlchemy (SQLite or PostgreSQL): see `history.py`.

Events go in with one executemany of `INSERT ... ON CONFLICT DO NOTHING` (which
SQLAlchemy sends as a few multi-row INSERTs), in one transaction per call: the intake
calls it once per batch, whatever its size, and a step told twice (an ack and then the
retained state, or a batch decided again after a database error) is stored once.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from controller.store.history import (
    ControllerRun,
    DeviceEvent,
    EventKind,
    Verdict,
    WindowRecord,
)
from controller.store.sql import chunks, text_value, writing
from controller.store.tables import ControllerRunRow, DeviceEventRow, WindowOutcomeRow

CHUNK = 500
"""Rows per multi-row upsert of outcomes: 10 columns each stays under every
bound-parameter limit."""


def _upsert(s: Session, table: Any) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_*`."""
    name = s.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for {name}")


def _event(row: Any) -> DeviceEvent:
    return DeviceEvent(
        device_id=row.device_id,
        kind=EventKind(row.kind),
        received_at=row.received_at,
        version=row.version,
        step_at=row.step_at,
        applied_at=row.applied_at,
        state=row.state,
        source=row.source,
        confirmed_by=row.confirmed_by,
        reading=row.reading,
        reason=row.reason,
    )


def _run(row: ControllerRunRow) -> ControllerRun:
    return ControllerRun(row.id, row.started_at, row.alive_at, row.stopped_at)


def _outcome(row: WindowOutcomeRow) -> WindowRecord:
    return WindowRecord(
        device_id=row.device_id,
        site_id=row.site_id,
        campaign_id=row.campaign_id,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        state=dict(row.state),
        verdict=Verdict(row.verdict),
        decided_at=row.decided_at,
        confirmed_at=row.confirmed_at,
        reported_at=row.reported_at,
    )


class SqlHistory:
    def __init__(self, sessions: sessionmaker[Session], turn: threading.Lock | None = None) -> None:
        self.sessions = sessions
        self.turn = turn

    def add_events(self, events: Sequence[DeviceEvent]) -> int:
        if not events:
            return 0
        rows = [
            {
                "device_id": e.device_id,
                "kind": e.kind.value,
                "received_at": e.received_at,
                "version": e.version,
                "step_at": e.step_at,
                "applied_at": e.applied_at,
                "state": e.state,
                "source": text_value(e.source),
                "confirmed_by": text_value(e.confirmed_by),
                "reading": e.reading,
                "reason": text_value(e.reason),
            }
            for e in _first_of_each(events)
        ]
        table = DeviceEventRow.__table__
        with writing(self.sessions, self.turn) as s:
            # one executemany of a cached statement: SQLAlchemy sends it as a few
            # multi-row INSERTs ("insertmanyvalues"); RETURNING tells which rows were new
            stmt = _upsert(s, table).on_conflict_do_nothing().returning(table.c.id)
            return len(s.connection().execute(stmt, rows).all())

    def events(
        self,
        device_ids: Collection[str] | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Collection[EventKind] | None = None,
        limit: int | None = None,
    ) -> list[DeviceEvent]:
        query = select(DeviceEventRow)
        if since is not None:
            query = query.where(DeviceEventRow.received_at >= since)
        if until is not None:
            query = query.where(DeviceEventRow.received_at < until)
        if kinds is not None:
            query = query.where(DeviceEventRow.kind.in_(sorted(k.value for k in kinds)))
        if limit is not None:
            query = query.order_by(
                DeviceEventRow.received_at.desc(), DeviceEventRow.id.desc()
            ).limit(limit)
        else:
            query = query.order_by(DeviceEventRow.received_at, DeviceEventRow.id)
        found: list[tuple[datetime, int, DeviceEvent]] = []
        with self.sessions() as s:
            parts: list[Sequence[str] | None] = (
                [None] if device_ids is None else list(chunks(sorted(device_ids)))
            )
            for part in parts:
                q = query if part is None else query.where(DeviceEventRow.device_id.in_(part))
                found.extend((r.received_at, r.id, _event(r)) for r in s.scalars(q))
        found.sort(key=lambda f: (f[0], f[1]))
        if limit is not None:
            found = found[max(len(found) - limit, 0) :]
        return [event for _, _, event in found]

    def step_events(
        self, device_ids: Collection[str] | None, step_since: datetime
    ) -> list[DeviceEvent]:
        query = (
            select(DeviceEventRow)
            .where(DeviceEventRow.kind == EventKind.STEP.value)
            .where(DeviceEventRow.step_at >= step_since)
            .order_by(DeviceEventRow.step_at, DeviceEventRow.received_at, DeviceEventRow.id)
        )
        with self.sessions() as s:
            if device_ids is None:
                return [_event(r) for r in s.scalars(query)]
            found: list[DeviceEvent] = []
            for part in chunks(sorted(device_ids)):
                found.extend(
                    _event(r) for r in s.scalars(query.where(DeviceEventRow.device_id.in_(part)))
                )
        found.sort(key=lambda e: (e.step_at or step_since, e.received_at))
        return found

    def first_heard(self, device_ids: Collection[str] | None = None) -> dict[str, datetime]:
        query = select(DeviceEventRow.device_id, func.min(DeviceEventRow.received_at)).group_by(
            DeviceEventRow.device_id
        )
        out: dict[str, datetime] = {}
        with self.sessions() as s:
            parts: list[Sequence[str] | None] = (
                [None] if device_ids is None else list(chunks(sorted(device_ids)))
            )
            for part in parts:
                q = query if part is None else query.where(DeviceEventRow.device_id.in_(part))
                for device_id, first in s.execute(q):
                    out[device_id] = _aware(first)
        return out

    def start_run(self, at: datetime) -> ControllerRun:
        with self.sessions.begin() as s:
            row = ControllerRunRow(started_at=at, alive_at=at)
            s.add(row)
            s.flush()
            return _run(row)

    def beat(self, run_id: int, at: datetime, stopped: bool = False) -> None:
        with self.sessions.begin() as s:
            row = s.get(ControllerRunRow, run_id)
            if row is None or row.stopped_at is not None:
                return
            alive = max(row.alive_at, at)
            s.execute(
                update(ControllerRunRow)
                .where(ControllerRunRow.id == run_id)
                .values(alive_at=alive, stopped_at=alive if stopped else None)
            )

    def runs(self, since: datetime | None = None) -> list[ControllerRun]:
        query = select(ControllerRunRow).order_by(ControllerRunRow.started_at, ControllerRunRow.id)
        if since is not None:
            query = query.where(ControllerRunRow.alive_at >= since)
        with self.sessions() as s:
            return [_run(r) for r in s.scalars(query)]

    def put_outcomes(self, records: Sequence[WindowRecord]) -> int:
        if not records:
            return 0
        latest = {r.key: r for r in records}  # the last of each key wins, as in memory
        rows = [
            {
                "device_id": r.device_id,
                "site_id": r.site_id,
                "campaign_id": r.campaign_id,
                "starts_at": r.starts_at,
                "ends_at": r.ends_at,
                "state": r.state,
                "verdict": r.verdict.value,
                "decided_at": r.decided_at,
                "confirmed_at": r.confirmed_at,
                "reported_at": r.reported_at,
            }
            for r in latest.values()
        ]
        table = WindowOutcomeRow.__table__
        with writing(self.sessions, self.turn) as s:
            for part in chunks(rows, CHUNK):
                stmt = _upsert(s, table).values(list(part))
                stmt = stmt.on_conflict_do_update(
                    index_elements=["device_id", "campaign_id", "starts_at"],
                    set_={
                        name: stmt.excluded[name]
                        for name in (
                            "site_id",
                            "ends_at",
                            "state",
                            "verdict",
                            "decided_at",
                            "confirmed_at",
                            "reported_at",
                        )
                    },
                )
                s.connection().execute(stmt)
        return len(records)

    def outcomes(
        self,
        *,
        device_id: str | None = None,
        campaign_id: str | None = None,
        ends_since: datetime | None = None,
        starts_before: datetime | None = None,
    ) -> list[WindowRecord]:
        query = select(WindowOutcomeRow).order_by(
            WindowOutcomeRow.starts_at, WindowOutcomeRow.device_id, WindowOutcomeRow.campaign_id
        )
        if device_id is not None:
            query = query.where(WindowOutcomeRow.device_id == device_id)
        if campaign_id is not None:
            query = query.where(WindowOutcomeRow.campaign_id == campaign_id)
        if ends_since is not None:
            query = query.where(WindowOutcomeRow.ends_at >= ends_since)
        if starts_before is not None:
            query = query.where(WindowOutcomeRow.starts_at < starts_before)
        with self.sessions() as s:
            return [_outcome(r) for r in s.scalars(query)]


def _aware(value: datetime) -> datetime:
    """An aggregate's instant comes back without the column's type on SQLite."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _first_of_each(events: Sequence[DeviceEvent]) -> list[DeviceEvent]:
    """The events in order, a step told twice in the same batch kept once (its first)."""
    seen: set[tuple[str, str, int, datetime]] = set()
    out = []
    for e in events:
        key = e.unique_key
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(e)
    return out


def sql_history(sessions: sessionmaker[Session], turn: threading.Lock | None = None) -> SqlHistory:
    """The history store of one database; `turn` is the lock the stores' other writers
    take turns on (SQLite), so the intake's writes queue behind one another."""
    return SqlHistory(sessions, turn)
