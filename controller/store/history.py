"""The record of what was lit: the store seam, its data, and its in-memory version.

Three kinds of rows, all kept for good (nothing here is ever deleted):

- `DeviceEvent`: one per step a device reported applying (an `applied` ack, or a state
  report naming its plan version and the step in force), once per device, version and
  step; and one per change of its online status. Written by the intake, one batch
  insert per intake batch.
- `ControllerRun`: one per controller process: when it started, when it was last
  alive (a heartbeat), and when it stopped cleanly. The controller's down time is the
  time no run covers (`controller/windows.py: down_periods`).
- `WindowRecord`: the settled outcome of one window of one campaign at one device
  (`controller/recorder.py` writes them). They outlive the campaign: the campaign's
  outcome per site is read from them, not from the campaigns.

`tests/controller/test_history_store.py` runs one contract on memory, SQLite and
PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class EventKind(StrEnum):
    STEP = "step"
    """The device reported applying a step."""
    ONLINE = "online"
    OFFLINE = "offline"
    MISMATCH = "mismatch"
    """The device's light sensor saw something else than the step it applied: the step
    is not confirmed (`reason` and `reading` say what it saw). Once per step."""


class Verdict(StrEnum):
    """What became of one window at one device (docs/record.md)."""

    CONFIRMED = "confirmed"
    """The device reported applying the window's opening step, and the report reached
    the controller while the window was open."""
    CONFIRMED_LATE = "confirmed_late"
    """The device reported applying it, but the report reached the controller only
    after the window ended (the controller was down, or the report was held)."""
    MISSED = "missed"
    """The window began and ended while the controller was down, and no report of the
    device shows that it ran."""
    UNCONFIRMED = "unconfirmed"
    """The controller was up, the device online, and no report confirmed the window."""
    OFFLINE = "offline"
    """The device was offline when the window began (by its last status before the end
    of the grace period), and no report confirmed the window."""


@dataclass(frozen=True)
class DeviceEvent:
    device_id: str
    kind: EventKind
    received_at: datetime
    """When the controller took the message in (the controller's clock)."""
    version: int | None = None
    step_at: datetime | None = None
    applied_at: datetime | None = None
    """The device's own time of applying the step (a state report: its report time)."""
    state: dict[str, Any] | None = None
    source: str | None = None
    """`ack` or `state`: which message told of the step."""
    confirmed_by: str | None = None
    """A step: how it was confirmed (`echo`, `readback`, `sensor`)."""
    reading: dict[str, Any] | None = None
    """What the device's light sensor saw, when it has one."""
    reason: str | None = None
    """A mismatch: why the reading does not confirm the step, with its figures."""

    @property
    def step_key(self) -> tuple[str, int, datetime] | None:
        """What makes a step event unique: device, version, step; None for status."""
        if self.kind is not EventKind.STEP or self.version is None or self.step_at is None:
            return None
        return (self.device_id, self.version, self.step_at)

    @property
    def unique_key(self) -> tuple[str, str, int, datetime] | None:
        """Step and mismatch events are kept once per device, kind, version and step."""
        if self.kind not in _ONCE_PER_STEP or self.version is None or self.step_at is None:
            return None
        return (self.device_id, self.kind.value, self.version, self.step_at)


_ONCE_PER_STEP = frozenset({EventKind.STEP, EventKind.MISMATCH})


@dataclass(frozen=True)
class ControllerRun:
    id: int
    started_at: datetime
    alive_at: datetime
    stopped_at: datetime | None = None


@dataclass(frozen=True)
class WindowRecord:
    """The outcome of one window of one campaign at one device."""

    device_id: str
    site_id: str
    campaign_id: str
    starts_at: datetime
    ends_at: datetime
    state: dict[str, Any]
    verdict: Verdict
    decided_at: datetime
    confirmed_at: datetime | None = None
    """The device's own time of applying the window's opening step."""
    reported_at: datetime | None = None
    """When that report reached the controller."""

    @property
    def key(self) -> tuple[str, str, datetime]:
        return (self.device_id, self.campaign_id, self.starts_at)

    def same_outcome(self, other: WindowRecord) -> bool:
        """Equal but for when it was decided (a re-settled window that did not change)."""
        return replace(self, decided_at=other.decided_at) == other


class HistoryStore(Protocol):
    def add_events(self, events: Sequence[DeviceEvent]) -> int:
        """Store them in one transaction; a step event already stored (same device,
        version and step) is skipped, the first one kept. Returns how many were new."""

    def events(
        self,
        device_ids: Collection[str] | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Collection[EventKind] | None = None,
        limit: int | None = None,
    ) -> list[DeviceEvent]:
        """Events by received time (of those devices and kinds, received in
        [since, until)), oldest first; the newest `limit` when given."""

    def step_events(
        self, device_ids: Collection[str] | None, step_since: datetime
    ) -> list[DeviceEvent]:
        """Step events of steps at or after `step_since`, oldest step first."""

    def first_heard(self, device_ids: Collection[str] | None = None) -> dict[str, datetime]:
        """When each device's first event was received (devices with none are left out)."""

    def start_run(self, at: datetime) -> ControllerRun: ...

    def beat(self, run_id: int, at: datetime, stopped: bool = False) -> None:
        """The run is alive at `at` (and, when `stopped`, stopped cleanly then)."""

    def runs(self, since: datetime | None = None) -> list[ControllerRun]:
        """Runs alive at or after `since` (all when None), by start."""

    def put_outcomes(self, records: Sequence[WindowRecord]) -> int:
        """Insert or replace (by device, campaign and start) in one transaction."""

    def outcomes(
        self,
        *,
        device_id: str | None = None,
        campaign_id: str | None = None,
        ends_since: datetime | None = None,
        starts_before: datetime | None = None,
    ) -> list[WindowRecord]:
        """Stored outcomes, by start then device."""


class MemoryHistory:
    """The history store in memory, under one lock (the same contract as SQL)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[DeviceEvent] = []
        self._steps: set[tuple[str, str, int, datetime]] = set()
        self._runs: dict[int, ControllerRun] = {}
        self._outcomes: dict[tuple[str, str, datetime], WindowRecord] = {}

    def add_events(self, events: Sequence[DeviceEvent]) -> int:
        added = 0
        with self._lock:
            for event in events:
                key = event.unique_key
                if key is not None:
                    if key in self._steps:
                        continue
                    self._steps.add(key)
                self._events.append(event)
                added += 1
        return added

    def events(
        self,
        device_ids: Collection[str] | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Collection[EventKind] | None = None,
        limit: int | None = None,
    ) -> list[DeviceEvent]:
        wanted = None if device_ids is None else set(device_ids)
        with self._lock:
            found = [
                e
                for e in self._events
                if (wanted is None or e.device_id in wanted)
                and (since is None or e.received_at >= since)
                and (until is None or e.received_at < until)
                and (kinds is None or e.kind in kinds)
            ]
        found.sort(key=lambda e: e.received_at)  # stable: arrival order among equals
        return found if limit is None else found[len(found) - min(limit, len(found)) :]

    def step_events(
        self, device_ids: Collection[str] | None, step_since: datetime
    ) -> list[DeviceEvent]:
        wanted = None if device_ids is None else set(device_ids)
        with self._lock:
            found = [
                e
                for e in self._events
                if e.step_key is not None
                and e.step_at is not None
                and e.step_at >= step_since
                and (wanted is None or e.device_id in wanted)
            ]
        return sorted(found, key=lambda e: (e.step_at or step_since, e.received_at))

    def first_heard(self, device_ids: Collection[str] | None = None) -> dict[str, datetime]:
        wanted = None if device_ids is None else set(device_ids)
        out: dict[str, datetime] = {}
        with self._lock:
            for e in self._events:
                if wanted is not None and e.device_id not in wanted:
                    continue
                known = out.get(e.device_id)
                if known is None or e.received_at < known:
                    out[e.device_id] = e.received_at
        return out

    def start_run(self, at: datetime) -> ControllerRun:
        with self._lock:
            run = ControllerRun(len(self._runs) + 1, at, at)
            self._runs[run.id] = run
            return run

    def beat(self, run_id: int, at: datetime, stopped: bool = False) -> None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.stopped_at is not None:
                return
            alive = max(run.alive_at, at)
            self._runs[run_id] = replace(run, alive_at=alive, stopped_at=alive if stopped else None)

    def runs(self, since: datetime | None = None) -> list[ControllerRun]:
        with self._lock:
            found = [r for r in self._runs.values() if since is None or r.alive_at >= since]
        return sorted(found, key=lambda r: (r.started_at, r.id))

    def put_outcomes(self, records: Sequence[WindowRecord]) -> int:
        with self._lock:
            for record in records:
                self._outcomes[record.key] = record
        return len(records)

    def outcomes(
        self,
        *,
        device_id: str | None = None,
        campaign_id: str | None = None,
        ends_since: datetime | None = None,
        starts_before: datetime | None = None,
    ) -> list[WindowRecord]:
        with self._lock:
            found = [
                r
                for r in self._outcomes.values()
                if (device_id is None or r.device_id == device_id)
                and (campaign_id is None or r.campaign_id == campaign_id)
                and (ends_since is None or r.ends_at >= ends_since)
                and (starts_before is None or r.starts_at < starts_before)
            ]
        return sorted(found, key=lambda r: (r.starts_at, r.device_id, r.campaign_id))
