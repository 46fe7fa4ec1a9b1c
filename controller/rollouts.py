"""What staff do with a staged rollout, whichever door they use (API or CLI): read its
progress, resume it, abort it. Each action checks the state machine
(`controller/rollout.py`) and tells why it refuses.

Abort: the campaign is put back as it was before the change (the rollout keeps that
version). So the devices not yet sent never get the change: their plan is already the
one the restored campaign asks for. The devices already sent get a new plan version
with the campaign as it was before (versions only grow), as for any campaign change.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from controller.rollout import ACTIVE, RESULTS, RolloutState, Tally, tally
from controller.store.base import Stores
from controller.store.rollouts import Rollout, RolloutStore
from schedules.model import Campaign


class RolloutRefused(ValueError):
    """The action cannot be taken. `missing`: there is no such rollout."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class Progress:
    rollout: Rollout
    sent: int
    waves: dict[str, int]
    """Devices sent, per wave, in the order they were sent."""
    results: dict[str, int]
    """Of the versions sent: how many are applied, failed, rejected (and still open)."""
    counted: Tally
    """What the pause rule counts now (results since the start or the last resume)."""


def _store(stores: Stores) -> RolloutStore:
    if stores.rollouts is None:
        raise RolloutRefused("these stores keep no rollouts")
    return stores.rollouts


def find(stores: Stores, rollout_id: int) -> Rollout:
    rollout = _store(stores).get(rollout_id)
    if rollout is None:
        raise RolloutRefused(f"no rollout {rollout_id}", missing=True)
    return rollout


def progress(stores: Stores, rollout: Rollout) -> Progress:
    sent = _store(stores).releases(rollout.id)
    commands = stores.outbox.get([(r.device_id, r.version) for r in sent])
    states = {
        r.device_id: commands[(r.device_id, r.version)].state
        for r in sent
        if (r.device_id, r.version) in commands
    }
    waves: dict[str, int] = {}
    for r in sent:
        waves[r.wave] = waves.get(r.wave, 0) + 1
    counts = Counter(s.value if s in RESULTS else "open" for s in states.values())
    results = {key: counts.get(key, 0) for key in ("applied", "failed", "rejected", "open")}
    counted = tally(
        states[r.device_id] for r in sent if r.at >= rollout.counted_from and r.device_id in states
    )
    return Progress(rollout, len(sent), waves, results, counted)


def resume(stores: Stores, rollout_id: int, now: datetime) -> Rollout:
    """PAUSED -> RUNNING; the pause rule counts afresh from `now`."""
    rollout = find(stores, rollout_id)
    moved = _store(stores).move(
        rollout_id, RolloutState.RUNNING, now, "resumed", only_from={RolloutState.PAUSED}
    )
    if moved is None:
        raise RolloutRefused(f"rollout {rollout_id} is {_now_state(stores, rollout)}, not paused")
    return moved


def abort(stores: Stores, rollout_id: int, now: datetime) -> tuple[Rollout, bool]:
    """RUNNING or PAUSED -> ABORTED, with the campaign put back as it was before the
    change; True when it was put back (False: the campaign changed since, and is kept)."""
    rollout = find(stores, rollout_id)
    if rollout.state not in ACTIVE:
        raise RolloutRefused(f"rollout {rollout_id} is {rollout.state.value}: nothing to abort")
    record = stores.campaigns.record(rollout.campaign_id)
    restore = record is not None and record.body == rollout.body
    if restore:
        # first the campaign, then the state: until the state moves, the rollout still
        # holds back the devices it has not sent
        stores.campaigns.put(Campaign.model_validate(rollout.previous), now)
    moved = _store(stores).move(rollout_id, RolloutState.ABORTED, now, "aborted")
    if moved is None:
        raise RolloutRefused(f"rollout {rollout_id} is {_now_state(stores, rollout)}: not aborted")
    return moved, restore


def _now_state(stores: Stores, rollout: Rollout) -> str:
    found = _store(stores).get(rollout.id)
    return (found or rollout).state.value
