"""Device health, for staff: is it online, when did it last speak, its firmware, how far
its clock is from the controller's, and its current plan version and state.

Most of it is stored (the device's retained status and last will, its firmware, what it
applied and reports; see `controller/store/base.py` `DeviceView`, and its newest plan
version with its lifecycle state). Three are kept by the running controller only,
by `HealthTracker`, which the intake feeds with every message it takes in:

- `last_seen`: when the controller last took in a live message of the device (a
  retained copy handed over on subscribe proves nothing about now);
- the clock offset, the controller's clock minus the device's (the protocol's sense):
  the `clock_offset_ms` the device reports in its state reports and acks (it measures
  it from the controller's clock beacons); for a device that reports none (an older
  agent, or one that has not heard a beacon yet), the controller's own measurement:
  its time when it took in a live timestamped message (the `reported_at` of a state
  report, the `applied_at` of an applied ack) minus that instant. That one includes
  the delivery delay (a few milliseconds on a healthy network);
- whether the device's clock is synchronised, as its last state report says
  (`clock_synced`; the reference agent asks its kernel, devices/kernelclock.py).

After a restart these are empty until the device next speaks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from controller.store.base import Command, DeviceView
from devices.protocol import MAX_CLOCK_OFFSET_MS, Ack, DeviceState, DeviceStatus, Instant, Stage

ClockSource = Literal["state", "ack", "device"]


@dataclass(frozen=True)
class Seen:
    last_seen: datetime | None = None
    clock_offset_ms: int | None = None
    clock_measured_at: datetime | None = None
    clock_source: ClockSource | None = None
    clock_synced: bool | None = None
    """What the device's last state report said (`clock_synced`), retained or live."""


def _ms(device_time: datetime, now: datetime) -> int:
    """The controller's clock (`now`) minus the device's, in ms, within the bounds."""
    offset = round((now - device_time).total_seconds() * 1000)
    return max(-MAX_CLOCK_OFFSET_MS, min(MAX_CLOCK_OFFSET_MS, offset))


def _offset(
    body: Ack | DeviceState | DeviceStatus, now: datetime
) -> tuple[int, ClockSource] | None:
    """The clock offset a live message shows, and whence; None when it shows none."""
    if isinstance(body, Ack | DeviceState) and body.clock_offset_ms is not None:
        return body.clock_offset_ms, "device"
    if isinstance(body, Ack) and body.stage is Stage.APPLIED and body.applied_at:
        return _ms(body.applied_at, now), "ack"
    if isinstance(body, DeviceState):
        return _ms(body.reported_at, now), "state"
    return None


class HealthTracker:
    """Last seen and clock offset of every device, in memory (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, Seen] = {}

    def observe(
        self, device_id: str, body: Ack | DeviceState | DeviceStatus, retain: bool, now: datetime
    ) -> None:
        """The intake took in `body` from `device_id` at `now` (controller time)."""
        offset = _offset(body, now)
        with self._lock:
            known = self._seen.get(device_id) or Seen()
            changes: dict[str, Any] = {}  # one replace per message: it is on the intake's path
            if isinstance(body, DeviceState) and body.clock_synced is not None:
                changes["clock_synced"] = body.clock_synced
            if retain:
                # a retained copy was said some time ago: not "seen now", and its own
                # offset figure only while nothing newer is known
                if offset is not None and offset[1] == "device" and known.clock_source is None:
                    changes.update(
                        clock_offset_ms=offset[0], clock_measured_at=now, clock_source="device"
                    )
            else:
                changes["last_seen"] = now
                # a device that reports its own figure is not measured over it
                if offset is not None and (offset[1] == "device" or known.clock_source != "device"):
                    changes.update(
                        clock_offset_ms=offset[0], clock_measured_at=now, clock_source=offset[1]
                    )
            self._seen[device_id] = replace(known, **changes)

    def seen(self, device_id: str, now: datetime) -> None:
        """A live message of a third-party device was taken in at `now` (its vendor's
        payloads carry no clock figure: only `last_seen` is kept)."""
        with self._lock:
            known = self._seen.get(device_id) or Seen()
            self._seen[device_id] = replace(known, last_seen=now)

    def get(self, device_id: str) -> Seen | None:
        with self._lock:
            return self._seen.get(device_id)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanHealth(_Out):
    version: int
    """The newest plan version the controller issued to the device."""
    state: str
    """Its lifecycle state: pending, published, received, armed, applied, ..."""
    state_at: Instant
    test: bool
    """True while the newest plan is a test flash."""
    reason: str | None = None


class AppliedHealth(_Out):
    version: int
    step_at: Instant
    state: dict[str, Any] | None
    applied_at: Instant | None
    """By the device's clock."""
    confirmed_by: str | None = None
    """How it was confirmed: `echo`, `readback` or `sensor` (None: stored before this
    was kept)."""


class MismatchHealth(_Out):
    """The step the device's light sensor last refuted, with what it saw."""

    version: int
    step_at: Instant
    detail: dict[str, Any]
    """The reason, the step's target and the sensor's reading (colour, level, counts)."""


class ReportedHealth(_Out):
    state: dict[str, Any]
    reported_at: Instant
    """By the device's clock."""


class ClockHealth(_Out):
    offset_ms: int | None
    """The controller's clock minus the device's, in milliseconds (None: not known)."""
    measured_at: Instant | None
    source: ClockSource | None
    """`device` (the `clock_offset_ms` it reports), or the controller's measurement from
    a live `state` report or applied `ack`."""
    flagged: bool | None
    """True while the offset the device reports is beyond `control.clock_tolerance_ms`
    (it then applies by the controller's time; its own clock source needs fixing)."""
    synced: bool | None
    """Whether the device says its clock is synchronised (`clock_synced` in its state
    report; the agent asks its kernel). None: it does not say."""


class DeviceHealth(_Out):
    id: str
    site: str
    city: str | None
    online: bool | None
    """From the device's retained status: its birth, or its last will (false). None:
    never heard from."""
    status_at: Instant | None
    """When the controller took in that status."""
    last_seen: Instant | None
    firmware: str | None
    clock: ClockHealth | None
    plan: PlanHealth | None
    applied: AppliedHealth | None
    """The newest step the device reported applying."""
    reported: ReportedHealth | None
    """Its last state report: the output it shows."""
    mismatch: MismatchHealth | None = None
    """The last step its light sensor refuted (None: none, or no sensor)."""


def device_health(
    view: DeviceView,
    city: str | None,
    command: Command | None,
    seen: Seen | None,
    flagged: bool | None = None,
) -> DeviceHealth:
    plan = None
    if command is not None:
        try:
            test = command.plan.test
        except ValueError:
            test = False
        plan = PlanHealth(
            version=command.version,
            state=command.state.value,
            state_at=command.state_at,
            test=test,
            reason=command.reason,
        )
    applied = None
    if view.applied_version is not None and view.applied_step_at is not None:
        applied = AppliedHealth(
            version=view.applied_version,
            step_at=view.applied_step_at,
            state=view.applied_state,
            applied_at=view.applied_at,
            confirmed_by=view.confirmed_by,
        )
    mismatch = None
    if view.mismatch_version is not None and view.mismatch_step_at is not None:
        mismatch = MismatchHealth(
            version=view.mismatch_version,
            step_at=view.mismatch_step_at,
            detail=view.mismatch or {},
        )
    reported = None
    if view.reported_state is not None and view.reported_at is not None:
        reported = ReportedHealth(state=view.reported_state, reported_at=view.reported_at)
    clock = None
    if seen is not None and (seen.clock_offset_ms is not None or seen.clock_synced is not None):
        clock = ClockHealth(
            offset_ms=seen.clock_offset_ms,
            measured_at=seen.clock_measured_at,
            source=seen.clock_source,
            flagged=flagged if seen.clock_source == "device" else None,
            synced=seen.clock_synced,
        )
    return DeviceHealth(
        id=view.id,
        site=view.site_id,
        city=city,
        online=view.online,
        status_at=view.status_at,
        last_seen=seen.last_seen if seen is not None else None,
        firmware=view.firmware,
        clock=clock,
        plan=plan,
        applied=applied,
        reported=reported,
        mismatch=mismatch,
    )
