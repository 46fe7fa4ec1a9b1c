"""Priorities between overlapping windows: per-site segments and `desired_state`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from schedules.expand import Occurrence, occurrences
from schedules.model import Campaign, Light, Site

LOOKAROUND = timedelta(days=2)
"""Longer than any window, so the segment around an instant is seen whole."""


@dataclass(frozen=True)
class Segment:
    site: str
    campaign: str
    start: datetime
    end: datetime
    light: Light

    def contains(self, t: datetime) -> bool:
        return self.start <= t < self.end


def _winner(active: list[Occurrence]) -> Occurrence:
    return max(active, key=lambda o: o.rank)


def timeline(
    campaigns: Sequence[Campaign],
    site: Site,
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
) -> list[Segment]:
    """The resolved segments of `site` inside [start, end), sorted, never overlapping.

    `campaigns` are ordered oldest first: on equal priority the newer campaign wins.
    Time outside every segment is off.
    """
    occs = [
        occ
        for rank, campaign in enumerate(campaigns)
        for occ in occurrences(campaign, rank, site, zone, start, end)
    ]
    cuts = sorted({start, end} | {t for o in occs for t in (o.start, o.end) if start < t < end})
    segments: list[Segment] = []
    for begins, ends in pairwise(cuts):
        active = [o for o in occs if o.start <= begins < o.end]
        if not active:
            continue
        win = _winner(active)
        last = segments[-1] if segments else None
        if last and last.end == begins and (last.campaign, last.light) == (win.campaign, win.light):
            segments[-1] = Segment(site.id, win.campaign, last.start, ends, win.light)
        else:
            segments.append(Segment(site.id, win.campaign, begins, ends, win.light))
    return segments


def desired_state(
    campaigns: Sequence[Campaign], site: Site, zone: ZoneInfo, t: datetime
) -> Segment | None:
    """The segment in force at `t`, or None when the site should be off."""
    for segment in timeline(campaigns, site, zone, t - LOOKAROUND, t + LOOKAROUND):
        if segment.contains(t):
            return segment
    return None
