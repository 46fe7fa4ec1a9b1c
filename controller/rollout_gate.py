"""Where the reconciler meets the staged rollouts: `RolloutGate.hold` takes the new
versions a reconcile run wants to write and keeps back those a running (or paused)
rollout does not let through yet; `record` stores which devices each rollout sent.

Before it decides, each running rollout's pause rule is checked on the results of the
versions it sent (`controller/rollout.py`); a rollout with nothing left to hold, whose
campaign is stored as the rollout changed it, is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from controller.plansteps import same_from_now
from controller.rollout import (
    Candidate,
    Release,
    RolloutState,
    gate,
    over_threshold,
    tally,
    wave_of,
)
from controller.store.base import Command, DeviceView, OutboxStore
from controller.store.rollouts import Rollout, RolloutStore
from devices.protocol import Plan, PlanStep
from schedules.model import Campaign, Site

log = logging.getLogger(__name__)

T = TypeVar("T", bound=tuple[DeviceView, Command | None, list[PlanStep]])


@dataclass
class Gated:
    """What one run's gate decided."""

    held: set[str] = field(default_factory=set)
    """Devices kept on their current version for now."""
    releases: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Devices let through: rollout id and wave."""
    paused: list[int] = field(default_factory=list)
    """Rollouts paused by their pause rule in this run."""
    wakes: set[datetime] = field(default_factory=set)
    """When the gates may let more through."""


class RolloutGate:
    def __init__(
        self, rollouts: RolloutStore, outbox: OutboxStore, plans: Callable[[Command], Plan]
    ) -> None:
        self.rollouts = rollouts
        self.outbox = outbox
        self.plans = plans

    def hold(
        self,
        changed: Sequence[T],
        sites: Mapping[str, Site],
        campaigns: Sequence[Campaign],
        now: datetime,
    ) -> tuple[list[T], Gated]:
        """The new versions (device, its newest command, its new steps) to write now,
        and what was decided."""
        out = Gated()
        active = self.rollouts.active()
        if not active:
            return list(changed), out
        for rollout in active:
            sent = self.rollouts.releases(rollout.id)
            if rollout.state is RolloutState.RUNNING:
                paused = self._pause_if_due(rollout, sent, now)
                if paused is not None:
                    rollout = paused
                    out.paused.append(rollout.id)
            candidates = self._candidates(rollout, sent, changed, sites, out, now)
            decision = gate(rollout.config, rollout.state, sent, candidates, now)
            for c in decision.release:
                out.releases[c.device_id] = (
                    rollout.id,
                    wave_of(rollout.config, c.site_id, c.city_id),
                )
            out.held.update(c.device_id for c in decision.held)
            if decision.wake_at is not None:
                out.wakes.add(decision.wake_at)
            if rollout.state is RolloutState.RUNNING and not decision.held:
                self._done_if_stored(rollout, campaigns, len(sent) + len(decision.release), now)
        return [item for item in changed if item[0].id not in out.held], out

    def record(self, gated: Gated, new_versions: Mapping[str, int], now: datetime) -> None:
        """Store the devices each rollout sent (those whose new version was stored)."""
        per_rollout: dict[int, list[Release]] = {}
        for device_id, (rollout_id, wave) in gated.releases.items():
            version = new_versions.get(device_id)
            if version is not None:
                per_rollout.setdefault(rollout_id, []).append(
                    Release(device_id, version, now, wave)
                )
        for rollout_id, sent in per_rollout.items():
            self.rollouts.add_releases(rollout_id, sent)

    def _candidates(
        self,
        rollout: Rollout,
        sent: list[Release],
        changed: Sequence[T],
        sites: Mapping[str, Site],
        out: Gated,
        now: datetime,
    ) -> list[Candidate]:
        covered = set(rollout.sites)
        done = {r.device_id for r in sent}
        found = []
        for device, command, steps in changed:
            if command is None or device.site_id not in covered or device.id in done:
                continue  # a device with no plan yet gets one at once
            if device.id in out.held or device.id in out.releases:
                continue  # another rollout decided it already
            if same_from_now(self.plans(command).steps, steps, now):
                continue  # the same plan sent again (drift): not the change
            site = sites[device.site_id]
            found.append(Candidate(device.id, site.id, site.city))
        return found

    def _pause_if_due(self, rollout: Rollout, sent: list[Release], now: datetime) -> Rollout | None:
        counted = [(r.device_id, r.version) for r in sent if r.at >= rollout.counted_from]
        if len(counted) < rollout.config.pause.min_results:
            return None
        found = tally(c.state for c in self.outbox.get(counted).values())
        if not over_threshold(rollout.config.pause, found):
            return None
        reason = (
            f"{found.failures} of {found.results} results failed or were rejected "
            f"({found.percentage():.1f} %, over {rollout.config.pause.threshold_percentage:g} %)"
        )
        moved = self.rollouts.move(
            rollout.id, RolloutState.PAUSED, now, reason, only_from={RolloutState.RUNNING}
        )
        if moved is not None:
            log.warning(
                "rollout %d of campaign %s paused: %s", rollout.id, rollout.campaign_id, reason
            )
        return moved

    def _done_if_stored(
        self, rollout: Rollout, campaigns: Sequence[Campaign], sent: int, now: datetime
    ) -> None:
        """Done, once the campaign is stored as the rollout changed it (not before: the
        rollout is stored first, and a run in between has nothing to hold yet)."""
        stored = next((c for c in campaigns if c.id == rollout.campaign_id), None)
        if stored is None or stored.model_dump(mode="json") != rollout.body:
            return
        moved = self.rollouts.move(
            rollout.id,
            RolloutState.DONE,
            now,
            f"every device was sent the change ({sent})",
            only_from={RolloutState.RUNNING},
        )
        if moved is not None:
            log.info("rollout %d of campaign %s: done", rollout.id, rollout.campaign_id)
