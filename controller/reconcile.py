"""Desired state -> per-device plans. Level-triggered: run it any time, as often as you like.

Each run computes, for every device, the plan its site's timeline asks for over the
horizon. A new plan version is committed to the outbox only when the new plan would
make the device do something different from now on than the newest version it has.
So a restart, a repeated tick or a missed wake-up never makes a new version on its own.

A run reads everything it decides on in a few bulk queries (sites and campaigns only
when their revision moved; device reports and newest commands in one query each), takes
the expanded timelines from a cache, and writes all its new versions and UNCONFIRMED
moves in one batch each. Every write is a compare-and-set against what the run read: a
device whose command moved meanwhile (an ack just taken in) is left for the next run,
which is asked for at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from controller.confirmation import device_confirmed_at
from controller.lifecycle import CommandState
from controller.store.base import Command, DeviceView, Move, NewVersion, Stores
from controller.timelines import Timelines
from devices.clock import TimeSource
from devices.protocol import MAX_STEPS, Plan, PlanStep, encode
from devices.protocol import LightState as WireLight
from schedules.model import Campaign, Light, Site, SiteCatalog
from schedules.resolve import LOOKAROUND, Segment

log = logging.getLogger(__name__)

OFF = WireLight(on=False)
RETRIED = frozenset({CommandState.UNCONFIRMED, CommandState.FAILED})
MAX_RETRIES = 3
AWAITING = frozenset(
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
    """Do two plans make a device do the same things from `now` on?

    A plan always starts with the step in force when it was issued, so an old plan whose
    first step is still ahead of `now` means this clock went back (a wall-clock step):
    the device, on its own clock, is already past that step, so only what follows it is
    compared.
    """
    if not old:
        return not new
    start = max(now, old[0].at)
    instants = {start} | {s.at for s in (*old, *new) if s.at > start}
    for t in sorted(instants):
        a = _state_at(old, t)
        b = _state_at(new, t)
        if a is None or b is None or a[1] != b[1]:
            return False
        if t == start and b[1].on and a[0] != b[0]:
            return False  # a lit step must keep its true start: it is what gets confirmed
    return True


def _state_at(steps: Sequence[PlanStep], t: datetime) -> tuple[datetime, WireLight] | None:
    found = None
    for step in steps:
        if step.at <= t:
            found = (step.at, step.state)
        else:
            break
    return found


def step_confirmed(device: DeviceView, command: Command, step: PlanStep) -> bool:
    """The one confirmation rule, for a device and its command."""
    return device_confirmed_at(device, command.version, step) is not None


def _wakes(wakes: set[datetime], plan: Plan, now: datetime, grace: timedelta) -> None:
    """The instants a device's plan needs the reconciler at: each step still to come,
    and the end of the grace of each step (counted from the plan's issue for a step it
    arrived late for). Taken from the stored plan, never from a freshly computed one,
    whose step in force may be stamped `now` and would ask for a wake-up after every run."""
    for step in plan.steps:
        if step.at > now:
            wakes.add(step.at)
        graced = max(step.at, plan.issued_at) + grace
        if graced > now:
            wakes.add(graced)


@dataclass
class ReconcileResult:
    new_versions: dict[str, int] = field(default_factory=dict)
    unconfirmed: list[str] = field(default_factory=list)
    wake_at: list[datetime] = field(default_factory=list)
    conflicts: int = 0
    """Decisions not stored because the device's command moved meanwhile."""
    devices: int = 0


@dataclass
class _Inputs:
    catalog: SiteCatalog
    campaigns: tuple[Campaign, ...]
    revision: tuple[int, int]
    sites: dict[str, Site]
    zones: dict[str, ZoneInfo]


class Reconciler:
    def __init__(
        self,
        stores: Stores,
        clock: TimeSource,
        horizon: timedelta,
        grace: timedelta,
        on_outbox: Callable[[], None] = lambda: None,
        timelines: Timelines | None = None,
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.horizon = horizon
        self.grace = grace
        self.on_outbox = on_outbox
        self.timelines = timelines if timelines is not None else Timelines()
        self.retry_after = max(grace * 2, timedelta(seconds=60))
        self._lock = threading.Lock()
        self._inputs: _Inputs | None = None
        self._plans: dict[int, Plan] = {}

    def _read_inputs(self) -> _Inputs:
        revision = (self.stores.registry.revision(), self.stores.campaigns.revision())
        if self._inputs is None or self._inputs.revision != revision:
            catalog = self.stores.registry.catalog()
            self._inputs = _Inputs(
                catalog=catalog,
                campaigns=self.stores.campaigns.all(),
                revision=revision,
                sites={s.id: s for s in catalog.sites},
                zones={c.id: c.zone for c in catalog.cities},
            )
        return self._inputs

    def _plan(self, command: Command) -> Plan:
        plan = self._plans.get(command.id)
        if plan is None:
            plan = self._plans[command.id] = command.plan
        return plan

    def run(self, now: datetime | None = None) -> ReconcileResult:
        with self._lock:
            return self._run(now or self.clock())

    def _run(self, now: datetime) -> ReconcileResult:
        inputs = self._read_inputs()
        views = self.stores.reports.views()
        latest = self.stores.outbox.latest()
        self._plans = {c.id: p for c in latest.values() if (p := self._plans.get(c.id))}
        result = ReconcileResult(devices=len(views))
        per_site: dict[str, list[PlanStep]] = {}
        wakes: set[datetime] = set()
        changed: list[tuple[DeviceView, Command | None, list[PlanStep]]] = []
        retry: list[tuple[DeviceView, Command, list[PlanStep], PlanStep]] = []
        moves: list[Move] = []
        for device_id in sorted(views):
            device = views[device_id]
            site = inputs.sites.get(device.site_id)
            if site is None:
                continue
            try:
                steps = per_site.get(site.id)
                if steps is None:
                    steps = per_site[site.id] = self._steps(inputs, site, now)
                command = latest.get(device_id)
                self._decide(device, command, steps, now, changed, retry, moves, wakes)
            except Exception as exc:  # one device's trouble never stops the fleet's plans
                log.error("device %s: cannot plan, keeping its current plan: %s", device_id, exc)
        if retry:
            issued = self.stores.outbox.count_since({d.id: due.at for d, _, _, due in retry})
            for device, command, steps, _due in retry:
                if issued.get(device.id, 0) < MAX_RETRIES:
                    log.warning(
                        "device %s: v%d %s; sending the plan again",
                        device.id,
                        command.version,
                        command.state.value,
                    )
                    changed.append((device, command, steps))
        if moves:
            owner = {c.id: d for d, c in latest.items()}
            for move, ok in zip(moves, self.stores.outbox.move(moves), strict=True):
                if ok:
                    result.unconfirmed.append(owner[move.command_id])
                else:
                    result.conflicts += 1
        if changed:
            self._store_versions(changed, now, result, wakes)
        result.wake_at = sorted(wakes)
        if result.new_versions:
            self.on_outbox()
        return result

    def _decide(
        self,
        device: DeviceView,
        command: Command | None,
        steps: list[PlanStep],
        now: datetime,
        changed: list[tuple[DeviceView, Command | None, list[PlanStep]]],
        retry: list[tuple[DeviceView, Command, list[PlanStep], PlanStep]],
        moves: list[Move],
        wakes: set[datetime],
    ) -> None:
        if command is None:
            changed.append((device, None, steps))
            return
        old = self._plan(command)
        _wakes(wakes, old, now, self.grace)
        if command.state is CommandState.DRIFTED or device.version_floor >= command.version:
            changed.append((device, command, steps))
            return
        if not same_from_now(old.steps, steps, now):
            changed.append((device, command, steps))
            return
        due = old.step_at(now)
        if due is None:
            return
        if command.state in RETRIED:
            if device.online is True:
                retry_at = command.state_at + self.retry_after
                if now >= retry_at:
                    retry.append((device, command, steps, due))
                else:
                    wakes.add(retry_at)
            return
        if command.state not in AWAITING:
            return
        # the step in force with no apply report within the grace period: UNCONFIRMED.
        # The grace runs from the step's instant, or from the plan's issue when the plan
        # was issued after its first step (catch-up).
        if now < max(due.at, old.issued_at) + self.grace:
            return
        if step_confirmed(device, command, due):
            return
        moves.append(
            Move(
                command.id,
                CommandState.UNCONFIRMED,
                now,
                f"no apply report for the step at {due.at}",
                only_from=frozenset({command.state}),
                seen_at=command.state_at,
            )
        )

    def _store_versions(
        self,
        changed: list[tuple[DeviceView, Command | None, list[PlanStep]]],
        now: datetime,
        result: ReconcileResult,
        wakes: set[datetime],
    ) -> None:
        versions = []
        for device, command, steps in changed:
            version = max(command.version if command else 0, device.version_floor) + 1
            plan = Plan(version=version, issued_at=now, steps=steps)
            versions.append(
                NewVersion(
                    device.id,
                    version,
                    encode(plan).decode(),
                    now,
                    (command.id, command.state) if command is not None else None,
                )
            )
        stored = self.stores.outbox.add_versions(versions)
        for c in stored:
            _wakes(wakes, c.plan, now, self.grace)
            result.new_versions[c.device_id] = c.version
            log.info("device %s: plan version %d", c.device_id, c.version)
        result.conflicts += len(versions) - len(stored)

    def _steps(self, inputs: _Inputs, site: Site, now: datetime) -> list[PlanStep]:
        zone = inputs.zones[site.city]
        # Look past the horizon, so a window that straddles it keeps its true shape;
        # plan_steps then keeps only the changes up to the horizon.
        end = now + self.horizon
        segments = self.timelines.segments(
            inputs.campaigns, inputs.revision, site, zone, now - LOOKAROUND, end + LOOKAROUND
        )
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
