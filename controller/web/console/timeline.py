"""What the console shows coordinators about a city's coming days, from the pure domain:

- `city_days`: each local day of a range, with the resolved segments of every site of
  the city (`schedules.preview.preview`), in local time, and whether the clocks change
  that day (a DST day: the zone's offset at its end differs from its start's);
- `city_conflicts`: the conflict report (`schedules.conflicts.find_conflicts`) for the
  city's sites over the range: overlapping windows of equal priority, windows without
  sites, windows too short;
- `public_at`: the public state each site of the city would have at an instant T, by
  the public view's own rules (`controller.public.site_runs` and `site_state`), as if
  every device confirmed its window: `lit` in the campaign's colour, `scheduled`, `off`.

No I/O: the caller passes the campaigns (oldest first) and the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from controller.public import PublicState, site_runs, site_state
from schedules.conflicts import Conflict, find_conflicts
from schedules.model import Campaign, City, Site, SiteCatalog, display_name
from schedules.preview import preview


@dataclass(frozen=True)
class Row:
    site: str
    site_name: str
    campaign: str
    start: datetime
    """Local (the city's zone)."""
    end: datetime
    on: bool
    color: str
    level: int


@dataclass(frozen=True)
class Day:
    day: date
    offset_start: str
    """The zone's abbreviation at the day's start (CET, CEST, ...)."""
    offset_end: str
    rows: tuple[Row, ...]

    @property
    def dst(self) -> bool:
        return self.offset_start != self.offset_end

    @property
    def clocks(self) -> str:
        """What the clocks do that day, in words ('' on an ordinary day)."""
        if not self.dst:
            return ""
        return f"the clocks change: {self.offset_start} to {self.offset_end}"


def _zone_name(city: City, at: datetime) -> str:
    return at.astimezone(city.zone).tzname() or city.timezone


def city_days(
    campaigns: Sequence[Campaign], catalog: SiteCatalog, city: City, first: date, days: int
) -> list[Day]:
    """Each local day from `first`, `days` of them, with the city's resolved segments."""
    last = first + timedelta(days=days - 1)
    names = {s.id: display_name(s.name) for s in catalog.sites}
    segments = preview(campaigns, catalog, first, last, city=city.id)
    out = []
    for n in range(days):
        day = first + timedelta(days=n)
        start = datetime.combine(day, time(), tzinfo=city.zone)
        end = datetime.combine(day + timedelta(days=1), time(), tzinfo=city.zone)
        rows = tuple(
            Row(
                site=cs.segment.site,
                site_name=names.get(cs.segment.site, cs.segment.site),
                campaign=cs.segment.campaign,
                start=cs.segment.start.astimezone(city.zone),
                end=cs.segment.end.astimezone(city.zone),
                on=cs.segment.light.on,
                color=cs.segment.light.color,
                level=cs.segment.light.level,
            )
            for cs in segments
            if start <= cs.segment.start.astimezone(city.zone) < end
        )
        # the abbreviation just before midnight: a change at 02:00 or 03:00 shows
        late = end.astimezone(UTC) - timedelta(seconds=1)
        out.append(Day(day, _zone_name(city, start), _zone_name(city, late), rows))
    return out


def city_conflicts(
    campaigns: Sequence[Campaign], catalog: SiteCatalog, city: City, first: date, days: int
) -> list[Conflict]:
    """The conflict report over the range, for the city's sites (and windows that reach
    no site at all, which concern every city)."""
    start = datetime.combine(first, time(), tzinfo=city.zone)
    end = datetime.combine(first + timedelta(days=days), time(), tzinfo=city.zone)
    mine = {s.id for s in catalog.sites if s.city == city.id}
    return [
        c
        for c in find_conflicts(campaigns, catalog, start, end)
        if c.site is None or c.site in mine
    ]


@dataclass(frozen=True)
class PublicPreview:
    site: Site
    state: PublicState
    campaign: str | None
    color: str | None
    start: datetime | None
    """The window's bounds, local (None when off)."""
    end: datetime | None


def public_at(
    campaigns: Sequence[Campaign],
    catalog: SiteCatalog,
    city: City,
    at: datetime,
    grace: timedelta,
    upcoming: timedelta,
) -> list[PublicPreview]:
    """The public state of each site of the city at `at`, as if every device confirmed
    its window as soon as it opened."""
    out = []
    lookaround = timedelta(days=2)
    for site in catalog.sites:
        if site.city != city.id:
            continue
        runs = site_runs(campaigns, site, city, at - lookaround, at + upcoming + lookaround)
        state = site_state(runs, (), {}, at, grace, upcoming)
        window = state.window
        shown = state.state
        color = None
        if window is not None and window.contains(at):
            shown, color = PublicState.LIT, window.light.color  # once its devices confirm
        out.append(
            PublicPreview(
                site=site,
                state=shown,
                campaign=window.campaign if window is not None else None,
                color=color,
                start=window.start.astimezone(city.zone) if window is not None else None,
                end=window.end.astimezone(city.zone) if window is not None else None,
            )
        )
    return out
