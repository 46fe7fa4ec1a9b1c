"""The coordinators' preview: resolved segments per site, as a table, JSON or iCalendar."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from icalendar import Calendar, Event, vGeo

from schedules.model import Campaign, SiteCatalog, display_name
from schedules.resolve import Segment, timeline


@dataclass(frozen=True)
class CitySegment:
    segment: Segment
    city: str


def local_day_range(
    first: date, last: date, catalog: SiteCatalog, site_id: str
) -> tuple[datetime, datetime]:
    site = next(s for s in catalog.sites if s.id == site_id)
    zone = catalog.city_of(site).zone
    start = datetime.combine(first, time(), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)
    return start, end


def preview(
    campaigns: Sequence[Campaign],
    catalog: SiteCatalog,
    first: date,
    last: date,
    city: str | None = None,
) -> list[CitySegment]:
    """Segments of every site (of `city`, if given) from `first` to `last`, local dates,
    sorted by start then site. Campaigns are ordered oldest first."""
    out: list[CitySegment] = []
    for site in catalog.sites:
        if city is not None and site.city != city:
            continue
        start, end = local_day_range(first, last, catalog, site.id)
        zone = catalog.city_of(site).zone
        out.extend(
            CitySegment(seg, site.city) for seg in timeline(campaigns, site, zone, start, end)
        )
    return sorted(out, key=lambda cs: (cs.segment.start, cs.segment.site))


def _utc(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_json(segments: Sequence[CitySegment]) -> str:
    rows = [
        {
            "site": cs.segment.site,
            "city": cs.city,
            "campaign": cs.segment.campaign,
            "start": _utc(cs.segment.start),
            "end": _utc(cs.segment.end),
            "state": {
                "on": cs.segment.light.on,
                "color": cs.segment.light.color,
                "level": cs.segment.light.level,
            },
        }
        for cs in segments
    ]
    return json.dumps(rows, indent=2)


def render_table(segments: Sequence[CitySegment], catalog: SiteCatalog) -> str:
    """A readable timeline per city, in local time with the zone shown."""
    lines: list[str] = []
    for city in sorted(catalog.cities, key=lambda c: display_name(c.name)):
        rows = [cs.segment for cs in segments if cs.city == city.id]
        if not rows:
            continue
        lines.append(f"{display_name(city.name)} ({city.timezone})")
        for seg in rows:
            a = seg.start.astimezone(city.zone)
            b = seg.end.astimezone(city.zone)
            end_fmt = "%H:%M:%S %Z" if b.date() == a.date() else "%a %Y-%m-%d %H:%M:%S %Z"
            look = f"{seg.light.color} {seg.light.level}%" if seg.light.on else "off"
            lines.append(
                f"  {a:%a %Y-%m-%d %H:%M:%S %Z} -> {b.strftime(end_fmt)}  "
                f"{seg.site:28} {seg.campaign:24} {look}"
            )
        lines.append("")
    return "\n".join(lines) if lines else "no windows in this range\n"


def render_ics(
    segments: Sequence[CitySegment], catalog: SiteCatalog, campaigns: Sequence[Campaign]
) -> bytes:
    """One VEVENT per resolved window at each site."""
    titles = {c.id: display_name(c.title) for c in campaigns}
    sites = {s.id: s for s in catalog.sites}
    cal = Calendar()
    cal.add("prodid", "-//Illuminate//schedules preview//EN")
    cal.add("version", "2.0")
    for cs in segments:
        seg = cs.segment
        site = sites[seg.site]
        city = next(c for c in catalog.cities if c.id == site.city)
        event = Event()
        event.add("uid", f"{seg.campaign}.{seg.site}.{seg.start:%Y%m%dT%H%M%SZ}@illuminate")
        event.add("dtstamp", seg.start)
        event.add("dtstart", seg.start)
        event.add("dtend", seg.end)
        event.add("summary", f"{titles.get(seg.campaign, seg.campaign)}: {display_name(site.name)}")
        event.add("location", f"{display_name(site.name)}, {display_name(city.name)}")
        event.add("geo", vGeo((site.lat, site.lon)))
        look = f"{seg.light.color} at {seg.light.level}%" if seg.light.on else "off"
        event.add("description", f"Campaign {seg.campaign}: {look}")
        cal.add_component(event)
    return bytes(cal.to_ical())
