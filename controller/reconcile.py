"""Desired state -> per-device plans. Level-triggered: run it any time, as often as you like.

Each run computes, for every device, the plan its site's timeline asks for over the
horizon. A new plan version is committed to the outbox only when the new plan would
make the device do something different from now on than the newest version it has.
So a restart, a repeated tick or a missed wake-up never makes a new version on its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.lifecycle import CommandState
from controller.store.repo import DeviceView, Snapshot, Store
from controller.store.tables import CommandRow
from devices.clock import Clock
from devices.protocol import MAX_STEPS, Plan, PlanStep, decode, encode
from devices.protocol import LightState as WireLight
from schedules.model import Light, Site
from schedules.resolve import LOOKAROUND, Segment, timeline

log = logging.getLogger(__name__)

OFF = WireLight(on=False)
_RETRIED = frozenset({CommandState.UNCONFIRMED.value, CommandState.FAILED.value})
MAX_RETRIES = 3
_AWAITING = frozenset(
    {
        CommandState.PENDING,
        CommandState.PUBLISHED,
        CommandState.RECEIVED,
        CommandState.ARMED,
        CommandState.APPLIED,
        CommandState.DRIFTED,
    }
)


def wire_light(light: Light | None) -> WireLight:
    if light is None or not light.on:
        return OFF
    return WireLight(on=True, color=light.color, level=light.level)


def plan_steps(segments: Sequence[Segment], now: datetime, horizon_end: datetime) -> list[PlanStep]:
    """Steps for one device: the step in force now, then every change up to the horizon.

    The step in force starts at its segment's true start (inside a window), at the end
    of the last window (outside one), or at `now` when no window is in sight.
    """
    changes: list[tuple[datetime, WireLight]] = []
    for seg in segments:
        if changes and changes[-1][0] == seg.start:
            changes[-1] = (seg.start, wire_light(seg.light))
        else:
            changes.append((seg.start, wire_light(seg.light)))
        changes.append((seg.end, OFF))
    current_at, current = now, OFF
    future: list[tuple[datetime, WireLight]] = []
    for at, light in changes:
        if at <= now:
            current_at, current = at, light
        elif at <= horizon_end:
            future.append((at, light))
    steps = [PlanStep(at=current_at, state=current)]
    for at, light in future:
        if light != steps[-1].state:
            steps.append(PlanStep(at=at, state=light))
    return steps


def same_from_now(old: Sequence[PlanStep], new: Sequence[PlanStep], now: datetime) -> bool:
    """Do two plans make a device do the same things from `now` on?"""
    instants = {now} | {s.at for s in (*old, *new) if s.at > now}
    for t in sorted(instants):
        a = _state_at(old, t)
        b = _state_at(new, t)
        if a is None or b is None or a[1] != b[1]:
            return False
        if t == now and b[1].on and a[0] != b[0]:
            return False  # a lit step must keep its true start: it is what gets confirmed
    return True


def _state_at(steps: Sequence[PlanStep], t: datetime) -> tuple[datetime, WireLight] | None:
    found = None
    for step in steps:
        if step.at <= t:
            found = (step.at, step.state)
    return found


@dataclass
class ReconcileResult:
    new_versions: dict[str, int] = field(default_factory=dict)
    unconfirmed: list[str] = field(default_factory=list)
    wake_at: list[datetime] = field(default_factory=list)


class Reconciler:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        horizon: timedelta,
        grace: timedelta,
        on_outbox: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.horizon = horizon
        self.grace = grace
        self.on_outbox = on_outbox
        self.retry_after = max(grace * 2, timedelta(seconds=60))
        self._lock = threading.Lock()

    def run(self, now: datetime | None = None) -> ReconcileResult:
        with self._lock:
            now = now or self.clock()
            result = ReconcileResult()
            snap = self.store.snapshot()
            latest = self.store.latest_commands()
            sites = {site.id: site for site in snap.catalog.sites}
            per_site: dict[str, list[PlanStep]] = {}
            wakes: set[datetime] = set()
            for device in snap.devices:
                site = sites.get(device.site_id)
                if site is None:
                    continue
                try:
                    if site.id not in per_site:
                        per_site[site.id] = self._steps(snap, site, now)
                    steps = per_site[site.id]
                    wakes.update(s.at for s in steps if s.at > now)
                    wakes.update(s.at + self.grace for s in steps if s.at + self.grace > now)
                    self._device(device, latest.get(device.id), steps, now, result)
                except Exception as exc:  # one device's trouble never stops the fleet's plans
                    log.error(
                        "device %s: cannot plan, keeping its current plan: %s", device.id, exc
                    )
            result.wake_at = sorted(wakes)
            if result.new_versions:
                self.on_outbox()
            return result

    def _device(
        self,
        device: DeviceView,
        row: CommandRow | None,
        steps: list[PlanStep],
        now: datetime,
        result: ReconcileResult,
    ) -> None:
        if row is not None:
            old = decode(Plan, row.payload)
            again = (
                row.state == CommandState.DRIFTED.value
                or device.version_floor >= row.version
                or self._retry_due(device, row, old, now)
            )
            if not again and same_from_now(old.steps, steps, now):
                if self._check_confirmation(device, row, old, now):
                    result.unconfirmed.append(device.id)
                return
        version = max(row.version if row else 0, device.version_floor) + 1
        plan = Plan(version=version, issued_at=now, steps=steps)
        self.store.add_command(device.id, version, encode(plan).decode(), now)
        result.new_versions[device.id] = version
        log.info("device %s: plan version %d (%d steps)", device.id, version, len(steps))

    def _retry_due(self, device: DeviceView, row: CommandRow, plan: Plan, now: datetime) -> bool:
        """Send the plan again, as a new version, when its step in force went unconfirmed
        or failed, the device is online, `retry_after` has passed, and fewer than
        `MAX_RETRIES` versions were already sent for that step. (A device drops a
        version it has, so only a new one makes it apply and report again.)"""
        if row.state not in _RETRIED or device.online is not True:
            return False
        if now - row.state_at < self.retry_after:
            return False
        due = plan.step_at(now)
        if due is None:
            return False
        if self.store.count_commands(device.id, issued_since=due.at) >= MAX_RETRIES:
            return False
        log.warning("device %s: v%d %s; sending the plan again", device.id, row.version, row.state)
        return True

    def _steps(self, snap: Snapshot, site: Site, now: datetime) -> list[PlanStep]:
        city = snap.catalog.city_of(site)
        # Look past the horizon, so a window that straddles it keeps its true shape;
        # plan_steps then keeps only the changes up to the horizon.
        end = now + self.horizon
        segments = timeline(snap.campaigns, site, city.zone, now - LOOKAROUND, end + LOOKAROUND)
        steps = plan_steps(segments, now, end)
        if len(steps) > MAX_STEPS:
            log.warning(
                "site %s: %d steps in the horizon; the plan keeps the first %d",
                site.id,
                len(steps),
                MAX_STEPS,
            )
            steps = steps[:MAX_STEPS]
        return steps

    def _check_confirmation(
        self, seen: DeviceView, row: CommandRow, plan: Plan, now: datetime
    ) -> bool:
        """The step in force with no apply report within the grace period: UNCONFIRMED.

        The grace runs from the step's instant, or from the plan's issue when the plan
        was issued after its first step (catch-up).
        """
        due = plan.step_at(now)
        if due is None or CommandState(row.state) not in _AWAITING:
            return False
        if now < max(due.at, plan.issued_at) + self.grace:
            return False
        if _confirms(seen, plan, due.at):
            return False
        fresh = self.store.device(seen.id)  # the snapshot may predate an ack just taken in
        if fresh is None or _confirms(fresh, plan, due.at):
            return False
        return self.store.move(
            row.id, CommandState.UNCONFIRMED, now, f"no apply report for the step at {due.at}"
        )


def _confirms(device: DeviceView, plan: Plan, step_at: datetime) -> bool:
    """Did the device report applying `plan`'s step at `step_at` (or a later one)?"""
    if device.applied_step_at is None:
        return False
    if device.applied_version == plan.version:
        return device.applied_step_at >= step_at
    return device.applied_step_at > step_at
