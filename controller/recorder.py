"""The controller's side of the record: its runs, and the outcome of each ended window.

- On start the recorder stores a new controller run, every `beat_s` it marks it alive,
  and on a clean stop it marks it stopped. The time no run covers is the controller's
  down time (`controller/windows.py: down_periods`), known to within one beat for a
  crash (a run that ended without a stop counts up to its last beat).
- On each beat it settles the windows that ended within `lookback` (and after the first
  run began): for every device, `classify` gives each window its verdict, and what
  changed is written in one batch (`HistoryStore.put_outcomes`). A verdict stays open to
  change for `lookback`, so a report that comes late (the acks the broker held for the
  controller while it was down) turns `missed` into `confirmed_late`; after that it is
  the permanent record, whatever becomes of the campaign.
- A device is judged from the first time it was heard (its first event), so a device
  registered today is not held to yesterday's windows.
- Settling waits until the intake has stored what the broker handed over since this run
  began (`caught_up`), so the held acks are in before a window is called missed.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from controller.store.base import Stores
from controller.store.history import (
    ControllerRun,
    DeviceEvent,
    EventKind,
    HistoryStore,
    WindowRecord,
)
from controller.timelines import Timelines
from controller.windows import Window, classify, down_periods, settled, site_windows
from devices.clock import TimeSource
from schedules.model import SiteCatalog
from schedules.resolve import LOOKAROUND

log = logging.getLogger(__name__)

BEAT_S = 30.0
LOOKBACK = timedelta(hours=48)
PRESENCE_BEFORE = timedelta(days=7)
"""How far before a window its device's last status is looked for."""


class Recorder:
    def __init__(
        self,
        history: HistoryStore,
        stores: Stores,
        clock: TimeSource,
        grace: timedelta,
        timelines: Timelines | None = None,
        *,
        beat_s: float = BEAT_S,
        lookback: timedelta = LOOKBACK,
        caught_up: Callable[[], datetime | None] | None = None,
        catalogs: Callable[[], SiteCatalog] | None = None,
    ) -> None:
        self.history = history
        self.stores = stores
        self.catalogs = catalogs if catalogs is not None else stores.registry.catalog
        """The site catalog (the process's shared copy, `Catalogs`, when given)."""
        self.clock = clock
        self.grace = grace
        self.timelines = timelines if timelines is not None else Timelines()
        self.beat_s = beat_s
        self.lookback = lookback
        self.caught_up = caught_up
        self.run: ControllerRun | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._by_site: tuple[int, dict[str, list[str]]] | None = None

    def start(self, background: bool = True) -> None:
        """Store this run; with `background`, beat and settle every `beat_s`."""
        self.run = self.history.start_run(self.clock())
        log.info("controller run %d started", self.run.id)
        if background:
            self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.run is not None:
            try:
                self.history.beat(self.run.id, self.clock(), stopped=True)
            except Exception:
                log.exception("could not record the controller's stop")

    def _loop(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                self.beat()
                self.settle()
            except Exception:  # the database is away: the next beat tries again
                log.exception("recorder: could not record; will retry")

    def beat(self) -> None:
        if self.run is not None:
            self.history.beat(self.run.id, self.clock())

    def settle(self, now: datetime | None = None) -> list[WindowRecord]:
        """Judge every ended window in the lookback; store and return what changed."""
        with self._lock:
            return self._settle(now or self.clock())

    def _settle(self, now: datetime) -> list[WindowRecord]:
        runs = self.history.runs()
        if not runs:
            return []
        if self.caught_up is not None and self.run is not None:
            stored_to = self.caught_up()
            if stored_to is None or stored_to < self.run.started_at:
                return []  # the messages held for us are not all in yet
        since = max(runs[0].started_at, now - self.lookback)
        gaps = down_periods(runs, now, self.run.id if self.run is not None else None)
        devices_by_site = self._devices_by_site()
        windows = self._windows(set(devices_by_site), since, now, runs[0].started_at)
        if not windows:
            return []
        opened = min(w.opened_at for ws in windows.values() for w in ws)
        device_ids = {d for s in windows for d in devices_by_site.get(s, ())}
        heard = self.history.first_heard(device_ids)
        steps: dict[str, list[DeviceEvent]] = defaultdict(list)
        for event in self.history.step_events(device_ids, opened):
            steps[event.device_id].append(event)
        presence: dict[str, list[DeviceEvent]] = defaultdict(list)
        for event in self.history.events(
            device_ids,
            since=opened - PRESENCE_BEFORE,
            kinds=(EventKind.ONLINE, EventKind.OFFLINE),
        ):
            presence[event.device_id].append(event)
        stored = {r.key: r for r in self.history.outcomes(ends_since=since)}
        changed: list[WindowRecord] = []
        for site_id, site_windows_ in windows.items():
            for device_id in devices_by_site.get(site_id, ()):
                first = heard.get(device_id)
                for window in site_windows_:
                    if first is None or first > window.starts_at + self.grace:
                        continue  # not in service yet
                    judged = classify(
                        window, steps[device_id], presence[device_id], gaps, self.grace
                    )
                    evidence = judged.evidence
                    record = WindowRecord(
                        device_id=device_id,
                        site_id=site_id,
                        campaign_id=window.campaign_id,
                        starts_at=window.starts_at,
                        ends_at=window.ends_at,
                        state=window.light.model_dump(mode="json"),
                        verdict=judged.verdict,
                        decided_at=now,
                        confirmed_at=evidence.applied_at if evidence else None,
                        reported_at=evidence.received_at if evidence else None,
                    )
                    known = stored.get(record.key)
                    if known is None or not known.same_outcome(record):
                        changed.append(record)
        if changed:
            self.history.put_outcomes(changed)
            log.info("record: %d window outcomes settled or revised", len(changed))
        return changed

    def _devices_by_site(self) -> dict[str, list[str]]:
        """Each site's devices, read again only when the registry moved (a full read of
        10,000 devices' reports was most of a beat's cost)."""
        revision = self.stores.registry.revision()  # first: a change after it is read next time
        if self._by_site is not None and self._by_site[0] == revision:
            return self._by_site[1]
        out: dict[str, list[str]] = defaultdict(list)
        for view in self.stores.reports.views().values():
            out[view.site_id].append(view.id)
        for ids in out.values():
            ids.sort()
        self._by_site = (revision, out)
        return out

    def _windows(
        self, site_ids: set[str], since: datetime, now: datetime, known_from: datetime
    ) -> dict[str, list[Window]]:
        """The settled windows of each site that ended in [since, now] and began at or
        after `known_from` (the first run's start: nothing is known before)."""
        catalog = self.catalogs()
        campaigns = self.stores.campaigns.all()
        revision = (self.stores.registry.revision(), self.stores.campaigns.revision())
        zones = {c.id: c.zone for c in catalog.cities}
        out: dict[str, list[Window]] = {}
        for site in catalog.sites:
            if site.id not in site_ids:
                continue
            segments = self.timelines.segments(
                campaigns, revision, site, zones[site.city], since - LOOKAROUND, now
            )
            found = [
                w
                for w in site_windows(site.id, segments)
                if w.ends_at >= since and w.starts_at >= known_from and settled(w, now, self.grace)
            ]
            if found:
                out[site.id] = found
        return out
