"""A site's timeline as plan steps.

`SiteSteps` turns one expansion of a site's timeline (its segments) into the instants
where the light changes, once; the steps a device gets at a given moment are then a
slice of those (two bisections), whatever the moment. `due` says until when that slice
stays the same, so the reconciler can skip a site whose inputs did not move.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from devices.protocol import LightState as WireLight
from devices.protocol import PlanStep
from schedules.model import Light
from schedules.resolve import Segment

OFF = WireLight(on=False)


@lru_cache(maxsize=4096)
def _lit(color: str, level: int) -> WireLight:
    return WireLight(on=True, color=color, level=level)


def wire_light(light: Light | None) -> WireLight:
    if light is None or not light.on:
        return OFF
    return _lit(light.color, light.level)


def _step(at: datetime, state: WireLight) -> PlanStep:
    # `at` is UTC and `state` a validated light: nothing left to check
    return PlanStep.model_construct(at=at, state=state)


class SiteSteps:
    """The changes of one expansion of a site's timeline, in time order."""

    __slots__ = ("ats", "lights", "segments")

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.segments = segments
        changes: list[tuple[datetime, WireLight]] = []
        for seg in segments:
            start, light = seg.start.astimezone(UTC), wire_light(seg.light)
            if changes and changes[-1][0] == start:
                changes[-1] = (start, light)
            else:
                changes.append((start, light))
            changes.append((seg.end.astimezone(UTC), OFF))
        changes.sort(key=lambda c: c[0])  # stable: already in order for a timeline
        self.ats = [at for at, _ in changes]
        self.lights = [light for _, light in changes]

    def steps(self, now: datetime, horizon_end: datetime) -> list[PlanStep]:
        """The step in force at `now`, then every change up to `horizon_end`.

        The step in force starts at its segment's true start (inside a window), at the
        end of the last window (outside one), or at `now` when no window is in sight.
        """
        first = bisect_right(self.ats, now)
        last = bisect_right(self.ats, horizon_end)
        if first:
            steps = [_step(self.ats[first - 1], self.lights[first - 1])]
        else:
            steps = [_step(now.astimezone(UTC), OFF)]
        for i in range(first, max(first, last)):
            if self.lights[i] != steps[-1].state:
                steps.append(_step(self.ats[i], self.lights[i]))
        return steps

    def due(self, now: datetime, horizon: timedelta) -> datetime | None:
        """The first instant after `now` at which `steps(t, t + horizon)` may differ
        from `steps(now, now + horizon)` (other than a first step stamped `t`): the next
        change, or the next change to come within the horizon."""
        first = bisect_right(self.ats, now)
        enter = bisect_right(self.ats, now + horizon)
        candidates = []
        if first < len(self.ats):
            candidates.append(self.ats[first])
        if enter < len(self.ats):
            candidates.append(self.ats[enter] - horizon)
        return min(candidates) if candidates else None


def plan_steps(segments: Sequence[Segment], now: datetime, horizon_end: datetime) -> list[PlanStep]:
    """Steps for one device: the step in force now, then every change up to the horizon."""
    return SiteSteps(segments).steps(now, horizon_end)


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
