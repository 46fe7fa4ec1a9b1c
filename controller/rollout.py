"""Staged rollouts: the state machine, the pause rule and the gate. Pure: no I/O; the
time is always an argument.

A rollout is made when a campaign with a `rollout:` section is changed while one of its
windows is open (`controller/campaigns.py`). While it runs, the reconciler asks `gate`
which of the devices whose plan the change alters may get their new version now; the
others keep the version they have.

States (`ALLOWED` is the whole table):

    RUNNING --pause rule--> PAUSED --resume--> RUNNING
    RUNNING | PAUSED --abort--> ABORTED              (final)
    RUNNING --every device sent--> DONE              (final)
    RUNNING | PAUSED --campaign changed again--> SUPERSEDED (final)

Waves: the canary sites' devices first, then one wave per city (`city_order` first,
then the others by id). A wave starts once every earlier wave is sent and at least
`wave_interval` after the previous wave started; within and across waves, at most
`maximum_per_minute` devices are sent in any 60 seconds.

The pause rule counts the results (APPLIED, FAILED, REJECTED) of the versions sent
since the rollout started or was last resumed: over `threshold_percentage` % of failed
plus rejected, once there are `min_results`, pauses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from controller.lifecycle import CommandState
from schedules.rollout import PauseRule, RolloutConfig

MINUTE = timedelta(minutes=1)
CANARY = "canary"
"""The wave of the canary sites; a city's wave is named `city:<id>`."""


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    ABORTED = "aborted"
    DONE = "done"
    SUPERSEDED = "superseded"


R = RolloutState
ACTIVE = frozenset({R.RUNNING, R.PAUSED})
FINAL = frozenset({R.ABORTED, R.DONE, R.SUPERSEDED})
ALLOWED: dict[RolloutState, frozenset[RolloutState]] = {
    R.RUNNING: frozenset({R.PAUSED, R.ABORTED, R.DONE, R.SUPERSEDED}),
    R.PAUSED: frozenset({R.RUNNING, R.ABORTED, R.SUPERSEDED}),
    R.ABORTED: frozenset(),
    R.DONE: frozenset(),
    R.SUPERSEDED: frozenset(),
}
SOURCES: dict[RolloutState, frozenset[RolloutState]] = {
    target: frozenset(s for s, targets in ALLOWED.items() if target in targets)
    for target in RolloutState
}
"""For each target, the states it may be reached from."""

SUCCEEDED = frozenset({CommandState.APPLIED})
FAILURES = frozenset({CommandState.FAILED, CommandState.REJECTED})
RESULTS = SUCCEEDED | FAILURES


class IllegalRolloutMove(ValueError):
    pass


def can_move(current: RolloutState, target: RolloutState) -> bool:
    return target in ALLOWED[current]


def check_move(current: RolloutState, target: RolloutState) -> None:
    if not can_move(current, target):
        raise IllegalRolloutMove(f"a {current.value} rollout cannot become {target.value}")


@dataclass(frozen=True)
class Candidate:
    """A device whose plan the change alters and which was not sent it yet."""

    device_id: str
    site_id: str
    city_id: str


@dataclass(frozen=True)
class Release:
    """A device sent the change: its new plan version, when, and in which wave."""

    device_id: str
    version: int
    at: datetime
    wave: str


def wave_of(config: RolloutConfig, site_id: str, city_id: str) -> str:
    return CANARY if site_id in config.canary_sites else f"city:{city_id}"


def wave_order(config: RolloutConfig, waves: Iterable[str]) -> list[str]:
    """Canaries, then the cities of `city_order`, then the other cities by id."""
    present = set(waves)
    first = [CANARY] + [f"city:{c}" for c in config.city_order]
    ordered = [w for w in first if w in present]
    return ordered + sorted(present - set(ordered))


@dataclass(frozen=True)
class Tally:
    results: int
    failures: int

    def percentage(self) -> float:
        return 100.0 * self.failures / self.results if self.results else 0.0


def tally(states: Iterable[CommandState]) -> Tally:
    results = failures = 0
    for state in states:
        if state in RESULTS:
            results += 1
            failures += state in FAILURES
    return Tally(results, failures)


def over_threshold(rule: PauseRule, counted: Tally) -> bool:
    """The pause rule: at least `min_results` results, and failed plus rejected over
    `threshold_percentage` % of them."""
    return (
        counted.results >= rule.min_results
        and counted.failures * 100 > rule.threshold_percentage * counted.results
    )


@dataclass(frozen=True)
class GateDecision:
    release: tuple[Candidate, ...]
    """Send these now (in wave order)."""
    held: tuple[Candidate, ...]
    """Keep their current version for now."""
    wake_at: datetime | None
    """When the gate may let more through without anything else changing."""


def gate(
    config: RolloutConfig,
    state: RolloutState,
    released: Sequence[Release],
    candidates: Sequence[Candidate],
    now: datetime,
) -> GateDecision:
    """Which candidates may get the new version at `now`, given what was sent so far."""
    if state is not RolloutState.RUNNING or not candidates:
        return GateDecision((), tuple(candidates), None)
    recent = sorted(r.at for r in released if now - MINUTE < r.at <= now)
    budget = config.maximum_per_minute - len(recent)
    refill = (recent[0] if recent else now) + MINUTE
    started: dict[str, datetime] = {}
    for r in released:
        if r.wave not in started or r.at < started[r.wave]:
            started[r.wave] = r.at
    waiting: dict[str, list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: c.device_id):
        waiting.setdefault(wave_of(config, c.site_id, c.city_id), []).append(c)
    chosen: list[Candidate] = []
    wake: datetime | None = None
    previous_start: datetime | None = None
    for wave in wave_order(config, set(waiting) | set(started)):
        pending = waiting.get(wave, [])
        start = started.get(wave)
        if start is None:
            if not pending:
                continue
            opens = now if previous_start is None else previous_start + config.wave_interval
            if now < opens:
                wake = opens
                break
            start = now
        if pending:
            if budget <= 0:
                wake = refill
                break
            take = pending[:budget]
            chosen.extend(take)
            budget -= len(take)
            if len(take) < len(pending):
                wake = refill
                break
        previous_start = start
    sent = {c.device_id for c in chosen}
    held = tuple(c for c in candidates if c.device_id not in sent)
    return GateDecision(tuple(chosen), held, wake if held else None)
