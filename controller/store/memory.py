"""The stores in memory: the fast doubles the loop components' unit tests run on.

Same contract as the SQL stores (`tests/controller/test_store_contract.py` runs one suite
on both): batches are all-or-nothing and moves are decided on the current states, under
one lock for the whole world.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from controller.lifecycle import FINAL, CommandState
from controller.store.audit import AuditRecord, MemoryAuditLog
from controller.store.base import (
    BeforeCommit,
    CampaignRecord,
    Command,
    CommandEvent,
    DeviceRecord,
    DeviceView,
    Move,
    NewDevice,
    NewVersion,
    Retired,
    Stores,
    UnknownObject,
)
from controller.store.rollouts import MemoryRollouts
from controller.store.sql import _Cell, _holds, apply_moves, check_new_devices, in_use
from schedules.model import Campaign, City, Site, SiteCatalog


@dataclass
class _World:
    lock: threading.RLock = field(default_factory=threading.RLock)
    cities: dict[str, City] = field(default_factory=dict)
    sites: dict[str, Site] = field(default_factory=dict)
    devices: dict[str, DeviceView] = field(default_factory=dict)
    """Devices in service, with their reports."""
    records: dict[str, DeviceRecord] = field(default_factory=dict)
    """Every device ever registered."""
    removed_sites: dict[str, Site] = field(default_factory=dict)
    secrets: dict[str, str | None] = field(default_factory=dict)
    audit: MemoryAuditLog = field(default_factory=MemoryAuditLog)
    campaigns: dict[str, tuple[Campaign, datetime, datetime, int]] = field(default_factory=dict)
    commands: dict[int, Command] = field(default_factory=dict)
    latest: dict[str, int] = field(default_factory=dict)
    events: list[CommandEvent] = field(default_factory=list)
    revisions: dict[str, int] = field(default_factory=lambda: {"registry": 0, "campaigns": 0})
    next_id: int = 1
    order: int = 0


class MemoryRegistry:
    def __init__(self, world: _World) -> None:
        self.w = world

    def import_catalog(self, catalog: SiteCatalog) -> tuple[int, int]:
        with self.w.lock:
            known = set(self.w.cities) | {c.id for c in catalog.cities}
            for site in catalog.sites:
                if site.city not in known:
                    raise ValueError(f"site {site.id!r}: unknown city {site.city!r}")
            self.w.cities.update({c.id: c for c in catalog.cities})
            self.w.sites.update({s.id: s for s in catalog.sites})
            for site in catalog.sites:
                self.w.removed_sites.pop(site.id, None)
            self.w.revisions["registry"] += 1
        return len(catalog.cities), len(catalog.sites)

    def catalog(self) -> SiteCatalog:
        with self.w.lock:
            return SiteCatalog(
                cities=tuple(self.w.cities[k] for k in sorted(self.w.cities)),
                sites=tuple(self.w.sites[k] for k in sorted(self.w.sites)),
            )

    def add_devices(
        self,
        devices: Sequence[NewDevice],
        now: datetime,
        audit: Sequence[AuditRecord] = (),
        before_commit: BeforeCommit | None = None,
    ) -> None:
        with self.w.lock:
            check_new_devices(devices, self.w.sites, self.w.records)
            if before_commit is not None:
                before_commit()
            for d in devices:
                self.w.devices[d.id] = DeviceView(id=d.id, site_id=d.site_id)
                self.w.records[d.id] = DeviceRecord(
                    id=d.id,
                    site_id=d.site_id,
                    city=self.w.sites[d.site_id].city,
                    adapter=d.adapter,
                    config=dict(d.config or {}),
                    created_at=now,
                )
                self.w.secrets[d.id] = d.secret_hash
            self.w.revisions["registry"] += 1
            self.w.audit.append(audit)

    def device_ids(self) -> set[str]:
        with self.w.lock:
            return set(self.w.records)

    def devices(self, device_ids: Collection[str] | None = None) -> dict[str, DeviceRecord]:
        with self.w.lock:
            wanted = sorted(self.w.records if device_ids is None else device_ids)
            return {d: self.w.records[d] for d in wanted if d in self.w.records}

    def _live(self, device_id: str) -> DeviceRecord:
        record = self.w.records.get(device_id)
        if record is None:
            raise UnknownObject(f"no device {device_id!r}")
        if record.decommissioned_at is not None:
            raise Retired(f"device {device_id!r} is decommissioned")
        return record

    def _offline(self, device_id: str, now: datetime) -> None:
        view = self.w.devices.get(device_id)
        if view is not None:
            self.w.devices[device_id] = replace(view, online=False, status_at=now)

    def set_secret(
        self,
        device_id: str,
        secret_hash: str,
        now: datetime,
        audit: Sequence[AuditRecord] = (),
        before_commit: BeforeCommit | None = None,
    ) -> None:
        with self.w.lock:
            record = self._live(device_id)
            if before_commit is not None:
                before_commit()
            self.w.secrets[device_id] = secret_hash
            self.w.records[device_id] = replace(record, credentials_at=now)
            self._offline(device_id, now)
            self.w.revisions["registry"] += 1
            self.w.audit.append(audit)

    def decommission(
        self,
        device_id: str,
        now: datetime,
        audit: Sequence[AuditRecord] = (),
        before_commit: BeforeCommit | None = None,
    ) -> None:
        with self.w.lock:
            record = self._live(device_id)
            if before_commit is not None:
                before_commit()
            self.w.secrets[device_id] = None
            self.w.records[device_id] = replace(record, decommissioned_at=now)
            self.w.devices.pop(device_id, None)
            for command in list(self.w.commands.values()):
                if command.device_id == device_id and command.state not in FINAL:
                    self.w.commands[command.id] = replace(
                        command,
                        state=CommandState.SUPERSEDED,
                        state_at=now,
                        reason="device decommissioned",
                    )
                    self.w.events.append(
                        CommandEvent(
                            command.id,
                            device_id,
                            command.version,
                            command.state,
                            CommandState.SUPERSEDED,
                            now,
                            "device decommissioned",
                        )
                    )
            self.w.revisions["registry"] += 1
            self.w.audit.append(audit)

    def put_site(self, site: Site, now: datetime, audit: Sequence[AuditRecord] = ()) -> bool:
        with self.w.lock:
            if site.city not in self.w.cities:
                raise UnknownObject(f"unknown city {site.city!r}")
            created = site.id not in self.w.sites
            self.w.sites[site.id] = site
            self.w.removed_sites.pop(site.id, None)
            self.w.revisions["registry"] += 1
            self.w.audit.append(audit)
            return created

    def remove_site(self, site_id: str, now: datetime, audit: Sequence[AuditRecord] = ()) -> None:
        with self.w.lock:
            site = self.w.sites.get(site_id)
            if site is None:
                raise UnknownObject(f"no site {site_id!r}")
            active = sorted(d.id for d in self.w.devices.values() if d.site_id == site_id)
            if active:
                raise in_use(site_id, active)
            self.w.removed_sites[site_id] = self.w.sites.pop(site_id)
            self.w.revisions["registry"] += 1
            self.w.audit.append(audit)

    def revision(self) -> int:
        with self.w.lock:
            return self.w.revisions["registry"]


class MemoryCampaigns:
    def __init__(self, world: _World) -> None:
        self.w = world

    def put(self, campaign: Campaign, now: datetime) -> bool:
        with self.w.lock:
            self.w.revisions["campaigns"] += 1
            old = self.w.campaigns.get(campaign.id)
            if old is None:
                self.w.order += 1
                self.w.campaigns[campaign.id] = (campaign, now, now, self.w.order)
                return True
            self.w.campaigns[campaign.id] = (campaign, old[1], now, old[3])
            return False

    def all(self) -> tuple[Campaign, ...]:
        with self.w.lock:
            rows = sorted(self.w.campaigns.values(), key=lambda r: (r[1], r[0].id))
            return tuple(r[0] for r in rows)

    def records(self) -> list[CampaignRecord]:
        with self.w.lock:
            return [r for k in sorted(self.w.campaigns) if (r := self.record(k)) is not None]

    def record(self, campaign_id: str) -> CampaignRecord | None:
        with self.w.lock:
            row = self.w.campaigns.get(campaign_id)
            if row is None:
                return None
            return CampaignRecord(campaign_id, row[0].model_dump(mode="json"), row[1], row[2])

    def delete(self, campaign_id: str, now: datetime, audit: Sequence[AuditRecord] = ()) -> bool:
        with self.w.lock:
            if self.w.campaigns.pop(campaign_id, None) is None:
                return False
            self.w.revisions["campaigns"] += 1
            self.w.audit.append(audit)
            return True

    def revision(self) -> int:
        with self.w.lock:
            return self.w.revisions["campaigns"]


class MemoryOutbox:
    def __init__(self, world: _World) -> None:
        self.w = world

    def latest(self, device_ids: Collection[str] | None = None) -> dict[str, Command]:
        with self.w.lock:
            wanted = self.w.latest if device_ids is None else set(device_ids) & set(self.w.latest)
            return {d: self.w.commands[self.w.latest[d]] for d in wanted}

    def get(self, keys: Collection[tuple[str, int]]) -> dict[tuple[str, int], Command]:
        wanted = set(keys)
        with self.w.lock:
            return {
                (c.device_id, c.version): c
                for c in self.w.commands.values()
                if (c.device_id, c.version) in wanted
            }

    def pending(self, limit: int | None = None, after: int | None = None) -> list[Command]:
        with self.w.lock:
            rows = [
                c
                for i, c in sorted(self.w.commands.items())
                if c.state is CommandState.PENDING and (after is None or i > after)
            ]
        return rows if limit is None else rows[:limit]

    def count_since(self, since: Mapping[str, datetime]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.w.lock:
            for c in self.w.commands.values():
                if c.device_id in since and c.created_at >= since[c.device_id]:
                    out[c.device_id] = out.get(c.device_id, 0) + 1
        return out

    def events(self, device_id: str | None = None) -> list[CommandEvent]:
        with self.w.lock:
            return [e for e in self.w.events if device_id is None or e.device_id == device_id]

    def _cells(self, ids: Collection[int]) -> dict[int, _Cell]:
        out: dict[int, _Cell] = {}
        for i in ids:
            c = self.w.commands.get(i)
            if c is not None:
                out[i] = _Cell(
                    c.id,
                    c.device_id,
                    c.version,
                    c.state,
                    c.state,
                    c.state_at,
                    c.published_at,
                    c.reason,
                )
        return out

    def _write(self, cells: dict[int, _Cell], events: list[CommandEvent]) -> None:
        for cell in cells.values():
            if cell.changed:
                self.w.commands[cell.id] = replace(
                    self.w.commands[cell.id],
                    state=cell.state,
                    state_at=cell.state_at,
                    published_at=cell.published_at,
                    reason=cell.reason,
                )
        self.w.events.extend(events)

    def move(self, moves: Sequence[Move]) -> list[bool]:
        with self.w.lock:
            cells = self._cells({m.command_id for m in moves})
            results, events = apply_moves(cells, moves)
            self._write(cells, events)
            return results

    def add_versions(self, versions: Sequence[NewVersion]) -> list[Command]:
        with self.w.lock:
            latest = self.latest({v.device_id for v in versions})
            accepted = {v.device_id: v for v in versions if _holds(v, latest.get(v.device_id))}
            open_ids = [
                c.id
                for c in sorted(self.w.commands.values(), key=lambda c: c.id)
                if c.device_id in accepted and c.state not in FINAL
            ]
            cells = self._cells(open_ids)
            moves = [
                Move(
                    i,
                    CommandState.SUPERSEDED,
                    accepted[cells[i].device_id].at,
                    f"by version {accepted[cells[i].device_id].version}",
                )
                for i in open_ids
            ]
            _, events = apply_moves(cells, moves)
            self._write(cells, events)
            stored = []
            for v in versions:
                if v.device_id not in accepted or accepted[v.device_id] is not v:
                    continue
                command = Command(
                    self.w.next_id,
                    v.device_id,
                    v.version,
                    v.payload,
                    CommandState.PENDING,
                    v.at,
                    v.at,
                )
                self.w.next_id += 1
                self.w.commands[command.id] = command
                self.w.latest[v.device_id] = command.id
                self.w.events.append(
                    CommandEvent(
                        command.id, v.device_id, v.version, None, CommandState.PENDING, v.at
                    )
                )
                stored.append(command)
            return stored


class MemoryReports:
    def __init__(self, world: _World) -> None:
        self.w = world

    def views(self, device_ids: Collection[str] | None = None) -> dict[str, DeviceView]:
        with self.w.lock:
            if device_ids is None:
                return dict(self.w.devices)
            return {d: self.w.devices[d] for d in device_ids if d in self.w.devices}

    def save(self, views: Sequence[DeviceView]) -> int:
        with self.w.lock:
            changed = 0
            for v in views:
                old = self.w.devices.get(v.id)
                if old is None:
                    continue
                self.w.devices[v.id] = replace(v, site_id=old.site_id)
                changed += 1
            return changed


def memory_stores() -> Stores:
    world = _World()
    return Stores(
        registry=MemoryRegistry(world),
        campaigns=MemoryCampaigns(world),
        outbox=MemoryOutbox(world),
        reports=MemoryReports(world),
        rollouts=MemoryRollouts(),
        audit=world.audit,
    )
