"""The stores on SQLAlchemy: SQLite (WAL) or PostgreSQL. One transaction per batch.

Every lifecycle write is a compare-and-set: the batch reads the rows' current states,
decides, and updates `WHERE id = ? AND state = <what it read>`. If another writer got
there first, the whole batch is rolled back and decided again on the new states, so no
decision is ever made against a stale read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Engine, and_, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from controller.lifecycle import FINAL, CommandState, can_move
from controller.registration import BatchRejected, find_problems
from controller.store.audit import AuditRecord, SqlAuditLog, write_records
from controller.store.base import (
    BeforeCommit,
    CampaignRecord,
    Command,
    CommandEvent,
    DeviceRecord,
    DeviceView,
    InUse,
    Move,
    NewDevice,
    NewVersion,
    RegistryError,
    Retired,
    Stores,
    UnknownObject,
)
from controller.store.rollouts import SqlRollouts
from controller.store.tables import (
    CampaignRow,
    CityRow,
    CommandEventRow,
    CommandRow,
    DeviceRow,
    RevisionRow,
    SiteRow,
)
from schedules.model import Campaign, City, Photo, Site, SiteCatalog

log = logging.getLogger(__name__)

CHUNK = 2000
"""Ids per IN (...) list: well under every database's bound-parameter limit."""
CAS_ATTEMPTS = 8
MAX_REASON = 500

T = TypeVar("T")


class ConcurrentChange(RuntimeError):
    """Another writer changed a row between this batch's read and its write."""


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@contextmanager
def writing(
    sessions: sessionmaker[Session], turn: threading.Lock | None = None
) -> Iterator[Session]:
    """A write transaction. On SQLite it takes the write lock at once (BEGIN IMMEDIATE),
    so a batch's reads and its compare-and-set writes see no other writer in between;
    on PostgreSQL the rows are locked as they are read (FOR UPDATE).

    `turn`, on SQLite, makes this process's writers (the intake, the dispatcher, the
    reconciler) take turns on a lock of their own before they ask SQLite for its one:
    a writer SQLite keeps waiting polls for the lock with sleeps of up to 100 ms, while
    one waiting on `turn` starts the moment the last one commits."""
    bind = sessions.kw.get("bind")
    if turn is None or bind is None or bind.dialect.name != "sqlite":
        with _transaction(sessions) as s:
            yield s
        return
    with turn, _transaction(sessions) as s:
        yield s


@contextmanager
def _transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions.begin() as s:
        if s.get_bind().dialect.name == "sqlite":
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
        yield s


def _rowcount(result: Any) -> int:
    return int(cast("CursorResult[Any]", result).rowcount)


def _bump(s: Session, name: str) -> None:
    s.execute(
        update(RevisionRow).where(RevisionRow.name == name).values(value=RevisionRow.value + 1)
    )


def _revision(sessions: sessionmaker[Session], name: str) -> int:
    with sessions() as s:
        return int(s.scalar(select(RevisionRow.value).where(RevisionRow.name == name)) or 0)


# registry -------------------------------------------------------------------------


class SqlRegistry:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def import_catalog(self, catalog: SiteCatalog) -> tuple[int, int]:
        with self.sessions.begin() as s:
            for city in catalog.cities:
                s.merge(CityRow(id=city.id, name=dict(city.name), timezone=city.timezone))
            s.flush()
            for site in catalog.sites:
                s.merge(_site_row(site))
            _bump(s, "registry")
        return len(catalog.cities), len(catalog.sites)

    def catalog(self) -> SiteCatalog:
        with self.sessions() as s:
            cities = [
                City(id=c.id, name=c.name, timezone=c.timezone)
                for c in s.scalars(select(CityRow).order_by(CityRow.id))
            ]
            sites = [
                Site(
                    id=r.id,
                    city=r.city_id,
                    name=r.name,
                    lat=r.lat,
                    lon=r.lon,
                    tags=tuple(r.tags),
                    photo=None if r.photo is None else Photo.model_validate(r.photo),
                )
                for r in s.scalars(
                    select(SiteRow).where(SiteRow.removed_at.is_(None)).order_by(SiteRow.id)
                )
            ]
        return SiteCatalog(cities=tuple(cities), sites=tuple(sites))

    def add_devices(
        self,
        devices: Sequence[NewDevice],
        now: datetime,
        audit: Sequence[AuditRecord] = (),
        before_commit: BeforeCommit | None = None,
    ) -> None:
        try:
            with self.sessions.begin() as s:
                check_new_devices(devices, *self._known(s, devices))
                self._insert_devices(s, devices, now)
                _bump(s, "registry")
                write_records(s, audit)
                s.flush()
                if before_commit is not None:
                    before_commit()
                return
        except IntegrityError:
            pass  # rolled back: another process registered some of these ids meanwhile
        with self.sessions() as s:
            problems = find_problems(devices, *self._known(s, devices))
        if problems:
            raise BatchRejected(problems)
        raise RegistryError("the registry changed during the registration; nothing was registered")

    @staticmethod
    def _known(s: Session, devices: Sequence[NewDevice]) -> tuple[set[str], set[str]]:
        """The site ids, and which of these device ids are already registered."""
        existing: set[str] = set()
        for part in chunks([d.id for d in devices]):
            existing.update(s.scalars(select(DeviceRow.id).where(DeviceRow.id.in_(part))))
        return set(s.scalars(select(SiteRow.id).where(SiteRow.removed_at.is_(None)))), existing

    def _insert_devices(self, s: Session, devices: Sequence[NewDevice], now: datetime) -> None:
        for batch in chunks(devices):
            s.execute(
                insert(DeviceRow),
                [
                    {
                        "id": d.id,
                        "site_id": d.site_id,
                        "secret_hash": d.secret_hash,
                        "created_at": now,
                        "kind": d.adapter,
                        "config": dict(d.config) if d.config else None,
                        "version_floor": 0,
                    }
                    for d in batch
                ],
            )

    def device_ids(self) -> set[str]:
        with self.sessions() as s:
            return set(s.scalars(select(DeviceRow.id)))

    def devices(self, device_ids: Collection[str] | None = None) -> dict[str, DeviceRecord]:
        query = select(DeviceRow, SiteRow.city_id).join(SiteRow, SiteRow.id == DeviceRow.site_id)
        out: dict[str, DeviceRecord] = {}
        with self.sessions() as s:
            parts: Iterable[Sequence[str] | None] = (
                [None] if device_ids is None else chunks(sorted(device_ids))
            )
            for part in parts:
                q = query if part is None else query.where(DeviceRow.id.in_(part))
                for row, city in s.execute(q.order_by(DeviceRow.id)):
                    out[row.id] = _device_record(row, city)
        return out

    def _live_device(self, s: Session, device_id: str) -> DeviceRow:
        query = select(DeviceRow).where(DeviceRow.id == device_id)
        if s.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        row = s.scalars(query).first()
        if row is None:
            raise UnknownObject(f"no device {device_id!r}")
        if row.decommissioned_at is not None:
            raise Retired(f"device {device_id!r} is decommissioned")
        return row

    def set_secret(
        self,
        device_id: str,
        secret_hash: str,
        now: datetime,
        audit: Sequence[AuditRecord] = (),
        before_commit: BeforeCommit | None = None,
    ) -> None:
        with _transaction(self.sessions) as s:
            row = self._live_device(s, device_id)
            row.secret_hash = secret_hash
            row.credentials_at = now
            row.online = False
            row.status_at = now
            _bump(s, "registry")
            write_records(s, audit)
            s.flush()
            if before_commit is not None:
                before_commit()

    def decommission(
        self,
        device_id: str,
        now: datetime,
        audit: Sequence[AuditRecord] = (),
        before_commit: BeforeCommit | None = None,
    ) -> None:
        with _transaction(self.sessions) as s:
            row = self._live_device(s, device_id)
            row.decommissioned_at = now
            row.secret_hash = None
            row.online = False
            row.status_at = now
            query = select(CommandRow).where(
                CommandRow.device_id == device_id,
                CommandRow.state.not_in([state.value for state in FINAL]),
            )
            if s.get_bind().dialect.name == "postgresql":
                query = query.with_for_update()
            for command in s.scalars(query):
                s.add(
                    CommandEventRow(
                        command_id=command.id,
                        device_id=device_id,
                        version=command.version,
                        from_state=command.state,
                        to_state=CommandState.SUPERSEDED.value,
                        at=now,
                        detail="device decommissioned",
                    )
                )
                command.state = CommandState.SUPERSEDED.value
                command.state_at = now
                command.reason = "device decommissioned"
            _bump(s, "registry")
            write_records(s, audit)
            s.flush()
            if before_commit is not None:
                before_commit()

    def put_site(self, site: Site, now: datetime, audit: Sequence[AuditRecord] = ()) -> bool:
        with _transaction(self.sessions) as s:
            if s.get(CityRow, site.city) is None:
                raise UnknownObject(f"unknown city {site.city!r}")
            old = s.get(SiteRow, site.id)
            created = old is None or old.removed_at is not None
            s.merge(_site_row(site))
            _bump(s, "registry")
            write_records(s, audit)
        return created

    def remove_site(self, site_id: str, now: datetime, audit: Sequence[AuditRecord] = ()) -> None:
        with _transaction(self.sessions) as s:
            row = s.get(SiteRow, site_id)
            if row is None or row.removed_at is not None:
                raise UnknownObject(f"no site {site_id!r}")
            active = sorted(
                s.scalars(
                    select(DeviceRow.id).where(
                        DeviceRow.site_id == site_id, DeviceRow.decommissioned_at.is_(None)
                    )
                )
            )
            if active:
                raise in_use(site_id, active)
            row.removed_at = now
            _bump(s, "registry")
            write_records(s, audit)

    def revision(self) -> int:
        return _revision(self.sessions, "registry")


def in_use(site_id: str, devices: Sequence[str]) -> InUse:
    shown = ", ".join(devices[:10]) + (
        f" and {len(devices) - 10} more" if len(devices) > 10 else ""
    )
    return InUse(
        f"site {site_id!r} has {len(devices)} device{'s' if len(devices) != 1 else ''} in "
        f"service ({shown}): decommission them first",
        devices,
    )


def _site_row(site: Site) -> SiteRow:
    return SiteRow(
        id=site.id,
        city_id=site.city,
        name=dict(site.name),
        lat=site.lat,
        lon=site.lon,
        tags=list(site.tags),
        photo=None if site.photo is None else site.photo.model_dump(mode="json"),
        removed_at=None,
    )


def _device_record(row: DeviceRow, city: str) -> DeviceRecord:
    return DeviceRecord(
        id=row.id,
        site_id=row.site_id,
        city=city,
        adapter=row.kind,
        config=dict(row.config or {}),
        created_at=row.created_at,
        credentials_at=row.credentials_at,
        decommissioned_at=row.decommissioned_at,
    )


def check_new_devices(
    devices: Sequence[NewDevice], site_ids: Collection[str], existing: Collection[str]
) -> None:
    """Raise BatchRejected (a RegistryError) naming every problem of a batch (the same
    checks in every store)."""
    problems = find_problems(devices, site_ids, existing)
    if problems:
        raise BatchRejected(problems)


# campaigns ------------------------------------------------------------------------


class SqlCampaigns:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def put(self, campaign: Campaign, now: datetime) -> bool:
        body = campaign.model_dump(mode="json")
        with self.sessions.begin() as s:
            _bump(s, "campaigns")
            row = s.get(CampaignRow, campaign.id)
            if row is None:
                s.add(CampaignRow(id=campaign.id, body=body, created_at=now, updated_at=now))
                return True
            row.body = body
            row.updated_at = now
            return False

    def all(self) -> tuple[Campaign, ...]:
        with self.sessions() as s:
            rows = s.scalars(select(CampaignRow).order_by(CampaignRow.created_at, CampaignRow.id))
            return tuple(Campaign.model_validate(row.body) for row in rows)

    def records(self) -> list[CampaignRecord]:
        with self.sessions() as s:
            return [_record(row) for row in s.scalars(select(CampaignRow).order_by(CampaignRow.id))]

    def record(self, campaign_id: str) -> CampaignRecord | None:
        with self.sessions() as s:
            row = s.get(CampaignRow, campaign_id)
            return None if row is None else _record(row)

    def delete(self, campaign_id: str, now: datetime, audit: Sequence[AuditRecord] = ()) -> bool:
        with self.sessions.begin() as s:
            row = s.get(CampaignRow, campaign_id)
            if row is None:
                return False
            s.delete(row)
            _bump(s, "campaigns")
            write_records(s, audit)
            return True

    def revision(self) -> int:
        return _revision(self.sessions, "campaigns")


def _record(row: CampaignRow) -> CampaignRecord:
    return CampaignRecord(
        id=row.id, body=dict(row.body), created_at=row.created_at, updated_at=row.updated_at
    )


# outbox ---------------------------------------------------------------------------

_COMMAND_COLUMNS = (
    CommandRow.id,
    CommandRow.device_id,
    CommandRow.version,
    CommandRow.payload,
    CommandRow.state,
    CommandRow.state_at,
    CommandRow.created_at,
    CommandRow.published_at,
    CommandRow.reason,
)


def _command(row: Any) -> Command:
    return Command(
        id=row.id,
        device_id=row.device_id,
        version=row.version,
        payload=row.payload,
        state=CommandState(row.state),
        state_at=row.state_at,
        created_at=row.created_at,
        published_at=row.published_at,
        reason=row.reason,
    )


@dataclass
class _Cell:
    """One command's state while a batch decides its moves."""

    id: int
    device_id: str
    version: int
    seen: CommandState
    state: CommandState
    state_at: datetime
    published_at: datetime | None
    reason: str | None

    seen_at: datetime | None = None

    def __post_init__(self) -> None:
        self.seen_at = self.state_at

    @property
    def changed(self) -> bool:
        return self.state is not self.seen or self.state_at != self.seen_at


def apply_moves(
    cells: dict[int, _Cell], moves: Sequence[Move]
) -> tuple[list[bool], list[CommandEvent]]:
    """Decide a batch of moves on the current states, in order (pure; shared by stores)."""
    results: list[bool] = []
    events: list[CommandEvent] = []
    for m in moves:
        cell = cells.get(m.command_id)
        ok = (
            cell is not None
            and (m.only_from is None or cell.state in m.only_from)
            and (m.seen_at is None or cell.state_at == m.seen_at)
            and can_move(cell.state, m.target)
        )
        results.append(ok)
        if not ok or cell is None:
            continue
        events.append(
            CommandEvent(
                cell.id, cell.device_id, cell.version, cell.state, m.target, m.at, _clip(m.detail)
            )
        )
        cell.state = m.target
        cell.state_at = m.at
        if m.detail and m.target in FINAL | {CommandState.UNCONFIRMED}:
            cell.reason = _clip(m.detail)
        if m.target is CommandState.PUBLISHED:
            cell.published_at = m.at
    return results, events


def _clip(text: str | None) -> str | None:
    clean = text_value(text)
    return clean[:MAX_REASON] if clean else None


def text_value(text: str | None) -> str | None:
    """Text as every database stores it: PostgreSQL refuses NUL in text columns, and a
    device may send one (in an ack's reason, in its firmware string)."""
    return text.replace("\x00", "") if text and "\x00" in text else text


class SqlOutbox:
    def __init__(self, sessions: sessionmaker[Session], turn: threading.Lock | None = None) -> None:
        self.sessions = sessions
        self.turn = turn

    def latest(self, device_ids: Collection[str] | None = None) -> dict[str, Command]:
        with self.sessions() as s:
            return self._latest(s, device_ids)

    def _latest(self, s: Session, device_ids: Collection[str] | None) -> dict[str, Command]:
        out: dict[str, Command] = {}
        parts: Iterable[Sequence[str] | None] = (
            [None] if device_ids is None else chunks(sorted(device_ids))
        )
        for part in parts:
            newest = select(CommandRow.device_id, func.max(CommandRow.version).label("v"))
            if part is not None:
                newest = newest.where(CommandRow.device_id.in_(part))
            sub = newest.group_by(CommandRow.device_id).subquery()
            query = select(*_COMMAND_COLUMNS).join(
                sub, and_(CommandRow.device_id == sub.c.device_id, CommandRow.version == sub.c.v)
            )
            for row in s.connection().execute(query):
                out[row.device_id] = _command(row)
        return out

    def get(self, keys: Collection[tuple[str, int]]) -> dict[tuple[str, int], Command]:
        out: dict[tuple[str, int], Command] = {}
        wanted = set(keys)
        by_device = sorted({device for device, _ in wanted})
        with self.sessions() as s:
            for part in chunks(by_device):
                versions = {v for d, v in wanted if d in set(part)}
                query = select(*_COMMAND_COLUMNS).where(
                    CommandRow.device_id.in_(part), CommandRow.version.in_(sorted(versions))
                )
                for row in s.execute(query):
                    if (row.device_id, row.version) in wanted:
                        out[(row.device_id, row.version)] = _command(row)
        return out

    def pending(self, limit: int | None = None, after: int | None = None) -> list[Command]:
        query = (
            select(*_COMMAND_COLUMNS)
            .where(CommandRow.state == CommandState.PENDING.value)
            .order_by(CommandRow.id)
        )
        if after is not None:
            query = query.where(CommandRow.id > after)
        if limit is not None:
            query = query.limit(limit)
        with self.sessions() as s:
            return [_command(row) for row in s.execute(query)]

    def count_since(self, since: Mapping[str, datetime]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.sessions() as s:
            for part in chunks(sorted(since)):
                earliest = min(since[d] for d in part)
                query = select(CommandRow.device_id, CommandRow.created_at).where(
                    CommandRow.device_id.in_(part), CommandRow.created_at >= earliest
                )
                for device, created in s.execute(query):
                    if created >= since[device]:
                        out[device] = out.get(device, 0) + 1
        return out

    def events(self, device_id: str | None = None) -> list[CommandEvent]:
        query = select(CommandEventRow).order_by(CommandEventRow.id)
        if device_id is not None:
            query = query.where(CommandEventRow.device_id == device_id)
        with self.sessions() as s:
            return [
                CommandEvent(
                    r.command_id,
                    r.device_id,
                    r.version,
                    CommandState(r.from_state) if r.from_state else None,
                    CommandState(r.to_state),
                    r.at,
                    r.detail,
                )
                for r in s.scalars(query)
            ]

    # writes ---------------------------------------------------------------------------

    def _cells(self, s: Session, where: Any) -> dict[int, _Cell]:
        query = select(
            CommandRow.id,
            CommandRow.device_id,
            CommandRow.version,
            CommandRow.state,
            CommandRow.state_at,
            CommandRow.published_at,
            CommandRow.reason,
        ).where(where)
        if s.bind is not None and s.bind.dialect.name == "postgresql":
            query = query.with_for_update()
        return {
            r.id: _Cell(
                r.id,
                r.device_id,
                r.version,
                CommandState(r.state),
                CommandState(r.state),
                r.state_at,
                r.published_at,
                r.reason,
            )
            for r in s.execute(query)
        }

    def _write_cells(self, s: Session, cells: Iterable[_Cell], events: list[CommandEvent]) -> None:
        """Compare-and-set every changed cell; ConcurrentChange if any row moved meanwhile."""
        changed = [c for c in cells if c.changed]
        if changed:
            stmt = (
                update(CommandRow.__table__)  # type: ignore[arg-type]
                .where(
                    CommandRow.__table__.c.id == bindparam("b_id"),
                    CommandRow.__table__.c.state == bindparam("b_seen"),
                    CommandRow.__table__.c.state_at == bindparam("b_seen_at"),
                )
                .values(
                    state=bindparam("b_state"),
                    state_at=bindparam("b_state_at"),
                    published_at=bindparam("b_published_at"),
                    reason=bindparam("b_reason"),
                )
            )
            params = [
                {
                    "b_id": c.id,
                    "b_seen": c.seen.value,
                    "b_seen_at": c.seen_at,
                    "b_state": c.state.value,
                    "b_state_at": c.state_at,
                    "b_published_at": c.published_at,
                    "b_reason": c.reason,
                }
                for c in changed
            ]
            conn = s.connection()
            if conn.dialect.supports_sane_multi_rowcount:
                if _rowcount(conn.execute(stmt, params)) != len(params):
                    raise ConcurrentChange("a command moved during the batch")
            else:
                for one in params:
                    if _rowcount(conn.execute(stmt, one)) != 1:
                        raise ConcurrentChange("a command moved during the batch")
        if events:
            # a Core executemany: the ORM's bulk path costs several times as much per row
            s.connection().execute(
                insert(CommandEventRow.__table__),  # type: ignore[arg-type]
                [
                    {
                        "command_id": e.command_id,
                        "device_id": e.device_id,
                        "version": e.version,
                        "from_state": e.from_state.value if e.from_state else None,
                        "to_state": e.to_state.value,
                        "at": e.at,
                        "detail": e.detail,
                    }
                    for e in events
                ],
            )

    def move(self, moves: Sequence[Move]) -> list[bool]:
        if not moves:
            return []
        ids = sorted({m.command_id for m in moves})
        for _ in range(CAS_ATTEMPTS):
            try:
                with writing(self.sessions, self.turn) as s:
                    cells: dict[int, _Cell] = {}
                    for part in chunks(ids):
                        cells.update(self._cells(s, CommandRow.id.in_(part)))
                    results, events = apply_moves(cells, moves)
                    self._write_cells(s, cells.values(), events)
                    return results
            except ConcurrentChange:
                log.debug("outbox move: concurrent change, deciding again")
        raise ConcurrentChange(f"move: rows kept changing over {CAS_ATTEMPTS} attempts")

    def add_versions(self, versions: Sequence[NewVersion]) -> list[Command]:
        if not versions:
            return []
        devices = sorted({v.device_id for v in versions})
        for _ in range(CAS_ATTEMPTS):
            try:
                with writing(self.sessions, self.turn) as s:
                    return self._add_versions(s, versions, devices)
            except ConcurrentChange:
                log.debug("outbox add_versions: concurrent change, deciding again")
        raise ConcurrentChange(f"add_versions: rows kept changing over {CAS_ATTEMPTS} attempts")

    def _add_versions(
        self, s: Session, versions: Sequence[NewVersion], devices: Sequence[str]
    ) -> list[Command]:
        open_states = [st.value for st in CommandState if st not in FINAL]
        cells: dict[int, _Cell] = {}
        for part in chunks(devices):
            cells.update(
                self._cells(
                    s, and_(CommandRow.device_id.in_(part), CommandRow.state.in_(open_states))
                )
            )
        latest = self._latest(s, devices)
        by_device = {v.device_id: v for v in versions if _holds(v, latest.get(v.device_id))}
        accepted = list(by_device.values())
        moves = [
            Move(
                c.id,
                CommandState.SUPERSEDED,
                by_device[c.device_id].at,
                f"by version {by_device[c.device_id].version}",
            )
            for c in sorted(cells.values(), key=lambda c: c.id)
            if c.device_id in by_device
        ]
        _, events = apply_moves(cells, moves)
        self._write_cells(s, cells.values(), events)
        stored: list[Command] = []
        for group in chunks(accepted):
            rows = [
                {
                    "device_id": v.device_id,
                    "version": v.version,
                    "payload": v.payload,
                    "state": CommandState.PENDING.value,
                    "state_at": v.at,
                    "created_at": v.at,
                }
                for v in group
            ]
            table = CommandRow.__table__
            ids = list(  # a Core insert: the ORM's bulk path costs far more per row
                s.connection()
                .execute(
                    insert(table).returning(  # type: ignore[arg-type]
                        table.c.id, sort_by_parameter_order=True
                    ),
                    rows,
                )
                .scalars()
            )
            for command_id, v in zip(ids, group, strict=True):
                stored.append(
                    Command(
                        command_id,
                        v.device_id,
                        v.version,
                        v.payload,
                        CommandState.PENDING,
                        v.at,
                        v.at,
                    )
                )
        new_events = [
            CommandEvent(c.id, c.device_id, c.version, None, CommandState.PENDING, c.created_at)
            for c in stored
        ]
        self._write_cells(s, [], new_events)
        return stored


def _holds(version: NewVersion, newest: Command | None) -> bool:
    if version.based_on is None:
        return newest is None
    return (
        newest is not None
        and (newest.id, newest.state) == version.based_on
        and version.version > newest.version
    )


# device reports -------------------------------------------------------------------

_REPORT_FIELDS = (
    "online",
    "status_at",
    "firmware",
    "applied_version",
    "applied_step_at",
    "applied_state",
    "applied_at",
    "reported_state",
    "reported_at",
    "version_floor",
    "confirmed_by",
    "mismatch_version",
    "mismatch_step_at",
    "mismatch",
)
_VIEW_NAMES = ("id", "site_id", *_REPORT_FIELDS)


class SqlReports:
    def __init__(self, sessions: sessionmaker[Session], turn: threading.Lock | None = None) -> None:
        self.sessions = sessions
        self.turn = turn

    def views(self, device_ids: Collection[str] | None = None) -> dict[str, DeviceView]:
        columns = [  # in the order of _VIEW_NAMES
            DeviceRow.id,
            DeviceRow.site_id,
            *(getattr(DeviceRow, f) for f in _REPORT_FIELDS),
        ]
        out: dict[str, DeviceView] = {}
        with self.sessions() as s:
            parts: Iterable[Sequence[str] | None] = (
                [None] if device_ids is None else chunks(sorted(device_ids))
            )
            for part in parts:
                query = select(*columns).where(DeviceRow.decommissioned_at.is_(None))
                if part is not None:
                    query = query.where(DeviceRow.id.in_(part))
                for row in s.connection().execute(query):
                    # by name, from a tuple: Row._asdict builds its key view per row, a
                    # third of a full read's time at 10,000 devices
                    values = dict(zip(_VIEW_NAMES, row, strict=True))
                    values["version_floor"] = values["version_floor"] or 0
                    out[row.id] = DeviceView(**values)
        return out

    def save(self, views: Sequence[DeviceView]) -> int:
        if not views:
            return 0
        table = DeviceRow.__table__
        stmt = (
            update(table)  # type: ignore[arg-type]
            .where(table.c.id == bindparam("b_id"))
            .values({f: bindparam(f"b_{f}") for f in _REPORT_FIELDS})
        )
        params = [
            {
                "b_id": v.id,
                **{f"b_{f}": getattr(v, f) for f in _REPORT_FIELDS},
                "b_firmware": text_value(v.firmware),
            }
            for v in views
        ]
        with writing(self.sessions, self.turn) as s:
            return _rowcount(s.connection().execute(stmt, params))


def sql_stores(sessions: sessionmaker[Session]) -> Stores:
    """The stores of one database; the outbox and reports writers take turns."""
    turn = threading.Lock()
    return Stores(
        registry=SqlRegistry(sessions),
        campaigns=SqlCampaigns(sessions),
        outbox=SqlOutbox(sessions, turn),
        reports=SqlReports(sessions, turn),
        rollouts=SqlRollouts(sessions),
        audit=SqlAuditLog(sessions),
    )


@contextmanager
def database(url: str) -> Iterator[tuple[Engine, sessionmaker[Session], Stores]]:
    """An engine on `url`, migrated, with its sessions and stores; disposed after."""
    from controller.store.db import make_engine, migrate, session_factory

    engine = make_engine(url)
    try:
        migrate(engine)
        sessions = session_factory(engine)
        yield engine, sessions, sql_stores(sessions)
    finally:
        engine.dispose()
