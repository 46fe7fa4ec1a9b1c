"""Which devices' reports and commands were written, for readers that keep a copy.

The controller's frequent readers (the reconciler, the public view) read every device's
report and newest command. At 10,000 devices that is most of their cost, while between
two of their runs only the devices that spoke, or whose commands moved, changed. So:

- `watched(stores)` wraps the outbox and report stores so that every write tells a
  `ChangeFeed` what it touched (after its transaction, so a reader that hears of a
  change reads it committed);
- `DeviceReads` keeps a reader's copy of every report and newest command, and on each
  `read` re-reads only the devices written since its last read. It reads everything
  again after a registry change (another process may have added or removed devices),
  when more than half of the devices changed, and every `full_every_s` in any case.

Writes made by another process to reports or commands are not heard; only the
controller makes those, and the periodic full read bounds how long one could be missed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from controller.store.base import (
    Command,
    CommandEvent,
    DeviceView,
    Move,
    NewVersion,
    OutboxStore,
    RegistryStore,
    ReportStore,
    Snapshot,
    Stores,
)
from schedules.model import Campaign, SiteCatalog

FULL_EVERY_S = 300.0


class Subscription:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: set[str] = set()
        self._commands: set[int] = set()

    def add(self, devices: Iterable[str], commands: Iterable[int]) -> None:
        with self._lock:
            self._devices.update(devices)
            self._commands.update(commands)

    def take(self) -> tuple[set[str], set[int]]:
        """What was written since the last take: device ids, command ids."""
        with self._lock:
            taken = self._devices, self._commands
            self._devices, self._commands = set(), set()
            return taken


class ChangeFeed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def wrote(self, devices: Collection[str] = (), commands: Collection[int] = ()) -> None:
        if not devices and not commands:
            return
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.add(devices, commands)


class WatchedOutbox:
    """An outbox store that tells a feed what each write touched."""

    def __init__(self, inner: OutboxStore, feed: ChangeFeed) -> None:
        self.inner = inner
        self.feed = feed

    def latest(self, device_ids: Collection[str] | None = None) -> dict[str, Command]:
        return self.inner.latest(device_ids)

    def get(self, keys: Collection[tuple[str, int]]) -> dict[tuple[str, int], Command]:
        return self.inner.get(keys)

    def pending(self, limit: int | None = None, after: int | None = None) -> list[Command]:
        return self.inner.pending(limit, after)

    def add_versions(self, versions: Sequence[NewVersion]) -> list[Command]:
        try:
            return self.inner.add_versions(versions)
        finally:  # even a failed write may have raced a commit: have it read again
            self.feed.wrote(devices={v.device_id for v in versions})

    def move(self, moves: Sequence[Move]) -> list[bool]:
        try:
            return self.inner.move(moves)
        finally:
            self.feed.wrote(commands={m.command_id for m in moves})

    def count_since(self, since: Mapping[str, datetime]) -> dict[str, int]:
        return self.inner.count_since(since)

    def events(self, device_id: str | None = None) -> list[CommandEvent]:
        return self.inner.events(device_id)


class WatchedReports:
    """A report store that tells a feed which devices each write touched."""

    def __init__(self, inner: ReportStore, feed: ChangeFeed) -> None:
        self.inner = inner
        self.feed = feed

    def views(self, device_ids: Collection[str] | None = None) -> dict[str, DeviceView]:
        return self.inner.views(device_ids)

    def save(self, views: Sequence[DeviceView]) -> int:
        try:
            return self.inner.save(views)
        finally:
            self.feed.wrote(devices={v.id for v in views})


def watched(stores: Stores) -> Stores:
    """The same stores, with a change feed that every report and command write tells."""
    if stores.changes is not None:
        return stores
    feed = ChangeFeed()
    return replace(
        stores,
        outbox=WatchedOutbox(stores.outbox, feed),
        reports=WatchedReports(stores.reports, feed),
        changes=feed,
    )


class DeviceReads:
    """One reader's copy of every device's report and newest command (see the module).
    Not thread-safe: one reader, one thread."""

    def __init__(
        self,
        stores: Stores,
        monotonic: Callable[[], float] = time.monotonic,
        full_every_s: float = FULL_EVERY_S,
    ) -> None:
        self.stores = stores
        self.monotonic = monotonic
        self.full_every_s = full_every_s
        self._subscription = stores.changes.subscribe() if stores.changes is not None else None
        self._views: dict[str, DeviceView] | None = None
        self._latest: dict[str, Command] = {}
        self._owner: dict[int, str] = {}
        self._revision: int | None = None
        self._full_at = 0.0
        self.full_reads = 0
        self.partial_reads = 0

    def read(self) -> tuple[dict[str, DeviceView], dict[str, Command]]:
        """Every device's report and newest command, as committed by now."""
        revision = self.stores.registry.revision()
        # take what was written before reading: a write after it is read next time
        devices, commands = (
            self._subscription.take() if self._subscription is not None else (set(), set())
        )
        views = self._views
        full = (
            views is None
            or self._subscription is None
            or revision != self._revision
            or self.monotonic() >= self._full_at + self.full_every_s
        )
        if not full:
            assert views is not None
            dirty = devices | {self._owner[c] for c in commands if c in self._owner}
            if len(dirty) * 2 > len(views):
                full = True
            elif dirty:
                self._merge(views, dirty)
        if full:
            self._full_read(revision)
        assert self._views is not None
        return dict(self._views), dict(self._latest)

    def _full_read(self, revision: int) -> None:
        self._views = self.stores.reports.views()
        self._latest = self.stores.outbox.latest()
        self._owner = {c.id: d for d, c in self._latest.items()}
        self._revision = revision
        self._full_at = self.monotonic()
        self.full_reads += 1

    def _merge(self, views: dict[str, DeviceView], dirty: set[str]) -> None:
        fresh_views = self.stores.reports.views(dirty)
        fresh_latest = self.stores.outbox.latest(dirty)
        for device_id in dirty:
            view = fresh_views.get(device_id)
            if view is None:
                views.pop(device_id, None)
            else:
                views[device_id] = view
            old = self._latest.pop(device_id, None)
            if old is not None:
                self._owner.pop(old.id, None)
            command = fresh_latest.get(device_id)
            if command is not None:
                self._latest[device_id] = command
                self._owner[command.id] = device_id
        self.partial_reads += 1


class Catalogs:
    """The site catalog, read again only when the registry's revision moved: one copy
    for every reader in the process (the reconciler and the public view's snapshots; at
    10,000 sites a copy is about 11 MiB). Safe from any thread."""

    def __init__(self, registry: RegistryStore) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._held: tuple[int, SiteCatalog] | None = None

    def __call__(self) -> SiteCatalog:
        # the revision first: a change committed between the two reads is read next time
        revision = self.registry.revision()
        with self._lock:
            held = self._held
        if held is not None and held[0] == revision:
            return held[1]
        catalog = self.registry.catalog()
        with self._lock:
            self._held = (revision, catalog)
        return catalog


class Snapshots:
    """Snapshots for a frequent reader (the public view): sites and campaigns are read
    again only when their revision moved (sites through `catalogs`, shared), devices and
    commands through `DeviceReads`."""

    def __init__(
        self,
        stores: Stores,
        reads: DeviceReads | None = None,
        catalogs: Catalogs | None = None,
    ) -> None:
        self.stores = stores
        self.reads = reads if reads is not None else DeviceReads(stores)
        self.catalogs = catalogs if catalogs is not None else Catalogs(stores.registry)
        self._campaigns: tuple[int, tuple[Campaign, ...]] | None = None

    def __call__(self) -> Snapshot:
        catalog = self.catalogs()
        campaigns = self.stores.campaigns.revision()
        if self._campaigns is None or self._campaigns[0] != campaigns:
            self._campaigns = (campaigns, self.stores.campaigns.all())
        views, latest = self.reads.read()
        held: Mapping[str, tuple[Campaign, ...]] = {}
        if self.stores.rollouts is not None:
            from controller.store.rollouts import held_campaigns

            held = held_campaigns(self.stores.rollouts, self._campaigns[1], views.values())
        return Snapshot(
            catalog,
            self._campaigns[1],
            tuple(views[k] for k in sorted(views)),
            latest,
            held,
        )
