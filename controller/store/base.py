"""The store seams, one per aggregate, and the plain data that crosses them.

Nothing here is an ORM row: the SQL stores (`controller/store/sql.py`) and the in-memory
ones (`controller/store/memory.py`) both take and return these frozen dataclasses, and
`tests/controller/test_store_contract.py` runs one contract on SQLite, PostgreSQL and
memory.

- `RegistryStore`: cities, sites and devices (who exists, where). A decommissioned
  device keeps its record (and its history) but leaves `reports.views()`, so nothing
  plans for it and no site shows it; a removed site leaves the catalog.
  Its edits take the audit records of the change, stored in the same transaction,
  and an optional `before_commit` hook run inside it (the broker's account change:
  if the hook raises, nothing is stored).
- `CampaignStore`: the campaigns as written.
- `OutboxStore`: plan versions per device and their lifecycle, with the audit log.
  Every write is a batch in one transaction, and every state change is a
  compare-and-set against the row's current state, never against a stale read.
- `RolloutStore` (`controller/store/rollouts.py`): staged rollouts of campaign changes.
- `ReportStore`: what devices said about themselves (online, output, applied steps).
  Only the intake writes it; a write that changes nothing is not made.
- `revision(...)` counters change in the same transaction as the data they cover, so a
  controller notices, within a poll, what another process (the CLI) changed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from controller.lifecycle import CommandState
from devices.protocol import Plan, decode
from schedules.model import Campaign, Site, SiteCatalog

if TYPE_CHECKING:
    from controller.store.audit import AuditLog, AuditRecord
    from controller.store.changes import ChangeFeed
    from controller.store.rollouts import RolloutStore

RESERVED_PREFIX = "illuminate"


class RegistryError(ValueError):
    """A registry change that cannot be made; the message says why."""


class UnknownObject(RegistryError):
    """No such device, site or city (or campaign)."""


class Retired(RegistryError):
    """The device is decommissioned: its credentials cannot change any more."""


class InUse(RegistryError):
    """The site still has devices in service; `devices` names them."""

    def __init__(self, message: str, devices: Sequence[str]) -> None:
        super().__init__(message)
        self.devices = tuple(devices)


BeforeCommit = Callable[[], None]
"""Run inside a registry transaction, after its writes and before its commit."""


@dataclass(frozen=True)
class NewDevice:
    """A device to register. `secret_hash` is computed by the caller (or None)."""

    id: str
    site_id: str
    secret_hash: str | None = None
    adapter: str = "native"
    config: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DeviceRecord:
    """What the registry holds about a device (never its secret)."""

    id: str
    site_id: str
    city: str
    """The city of its site (also when the site was removed since)."""
    adapter: str
    config: dict[str, Any]
    created_at: datetime
    credentials_at: datetime | None = None
    decommissioned_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.decommissioned_at is None


@dataclass(frozen=True)
class DeviceView:
    """A device and what it last said about itself."""

    id: str
    site_id: str
    online: bool | None = None
    status_at: datetime | None = None
    firmware: str | None = None
    applied_version: int | None = None
    applied_step_at: datetime | None = None
    applied_state: dict[str, Any] | None = None
    applied_at: datetime | None = None
    reported_state: dict[str, Any] | None = None
    reported_at: datetime | None = None
    version_floor: int = 0
    confirmed_by: str | None = None
    """How the applied step was confirmed: `echo`, `readback` or `sensor`
    (`controller.confirmation.ConfirmedBy`; None: stored before this was kept, an echo)."""
    mismatch_version: int | None = None
    mismatch_step_at: datetime | None = None
    """The step (plan version, instant) the device's light sensor last refuted."""
    mismatch: dict[str, Any] | None = None
    """That refutation for staff: the reason, the target and the reading's raw figures
    (`controller.confirmation.mismatch_record`)."""


@dataclass(frozen=True)
class CampaignRecord:
    """A stored campaign as written, with its times (for the staff API)."""

    id: str
    body: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Command:
    """One plan version for one device: the outbox row and its lifecycle state."""

    id: int
    device_id: str
    version: int
    payload: str
    state: CommandState
    state_at: datetime
    created_at: datetime
    published_at: datetime | None = None
    reason: str | None = None

    @cached_property
    def plan(self) -> Plan:
        return decode(Plan, self.payload)


@dataclass(frozen=True)
class NewVersion:
    """A plan version to commit. `based_on` is the newest command the caller saw for the
    device (id and state), or None if it saw none: the version is stored only if that is
    still the newest command, in that state (compare-and-set)."""

    device_id: str
    version: int
    payload: str
    at: datetime
    based_on: tuple[int, CommandState] | None


@dataclass(frozen=True)
class Move:
    """One lifecycle transition. It is made only if the lifecycle allows it from the
    row's current state and, when `only_from` is given, that state is one of them; and
    when `seen_at` is given, only if the row has not moved since (its `state_at` is
    still that instant): the compare-and-set for decisions taken on an earlier read."""

    command_id: int
    target: CommandState
    at: datetime
    detail: str | None = None
    only_from: frozenset[CommandState] | None = None
    seen_at: datetime | None = None


@dataclass(frozen=True)
class CommandEvent:
    """One row of the append-only audit log."""

    command_id: int
    device_id: str
    version: int
    from_state: CommandState | None
    to_state: CommandState
    at: datetime
    detail: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """What the public view and the reconciler read: sites, campaigns, devices, and the
    newest command of each device."""

    catalog: SiteCatalog
    campaigns: tuple[Campaign, ...]
    devices: tuple[DeviceView, ...]
    latest: dict[str, Command] = field(default_factory=dict)
    held: Mapping[str, tuple[Campaign, ...]] = field(default_factory=dict)
    """Sites a staged rollout holds, with the campaigns their devices still run
    (`controller.store.rollouts.held_campaigns`); every other site runs `campaigns`."""


class RegistryStore(Protocol):
    def import_catalog(self, catalog: SiteCatalog) -> tuple[int, int]:
        """Insert or update every city and site, in one transaction."""

    def catalog(self) -> SiteCatalog: ...

    def add_devices(
        self,
        devices: Sequence[NewDevice],
        now: datetime,
        audit: Sequence[AuditRecord] = (),
        before_commit: BeforeCommit | None = None,
    ) -> None:
        """Register all of them in one transaction, or none: RegistryError names every
        problem (bad or reserved id, unknown site, already registered, repeated)."""

    def device_ids(self) -> set[str]:
        """Every id ever registered, decommissioned ones too (an id is never reused)."""

    def devices(self, device_ids: Collection[str] | None = None) -> dict[str, DeviceRecord]:
        """The records of these devices (or of all), decommissioned ones included."""

    def set_secret(
        self,
        device_id: str,
        secret_hash: str,
        now: datetime,
        audit: Sequence[AuditRecord] = (),
        before_commit: BeforeCommit | None = None,
    ) -> None:
        """Replace the device's secret (rotation) and mark it offline: the broker closed
        its connection without its will. UnknownObject, or Retired."""

    def decommission(
        self,
        device_id: str,
        now: datetime,
        audit: Sequence[AuditRecord] = (),
        before_commit: BeforeCommit | None = None,
    ) -> None:
        """Take the device out of service: drop its secret, mark it offline, supersede
        its open commands; its record and history stay. UnknownObject, or Retired."""

    def put_site(self, site: Site, now: datetime, audit: Sequence[AuditRecord] = ()) -> bool:
        """Create or replace one site (of a known city); True when it was new (or
        removed before). UnknownObject for an unknown city."""

    def remove_site(self, site_id: str, now: datetime, audit: Sequence[AuditRecord] = ()) -> None:
        """Take a site out of the catalog. UnknownObject; InUse while devices in
        service are on it."""

    def revision(self) -> int:
        """Changes whenever sites or devices change, in any process."""


class CampaignStore(Protocol):
    def put(self, campaign: Campaign, now: datetime) -> bool:
        """Insert or replace; True when it was new."""

    def all(self) -> tuple[Campaign, ...]:
        """Every campaign, oldest first."""

    def records(self) -> list[CampaignRecord]: ...

    def record(self, campaign_id: str) -> CampaignRecord | None: ...

    def delete(self, campaign_id: str, now: datetime, audit: Sequence[AuditRecord] = ()) -> bool:
        """Remove the campaign; False when there was none."""

    def revision(self) -> int:
        """Changes whenever a campaign changes, in any process."""


class OutboxStore(Protocol):
    def latest(self, device_ids: Collection[str] | None = None) -> dict[str, Command]:
        """The newest command of each device (of those given, or of all)."""

    def get(self, keys: Collection[tuple[str, int]]) -> dict[tuple[str, int], Command]:
        """Commands by (device id, version)."""

    def pending(self, limit: int | None = None, after: int | None = None) -> list[Command]:
        """Commands still PENDING, oldest first; only those with an id above `after`
        when given (a reader that walks the outbox once, not from its start each time)."""

    def add_versions(self, versions: Sequence[NewVersion]) -> list[Command]:
        """Commit new plan versions (PENDING), superseding each device's open ones.
        Returns the commands stored; a version whose `based_on` no longer holds is
        skipped, not an error (the caller decides again on fresh data)."""

    def move(self, moves: Sequence[Move]) -> list[bool]:
        """Apply transitions in order, in one transaction; one bool per move. A move
        that the lifecycle does not allow from the current state changes nothing."""

    def count_since(self, since: Mapping[str, datetime]) -> dict[str, int]:
        """How many versions each device was issued at or after its instant."""

    def events(self, device_id: str | None = None) -> list[CommandEvent]: ...


class ReportStore(Protocol):
    def views(self, device_ids: Collection[str] | None = None) -> dict[str, DeviceView]:
        """Devices with their reports (of those given, or of all)."""

    def save(self, views: Sequence[DeviceView]) -> int:
        """Write the report fields of these devices in one transaction; returns how many
        rows changed. Registration fields (site, secret) are never touched."""


@dataclass(frozen=True)
class Stores:
    """The stores of one database (or of one in-memory world)."""

    registry: RegistryStore
    campaigns: CampaignStore
    outbox: OutboxStore
    reports: ReportStore
    changes: ChangeFeed | None = None
    """Told of every report and command write, when the stores are `watched`."""
    rollouts: RolloutStore | None = None
    """Staged rollouts (`controller/store/rollouts.py`); None: changes go out at once."""
    audit: AuditLog | None = None
    """The audit log the registry's and campaigns' edits write to, in their transactions."""

    def snapshot(self) -> Snapshot:
        views = self.reports.views()
        campaigns = self.campaigns.all()
        held: Mapping[str, tuple[Campaign, ...]] = {}
        if self.rollouts is not None:
            from controller.store.rollouts import held_campaigns

            held = held_campaigns(self.rollouts, campaigns, views.values())
        return Snapshot(
            self.registry.catalog(),
            campaigns,
            tuple(views[k] for k in sorted(views)),
            self.outbox.latest(),
            held,
        )
