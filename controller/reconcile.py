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

A third-party device (one with an adapter, `live` says which) is sent no plan: it gets
a live command (`controller/live.py`), the one step in force valid until the next
change, and a new one whenever the step in force changes (at each window's start and
end: the run asks to be woken at the next change), when the old one's `not_after` has
passed, or when it drifted.

While a staged rollout runs (`controller/rollout_gate.py`), the new versions of the devices
it covers go through its gate first: a device the gate holds back keeps the version it
has, and is decided again at the next run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from controller.confirmation import device_confirmed_at
from controller.flash import flash_held
from controller.lifecycle import CommandState
from controller.live import live_command
from controller.plans import PlanCache
from controller.plansteps import SiteSteps, plan_steps, same_from_now, wire_light
from controller.rollout_gate import Gated, RolloutGate
from controller.store.base import Command, DeviceView, Move, NewVersion, Stores
from controller.store.changes import DeviceReads
from controller.timelines import Timelines
from devices.clock import TimeSource
from devices.protocol import MAX_STEPS, Plan, PlanStep, encode
from schedules.model import Campaign, Site, SiteCatalog
from schedules.resolve import LOOKAROUND

__all__ = ["ReconcileResult", "Reconciler", "plan_steps", "same_from_now", "wire_light"]

log = logging.getLogger(__name__)

RETRIED = frozenset({CommandState.UNCONFIRMED, CommandState.FAILED})
MAX_RETRIES = 3
CATCH_UP = timedelta(seconds=1)
LOGGED = 5
"""Devices named in the log line of a batch of new versions (each one is at debug)."""
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


def step_confirmed(device: DeviceView, command: Command, step: PlanStep) -> bool:
    """The one confirmation rule, for a device and its command."""
    return device_confirmed_at(device, command.version, step) is not None


def same_live(old: Plan, steps: list[PlanStep], now: datetime) -> bool:
    """Does the live command `old` still say what `steps` (the step in force, then the
    changes to come) ask for now? Off is off whenever it started; a lit step must keep
    its true start and its end (`not_after`); a command past its `not_after` never holds."""
    if old.not_after is not None and now >= old.not_after:
        return False
    current = old.step_at(now)
    if current is None or not steps or current.state != steps[0].state:
        return False
    if not steps[0].state.on:
        return True
    following = next((s.at for s in steps[1:]), None)
    return current.at == steps[0].at and old.not_after == following


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
    skipped: int = 0
    """Devices not decided again: nothing their last decision depended on moved."""
    held: int = 0
    """Devices a staged rollout keeps on their current version for now."""
    paused: list[int] = field(default_factory=list)
    """Rollouts this run paused (their pause rule was met)."""


@dataclass(frozen=True, eq=False)
class _Memo:
    """A device's last decision, when it was "nothing to do", and what it rested on."""

    device: DeviceView
    command: Command | None
    site_steps: SiteSteps
    at: datetime
    due: datetime | None
    """The first instant the decision depends on (a step, a grace's end, a retry, a
    change of the site's steps); None when nothing is in sight."""
    wakes: frozenset[datetime]

    def holds(
        self, device: DeviceView, command: Command | None, site_steps: SiteSteps, now: datetime
    ) -> bool:
        return (
            self.site_steps is site_steps
            and self.at <= now
            and (self.due is None or now < self.due)
            and self.command == command
            and self.device == device
        )


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
        caught_up: Callable[[], datetime | None] | None = None,
        plans: PlanCache | None = None,
        live: Callable[[str], bool] | None = None,
        catalogs: Callable[[], SiteCatalog] | None = None,
    ) -> None:
        self.stores = stores
        self.catalogs = catalogs if catalogs is not None else stores.registry.catalog
        """The site catalog (shared with the public view's snapshots, `Catalogs`)."""
        self.live = live if live is not None else lambda _device_id: False
        """Whether a device takes live commands (a third-party device) instead of plans."""
        self.reads = DeviceReads(stores, clock.monotonic)
        self.caught_up = caught_up
        """When given, the time up to which every device message is stored (the intake's
        `caught_up_to`): a step is called UNCONFIRMED only once the messages that came
        before its grace ran out are in, not while its ack may still wait in a queue."""
        self.clock = clock
        self.horizon = horizon
        self.grace = grace
        self.on_outbox = on_outbox
        self.timelines = timelines if timelines is not None else Timelines()
        self.retry_after = max(grace * 2, timedelta(seconds=60))
        self._lock = threading.Lock()
        self._inputs: _Inputs | None = None
        self.plans = plans if plans is not None else PlanCache()
        self._memos: dict[str, _Memo] = {}
        self._site_cache: dict[str, SiteSteps] = {}
        self.gate = (
            RolloutGate(stores.rollouts, stores.outbox, self.plans)
            if stores.rollouts is not None
            else None
        )
        """The staged rollouts' gate, when the stores keep rollouts."""

    def _read_inputs(self) -> _Inputs:
        revision = (self.stores.registry.revision(), self.stores.campaigns.revision())
        if self._inputs is None or self._inputs.revision != revision:
            catalog = self.catalogs()
            self._inputs = _Inputs(
                catalog=catalog,
                campaigns=self.stores.campaigns.all(),
                revision=revision,
                sites={s.id: s for s in catalog.sites},
                zones={c.id: c.zone for c in catalog.cities},
            )
        return self._inputs

    def run(self, now: datetime | None = None) -> ReconcileResult:
        with self._lock:
            return self._run(now or self.clock())

    def _run(self, now: datetime) -> ReconcileResult:
        inputs = self._read_inputs()
        views, latest = self.reads.read()
        self.plans.keep({c.id for c in latest.values()})
        result = ReconcileResult(devices=len(views))
        per_site: dict[str, SiteSteps] = {}
        wakes: set[datetime] = set()
        changed: list[tuple[DeviceView, Command | None, list[PlanStep]]] = []
        retry: list[tuple[DeviceView, Command, list[PlanStep], PlanStep]] = []
        moves: list[Move] = []
        memos: dict[str, _Memo] = {}
        shared: dict[frozenset[datetime], frozenset[datetime]] = {}  # devices alike share
        end = now + self.horizon
        for device_id in sorted(views):
            device = views[device_id]
            site = inputs.sites.get(device.site_id)
            if site is None:
                continue
            try:
                site_steps = per_site.get(site.id)
                if site_steps is None:
                    site_steps = per_site[site.id] = self._site_steps(inputs, site, now)
                command = latest.get(device_id)
                memo = self._memos.get(device_id)
                if memo is not None and memo.holds(device, command, site_steps, now):
                    # nothing this device's decision depends on moved: the same "nothing
                    # to do" as last time, with the same wake-ups
                    memos[device_id] = memo
                    wakes.update(memo.wakes)
                    result.skipped += 1
                    continue
                mine: set[datetime] = set()
                acted = len(changed) + len(retry) + len(moves)
                steps = site_steps.steps(now, end)[:MAX_STEPS]
                self._decide(device, command, steps, now, changed, retry, moves, mine)
                wakes |= mine
                if len(changed) + len(retry) + len(moves) == acted:
                    due = min(mine, default=None)
                    site_due = site_steps.due(now, self.horizon)
                    if site_due is not None and (due is None or site_due < due):
                        due = site_due
                    kept = frozenset(mine)
                    kept = shared.setdefault(kept, kept)
                    memos[device_id] = _Memo(device, command, site_steps, now, due, kept)
            except Exception as exc:  # one device's trouble never stops the fleet's plans
                log.error("device %s: cannot plan, keeping its current plan: %s", device_id, exc)
                memo = self._memos.get(device_id)
                if memo is not None:
                    wakes.update(memo.wakes)  # its wake-ups as last decided stay planned
        self._memos = memos
        self._site_cache = per_site
        gated: Gated | None = None
        if self.gate is not None:
            changed, gated = self.gate.hold(changed, inputs.sites, inputs.campaigns, now)
            wakes |= gated.wakes
            result.held = len(gated.held)
            result.paused = gated.paused
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
        if self.gate is not None and gated is not None and gated.releases:
            self.gate.record(gated, result.new_versions, now)
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
        old = self.plans(command)
        _wakes(wakes, old, now, self.grace)
        live = self.live(device.id)
        if live:
            # its command holds one step: the next change comes from the timeline
            wakes.update(s.at for s in steps[1:2] if s.at > now)
        if old.test:
            # a test flash (controller/flash.py): left alone until it is over, then the
            # real plan goes out again as a new version, above the test's
            held = flash_held(command, now)
            if held is not None:
                wakes.add(held)
            else:
                changed.append((device, command, steps))
            return
        if command.state is CommandState.DRIFTED or device.version_floor >= command.version:
            changed.append((device, command, steps))
            return
        same = same_live(old, steps, now) if live else same_from_now(old.steps, steps, now)
        if not same:
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
        if command.state is CommandState.PENDING:
            # not handed to the broker yet: no device could have answered. The
            # dispatcher is still delivering it; its grace starts when the broker has it
            return
        # the step in force with no apply report within the grace period: UNCONFIRMED.
        # The grace runs from the step's instant, or from when the plan reached the broker
        # when that was later (a plan issued or delivered after its first step: catch-up).
        graced = max(due.at, old.issued_at, command.published_at or old.issued_at) + self.grace
        if now < graced:
            wakes.add(graced)
            return
        if step_confirmed(device, command, due):
            return
        if self.caught_up is not None and now < graced + self.grace:
            stored_to = self.caught_up()
            if stored_to is None or stored_to < graced:
                # what came in before the grace ran out is not all stored yet: ask again
                # shortly (for at most one more grace: a stuck intake cannot hide it)
                wakes.add(min(now + CATCH_UP, graced + self.grace))
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
        payloads: dict[tuple[int, bool, tuple[PlanStep, ...]], str] = {}
        for device, command, steps in changed:
            version = max(command.version if command else 0, device.version_floor) + 1
            live = self.live(device.id)
            # devices alike (a campaign's sites in one city) get the same body: built and
            # encoded once, not once per device
            key = (version, live, tuple(steps))
            payload = payloads.get(key)
            if payload is None:
                plan = Plan(version=version, issued_at=now, steps=steps)
                if live:
                    plan = live_command(steps, now, version) or plan
                payload = payloads[key] = encode(plan).decode()
            versions.append(
                NewVersion(
                    device.id,
                    version,
                    payload,
                    now,
                    (command.id, command.state) if command is not None else None,
                )
            )
        stored = self.stores.outbox.add_versions(versions)
        for c in stored:
            stored_plan = self.plans(c)
            _wakes(wakes, stored_plan, now, self.grace)
            if stored_plan.not_after is not None and stored_plan.not_after > now:
                wakes.add(stored_plan.not_after)  # a live command's next change
            result.new_versions[c.device_id] = c.version
            log.debug("device %s: plan version %d", c.device_id, c.version)
        result.conflicts += len(versions) - len(stored)
        if stored:
            shown = ", ".join(f"{c.device_id} v{c.version}" for c in stored[:LOGGED])
            more = f" and {len(stored) - LOGGED} more" if len(stored) > LOGGED else ""
            log.info("new plan versions for %d devices: %s%s", len(stored), shown, more)

    def _site_steps(self, inputs: _Inputs, site: Site, now: datetime) -> SiteSteps:
        zone = inputs.zones[site.city]
        # Look past the horizon, so a window that straddles it keeps its true shape;
        # SiteSteps.steps then keeps only the changes up to the horizon.
        end = now + self.horizon
        segments = self.timelines.segments(
            inputs.campaigns, inputs.revision, site, zone, now - LOOKAROUND, end + LOOKAROUND
        )
        known = self._site_cache.get(site.id)
        if known is not None and known.segments is segments:
            return known
        site_steps = self._site_cache[site.id] = SiteSteps(segments)
        if len(site_steps.ats) > MAX_STEPS and len(site_steps.steps(now, end)) > MAX_STEPS:
            log.warning(
                "site %s: more than %d steps in the horizon; plans keep the first %d",
                site.id,
                MAX_STEPS,
                MAX_STEPS,
            )
        return site_steps
