"""Occurrences of campaign windows in a time range. The DST rules live here, once.

- A local time that does not exist (the spring gap) moves forward by the gap's length.
- An ambiguous local time (the autumn overlap) takes its first occurrence.
- An end at or before its start falls on the next local day.
- Each window occurs at most once per date, so it never fires twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from schedules.model import Campaign, Light, Site, Window


def local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The instant of wall time `at` on `day` in `zone`, by the DST rules above.

    zoneinfo with fold=0 does exactly that: a time in the gap takes the offset from
    before the change (so 02:30 in a one-hour spring gap becomes 03:30), and a time in
    the overlap takes the first, daylight-saving, occurrence.
    """
    return datetime.combine(day, at, tzinfo=zone).replace(fold=0).astimezone(UTC)


@dataclass(frozen=True)
class Occurrence:
    campaign: str
    site: str
    start: datetime
    end: datetime
    light: Light
    priority: int
    rank: int
    """Position of the campaign, older first: on equal priority the higher rank wins."""


def window_instants(window: Window, day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = local_to_utc(day, window.start.at, zone)
    end_day = day if window.end.at > window.start.at else day + timedelta(days=1)
    return start, local_to_utc(end_day, window.end.at, zone)


def occurrences(
    campaign: Campaign,
    rank: int,
    site: Site,
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
) -> list[Occurrence]:
    """Occurrences of `campaign` at `site` that overlap [start, end), unclipped."""
    found: list[Occurrence] = []
    first_day = start.astimezone(zone).date() - timedelta(days=1)
    last_day = end.astimezone(zone).date()
    for window in campaign.windows:
        if not window.targets.matches(site):
            continue
        for day in window.dates:
            if not first_day <= day <= last_day:
                continue
            begins, ends = window_instants(window, day, zone)
            if ends <= begins or ends <= start or begins >= end:
                continue
            found.append(
                Occurrence(
                    campaign.id, site.id, begins, ends, campaign.light, campaign.priority, rank
                )
            )
    return found
