"""Occurrences of campaign windows in a time range. The time rules live here, once.

- `{at}` is a wall time in the site's zone. A wall time that does not exist (the spring
  gap) moves forward by the gap's length; an ambiguous one (the autumn overlap) takes
  its first occurrence. So a window occurs at most once per date and never fires twice.
- `{sun}` is the solar event of the window's date (see `schedules.solar`), plus the
  offset, then clamped to `earliest`/`latest` (wall times on that date).
- An end at or before its start falls on the next local day.
- When a solar event does not happen on a date (polar day or night), the window's
  `polar` policy decides: `skip`, or `{fallback: HH:MM}`. Without one, expansion stops
  with `PolarPolicyMissing`, naming the site and the date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from schedules.budget import Budget
from schedules.model import Campaign, Light, Site, TimeSpec, Window
from schedules.solar import SunEvent, sun_event

SPAN_DAYS = 2
"""A window starts at most this many days before anything it covers (start to end < 2 d)."""


LOCAL_CACHE = 1 << 16
"""Wall times converted: the same few times of day, per zone and day, for every site."""
SUN_CACHE = 1 << 18
"""Sun events kept: a day's events for 10,000 sites over a week of expansions (about
270 bytes each), so a change of campaigns re-expands timelines without computing the Sun
again."""


class PolarPolicyMissing(ValueError):
    """A solar event needed by a window does not happen, and the window has no policy."""


@lru_cache(maxsize=LOCAL_CACHE)
def local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The instant of wall time `at` on `day` in `zone`, by the DST rules above.

    zoneinfo with fold=0 does exactly that: a time in the gap takes the offset from
    before the change (so 02:30 in a one-hour spring gap becomes 03:30), and a time in
    the overlap takes the first, daylight-saving, occurrence.
    """
    return datetime.combine(day, at, tzinfo=zone).replace(fold=0).astimezone(UTC)


@lru_cache(maxsize=SUN_CACHE)
def _sun(event: SunEvent, day: date, lat: float, lon: float, zone: ZoneInfo) -> datetime | None:
    return sun_event(event, day, lat, lon, zone)


class _NoEvent(Exception):
    pass


def spec_instant(spec: TimeSpec, day: date, site: Site, zone: ZoneInfo) -> datetime:
    """The instant a time spec names on local date `day` at `site`; _NoEvent if none."""
    if spec.at is not None:
        return local_to_utc(day, spec.at, zone)
    assert spec.sun is not None
    event = _sun(spec.sun, day, site.lat, site.lon, zone)
    if event is None:
        raise _NoEvent(spec.sun)
    instant = event + spec.offset
    if spec.earliest is not None:
        instant = max(instant, local_to_utc(day, spec.earliest, zone))
    if spec.latest is not None:
        instant = min(instant, local_to_utc(day, spec.latest, zone))
    return instant


def _policy_instant(
    window: Window, spec: TimeSpec, day: date, site: Site, zone: ZoneInfo, campaign: str
) -> datetime | None:
    try:
        return spec_instant(spec, day, site, zone)
    except _NoEvent:
        if window.polar is not None and window.polar.fallback is not None:
            return local_to_utc(day, window.polar.fallback, zone)
        if window.polar is not None:
            return None
        raise PolarPolicyMissing(
            f"campaign {campaign}: there is no {spec.sun} at site {site.id} on "
            f"{day.isoformat()}; add to the window 'polar: skip' or "
            "'polar: {fallback: \"HH:MM\"}'"
        ) from None


def window_instants(
    window: Window, day: date, site: Site, zone: ZoneInfo, campaign: str = "?"
) -> tuple[datetime, datetime] | None:
    """Start and end of the window's occurrence that starts on local date `day`."""
    start = _policy_instant(window, window.start, day, site, zone, campaign)
    if start is None:
        return None
    end = _policy_instant(window, window.end, day, site, zone, campaign)
    if end is None:
        return None
    # "at or before its start" compares wall times, before any DST gap moved them
    if _wall(window.end, day, end, zone) <= _wall(window.start, day, start, zone):
        end = _policy_instant(window, window.end, day + timedelta(days=1), site, zone, campaign)
        if end is None:
            return None
    if end <= start:
        return None
    return start, end


def _wall(spec: TimeSpec, day: date, instant: datetime, zone: ZoneInfo) -> datetime:
    """The local wall time a spec names: as written for `at`, else the instant's."""
    if spec.at is not None:
        return datetime.combine(day, spec.at)
    return instant.astimezone(zone).replace(tzinfo=None)


@dataclass(frozen=True)
class Occurrence:
    campaign: str
    site: str
    window: int
    start: datetime
    end: datetime
    light: Light
    rank: tuple[bool, int, int]
    """(override, priority, age rank): the highest wins an overlap."""


def occurrences(
    campaign: Campaign,
    rank: int,
    site: Site,
    zone: ZoneInfo,
    start: datetime,
    end: datetime,
    budget: Budget | None = None,
) -> list[Occurrence]:
    """Occurrences of `campaign` at `site` that overlap [start, end), unclipped.

    `rank` is the campaign's age order (older lower): on equal priority the newer wins.
    `budget`, when given, is spent on every date looked at.
    """
    found: list[Occurrence] = []
    first_day = start.astimezone(zone).date() - timedelta(days=SPAN_DAYS)
    last_day = end.astimezone(zone).date() + timedelta(days=1)  # sunrise-2h starts the eve
    key = (campaign.override, campaign.priority, rank)
    for index, window in enumerate(campaign.windows):
        if not window.targets.matches(site):
            continue
        for day in window.days(first_day, last_day, budget):
            if budget is not None:
                budget.spend()
            instants = window_instants(window, day, site, zone, campaign.id)
            if instants is None:
                continue
            begins, ends = instants
            if ends <= start or begins >= end:
                continue
            found.append(Occurrence(campaign.id, site.id, index, begins, ends, campaign.light, key))
    return found
