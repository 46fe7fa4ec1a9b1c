"""Reads and writes the controller needs, each in its own short transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from controller.lifecycle import FINAL, CommandState, check_move
from controller.registration import (
    BatchRejected,
    find_problems,
    hash_chosen_secret,
    hash_generated_secret,
    verify_secret,
)
from controller.store.base import RESERVED_PREFIX, NewDevice, RegistryError
from controller.store.tables import (
    CampaignRow,
    CityRow,
    CommandEventRow,
    CommandRow,
    DeviceRow,
    SiteRow,
)
from schedules.model import Campaign, City, Site, SiteCatalog

__all__ = ["RESERVED_PREFIX", "RegistryError", "hash_secret", "verify_secret"]

INSERT_CHUNK = 1000
LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class DeviceView:
    id: str
    site_id: str
    online: bool | None
    applied_version: int | None
    applied_step_at: datetime | None
    applied_state: dict[str, Any] | None
    applied_at: datetime | None
    reported_state: dict[str, Any] | None = None
    reported_at: datetime | None = None
    version_floor: int = 0


@dataclass(frozen=True)
class CampaignRecord:
    """A stored campaign as written, with its times (for the staff API)."""

    id: str
    body: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Snapshot:
    """Everything the public view and the reconciler read, taken in one transaction."""

    catalog: SiteCatalog
    campaigns: tuple[Campaign, ...]
    devices: tuple[DeviceView, ...]


def hash_secret(secret: str) -> str:
    """scrypt, for a password a person chose (see controller/registration.py)."""
    return hash_chosen_secret(secret)


class Store:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.registry_generation = 0
        """Bumped by every registration made through this store, so caches of the
        registry in this process can tell at once that it changed."""

    # registry -----------------------------------------------------------------

    def import_catalog(self, catalog: SiteCatalog) -> tuple[int, int]:
        """Insert or update every city and site of the file, in one transaction."""
        with self.sessions.begin() as s:
            for city in catalog.cities:
                s.merge(CityRow(id=city.id, name=dict(city.name), timezone=city.timezone))
            s.flush()
            for site in catalog.sites:
                s.merge(
                    SiteRow(
                        id=site.id,
                        city_id=site.city,
                        name=dict(site.name),
                        lat=site.lat,
                        lon=site.lon,
                        tags=list(site.tags),
                    )
                )
        return len(catalog.cities), len(catalog.sites)

    def catalog(self) -> SiteCatalog:
        with self.sessions() as s:
            return _catalog(s)

    def add_device(
        self,
        device_id: str,
        site_id: str,
        secret: str | None,
        now: datetime,
        *,
        generated: bool = False,
    ) -> None:
        """Register one device. Its secret is hashed with scrypt, or with salted SHA-256
        when `generated` says it came from `registration.new_password` (see there)."""
        secret_hash = None
        if secret:
            secret_hash = hash_generated_secret(secret) if generated else hash_secret(secret)
        self.add_devices([NewDevice(device_id, site_id, secret_hash)], now)

    def add_devices(self, devices: Sequence[NewDevice], now: datetime) -> None:
        """Register all of them in one transaction, or none: BatchRejected (a
        RegistryError) names every problem (bad or reserved id, unknown site, already
        registered, repeated in the batch). Hashes come from the caller."""
        batch = list(devices)
        if not batch:
            return
        try:
            with self.sessions.begin() as s:
                known = _present(s, SiteRow.id, {d.site_id for d in batch})
                registered = _present(s, DeviceRow.id, {d.id for d in batch})
                problems = find_problems(batch, known, registered)
                if problems:
                    raise BatchRejected(problems)
                rows = [
                    {
                        "id": d.id,
                        "site_id": d.site_id,
                        "secret_hash": d.secret_hash,
                        "created_at": now,
                    }
                    for d in batch
                ]
                for start in range(0, len(rows), INSERT_CHUNK):
                    s.execute(insert(DeviceRow), rows[start : start + INSERT_CHUNK])
        except IntegrityError:
            # Another process registered some of these ids since our check: say which.
            with self.sessions() as s:
                registered = _present(s, DeviceRow.id, {d.id for d in batch})
                known = _present(s, SiteRow.id, {d.site_id for d in batch})
            problems = find_problems(batch, known, registered)
            if problems:
                raise BatchRejected(problems) from None
            raise RegistryError("the registry changed during the import; try again") from None
        self.registry_generation += 1

    def device_ids(self) -> set[str]:
        with self.sessions() as s:
            return set(s.scalars(select(DeviceRow.id)))

    def device(self, device_id: str) -> DeviceView | None:
        with self.sessions() as s:
            row = s.get(DeviceRow, device_id)
            return _device_view(row) if row is not None else None

    def devices(self) -> list[DeviceView]:
        with self.sessions() as s:
            return _devices(s)

    # campaigns ----------------------------------------------------------------

    def put_campaign(self, campaign: Campaign, now: datetime) -> bool:
        """Insert or replace; True when it was new."""
        body = campaign.model_dump(mode="json")
        with self.sessions.begin() as s:
            row = s.get(CampaignRow, campaign.id)
            if row is None:
                s.add(CampaignRow(id=campaign.id, body=body, created_at=now, updated_at=now))
                return True
            row.body = body
            row.updated_at = now
            return False

    def campaign_records(self) -> list[CampaignRecord]:
        with self.sessions() as s:
            rows = s.scalars(select(CampaignRow).order_by(CampaignRow.id))
            return [_record(row) for row in rows]

    def campaign_record(self, campaign_id: str) -> CampaignRecord | None:
        with self.sessions() as s:
            row = s.get(CampaignRow, campaign_id)
            return None if row is None else _record(row)

    def campaigns(self) -> tuple[Campaign, ...]:
        with self.sessions() as s:
            return _campaigns(s)

    def snapshot(self) -> Snapshot:
        with self.sessions() as s:
            return Snapshot(_catalog(s), _campaigns(s), tuple(_devices(s)))

    # commands -----------------------------------------------------------------

    def latest_commands(self) -> dict[str, CommandRow]:
        """The newest command of every device."""
        with self.sessions() as s:
            newest = (
                select(CommandRow.device_id, func.max(CommandRow.version).label("v"))
                .group_by(CommandRow.device_id)
                .subquery()
            )
            rows = s.scalars(
                select(CommandRow).join(
                    newest,
                    (CommandRow.device_id == newest.c.device_id)
                    & (CommandRow.version == newest.c.v),
                )
            )
            return {row.device_id: row for row in rows}

    def latest_command(self, device_id: str) -> CommandRow | None:
        with self.sessions() as s:
            return s.scalars(
                select(CommandRow)
                .where(CommandRow.device_id == device_id)
                .order_by(CommandRow.version.desc())
                .limit(1)
            ).first()

    def add_command(self, device_id: str, version: int, payload: str, now: datetime) -> None:
        """Commit a new plan version to the outbox; older open versions are superseded."""
        with self.sessions.begin() as s:
            older = s.scalars(
                select(CommandRow).where(
                    CommandRow.device_id == device_id,
                    CommandRow.state.not_in([st.value for st in FINAL]),
                )
            )
            for row in older:
                _move(s, row, CommandState.SUPERSEDED, now, f"by version {version}")
            row = CommandRow(
                device_id=device_id,
                version=version,
                payload=payload,
                state=CommandState.PENDING.value,
                state_at=now,
                created_at=now,
            )
            s.add(row)
            s.flush()
            s.add(_event(row, None, CommandState.PENDING, now, None))

    def pending_commands(self) -> list[CommandRow]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    select(CommandRow)
                    .where(CommandRow.state == CommandState.PENDING.value)
                    .order_by(CommandRow.id)
                )
            )

    def command(self, device_id: str, version: int) -> CommandRow | None:
        with self.sessions() as s:
            return s.scalars(
                select(CommandRow).where(
                    CommandRow.device_id == device_id, CommandRow.version == version
                )
            ).first()

    def move(
        self,
        command_id: int,
        target: CommandState,
        now: datetime,
        detail: str | None = None,
        *,
        only_from: frozenset[CommandState] | None = None,
    ) -> bool:
        """Apply one lifecycle transition; False (and nothing stored) when not allowed.

        Compare-and-set: the row changes only if its state is still the one the
        transition was checked against, so two threads (a PUBACK and an ack, say)
        can never overwrite each other's move. On a lost race it checks again.
        """
        for _attempt in range(5):
            with self.sessions.begin() as s:
                row = s.get(CommandRow, command_id)
                if row is None:
                    return False
                current = CommandState(row.state)
                if only_from is not None and current not in only_from:
                    return False
                try:
                    check_move(current, target)
                except ValueError:
                    return False
                values: dict[str, Any] = {"state": target.value, "state_at": now}
                if detail and target in FINAL | {CommandState.UNCONFIRMED}:
                    values["reason"] = detail[:500]
                if target is CommandState.PUBLISHED:
                    values["published_at"] = now
                result = s.execute(
                    update(CommandRow)
                    .where(CommandRow.id == command_id, CommandRow.state == current.value)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if cast("CursorResult[Any]", result).rowcount != 1:
                    continue  # another thread moved it first: check against the new state
                s.add(_event(row, current, target, now, detail))
                return True
        return False

    def events(self, device_id: str | None = None) -> list[CommandEventRow]:
        with self.sessions() as s:
            query = select(CommandEventRow).order_by(CommandEventRow.id)
            if device_id is not None:
                query = query.where(CommandEventRow.device_id == device_id)
            return list(s.scalars(query))

    def count_commands(
        self, device_id: str | None = None, issued_since: datetime | None = None
    ) -> int:
        with self.sessions() as s:
            query = select(func.count()).select_from(CommandRow)
            if device_id is not None:
                query = query.where(CommandRow.device_id == device_id)
            if issued_since is not None:
                query = query.where(CommandRow.created_at >= issued_since)
            return int(s.scalar(query) or 0)

    # device reports -----------------------------------------------------------

    def record_status(
        self, device_id: str, online: bool, firmware: str | None, now: datetime
    ) -> None:
        with self.sessions.begin() as s:
            values: dict[str, Any] = {"online": online, "status_at": now}
            if firmware:
                values["firmware"] = firmware
            s.execute(update(DeviceRow).where(DeviceRow.id == device_id).values(**values))

    def mark_online(self, device_id: str, now: datetime) -> None:
        """A live message proves the device is connected, whatever status we missed."""
        with self.sessions.begin() as s:
            s.execute(
                update(DeviceRow)
                .where(DeviceRow.id == device_id, DeviceRow.online.is_not(True))
                .values(online=True, status_at=now)
            )

    def record_state(self, device_id: str, state: dict[str, Any], now: datetime) -> None:
        with self.sessions.begin() as s:
            s.execute(
                update(DeviceRow)
                .where(DeviceRow.id == device_id)
                .values(reported_state=state, reported_at=now)
            )

    def raise_version_floor(self, device_id: str, version: int) -> bool:
        """Remember that the device holds `version`; True when that raised the floor."""
        with self.sessions.begin() as s:
            result = s.execute(
                update(DeviceRow)
                .where(DeviceRow.id == device_id, DeviceRow.version_floor < version)
                .values(version_floor=version)
            )
            return cast("CursorResult[Any]", result).rowcount == 1

    def record_applied(
        self,
        device_id: str,
        version: int,
        step_at: datetime,
        state: dict[str, Any],
        applied_at: datetime,
    ) -> None:
        """Keep the newest step the device reports applied: newest version, then latest
        step. A repeated report of the same step keeps the first (true) applied time."""
        with self.sessions.begin() as s:
            row = s.get(DeviceRow, device_id)
            if row is None:
                return
            later_step = row.applied_step_at is None or step_at > row.applied_step_at
            newer = (
                row.applied_version is None
                or version > row.applied_version
                or (version == row.applied_version and later_step)
            )
            if newer:
                row.applied_version = version
                row.applied_step_at = step_at
                row.applied_state = state
                row.applied_at = applied_at


def _present(s: Session, column: Any, values: set[str]) -> set[str]:
    """Which of `values` are in `column` (queried in chunks, for SQLite's limits)."""
    ordered = sorted(values)
    found: set[str] = set()
    for start in range(0, len(ordered), LOOKUP_CHUNK):
        chunk = ordered[start : start + LOOKUP_CHUNK]
        found.update(s.scalars(select(column).where(column.in_(chunk))))
    return found


def _move(
    s: Session, row: CommandRow, target: CommandState, now: datetime, detail: str | None
) -> None:
    current = CommandState(row.state)
    check_move(current, target)
    row.state = target.value
    row.state_at = now
    if detail and target in FINAL | {CommandState.UNCONFIRMED}:
        row.reason = detail[:500]
    s.add(_event(row, current, target, now, detail))


def _event(
    row: CommandRow,
    current: CommandState | None,
    target: CommandState,
    now: datetime,
    detail: str | None,
) -> CommandEventRow:
    return CommandEventRow(
        command_id=row.id,
        device_id=row.device_id,
        version=row.version,
        from_state=current.value if current else None,
        to_state=target.value,
        at=now,
        detail=detail[:500] if detail else None,
    )


def _catalog(s: Session) -> SiteCatalog:
    cities = [
        City(id=c.id, name=c.name, timezone=c.timezone)
        for c in s.scalars(select(CityRow).order_by(CityRow.id))
    ]
    sites = [
        Site(id=r.id, city=r.city_id, name=r.name, lat=r.lat, lon=r.lon, tags=tuple(r.tags))
        for r in s.scalars(select(SiteRow).order_by(SiteRow.id))
    ]
    return SiteCatalog(cities=tuple(cities), sites=tuple(sites))


def _record(row: CampaignRow) -> CampaignRecord:
    return CampaignRecord(
        id=row.id, body=dict(row.body), created_at=row.created_at, updated_at=row.updated_at
    )


def _campaigns(s: Session) -> tuple[Campaign, ...]:
    rows = s.scalars(select(CampaignRow).order_by(CampaignRow.created_at, CampaignRow.id))
    return tuple(Campaign.model_validate(row.body) for row in rows)


def _device_view(r: DeviceRow) -> DeviceView:
    return DeviceView(
        id=r.id,
        site_id=r.site_id,
        online=r.online,
        applied_version=r.applied_version,
        applied_step_at=r.applied_step_at,
        applied_state=r.applied_state,
        applied_at=r.applied_at,
        reported_state=r.reported_state,
        reported_at=r.reported_at,
        version_floor=r.version_floor or 0,
    )


def _devices(s: Session) -> list[DeviceView]:
    return [_device_view(r) for r in s.scalars(select(DeviceRow).order_by(DeviceRow.id))]
