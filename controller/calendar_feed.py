"""A campaign's windows as an iCalendar feed, for the press and the cities' websites.

One VEVENT per window of the campaign at each monument, in UTC: the site's resolved
timeline (`schedules.resolve.timeline`, every campaign by priority), so a window that a
higher-priority campaign takes over is left out, and one that it cuts short ends where
it does. The feed covers the recent past and the coming weeks (`RECENT`, `AHEAD`).

Only public fields go in: the campaign's title and reason, the monument's and city's
names, the monument's place, and the colour. No device, topic or technician.

The bytes depend only on their inputs (no clock reading): `DTSTAMP` and
`LAST-MODIFIED` are when the campaign was last changed, so the same campaign gives the
same document, and the same ETag, until it or the day changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from icalendar import Calendar, Event, vGeo

from schedules.model import Campaign, City, Site, SiteCatalog, display_name
from schedules.resolve import LOOKAROUND, Segment, timeline

RECENT = timedelta(days=7)
AHEAD = timedelta(days=60)
MAX_EVENTS = 5000
"""At most this many windows in one feed (the earliest ones are kept)."""
PRODID = "-//Illuminate//public campaign calendar//EN"
_UIDS = uuid.UUID("6f1f4a52-5d1c-4b5e-9a53-0a1b7f3c2e10")


@dataclass(frozen=True)
class CalendarWindow:
    segment: Segment
    site: Site
    city: City


def feed_range(now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the feed at `now`: whole UTC days, so it moves once a day."""
    day = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
    return day - RECENT, day + AHEAD + timedelta(days=1)


def campaign_windows(
    campaign_id: str,
    campaigns: Sequence[Campaign],
    catalog: SiteCatalog,
    start: datetime,
    end: datetime,
    *,
    city: str | None = None,
    max_events: int = MAX_EVENTS,
) -> list[CalendarWindow]:
    """The windows of `campaign_id` that overlap [start, end) at every site (of `city`),
    whole, by start then site."""
    cities = {c.id: c for c in catalog.cities}
    found: list[CalendarWindow] = []
    for site in catalog.sites:
        if city is not None and site.city != city:
            continue
        town = cities[site.city]
        # expanded beyond the range, so a window across its edges is seen whole (its
        # true start and end, and so its UID)
        for seg in timeline(campaigns, site, town.zone, start - LOOKAROUND, end + LOOKAROUND):
            if seg.campaign != campaign_id or seg.end <= start or seg.start >= end:
                continue
            found.append(CalendarWindow(seg, site, town))
    found.sort(key=lambda w: (w.segment.start, w.segment.site))
    return found[:max_events]


def window_uid(campaign_id: str, site_id: str, start: datetime) -> str:
    """Stable for the same campaign, monument and start."""
    key = f"{campaign_id}/{site_id}/{start.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    return f"{uuid.uuid5(_UIDS, key)}@illuminate"


def describe(campaign: Campaign, seg: Segment, lang: str = "en") -> str:
    look = f"Lit in {seg.light.color} at {seg.light.level}%." if seg.light.on else "Lights off."
    reason = f" Cause: {campaign.reason}." if campaign.reason else ""
    title = display_name(campaign.title, lang)
    return f"{title}. {look}{reason}"


def render_calendar(
    campaign: Campaign,
    windows: Sequence[CalendarWindow],
    changed_at: datetime,
    lang: str = "en",
) -> bytes:
    """The iCalendar document (RFC 5545) of these windows of `campaign`."""
    title = display_name(campaign.title, lang)
    stamp = changed_at.astimezone(UTC).replace(microsecond=0)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", f"Illuminate: {title}")
    for window in windows:
        seg = window.segment
        site_name = display_name(window.site.name, lang)
        event = Event()
        event.add("uid", window_uid(campaign.id, seg.site, seg.start))
        event.add("dtstamp", stamp)
        event.add("last-modified", stamp)
        event.add("dtstart", seg.start.astimezone(UTC))
        event.add("dtend", seg.end.astimezone(UTC))
        event.add("summary", f"{title}: {site_name}")
        event.add("location", f"{site_name}, {display_name(window.city.name, lang)}")
        event.add("geo", vGeo((window.site.lat, window.site.lon)))
        event.add("description", describe(campaign, seg, lang))
        event.add("categories", [title])
        event.add("transp", "TRANSPARENT")
        cal.add_component(event)
    return bytes(cal.to_ical())
