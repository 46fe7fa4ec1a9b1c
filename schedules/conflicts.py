"""What a coordinator should look at before applying: the conflict report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import combinations
from zoneinfo import ZoneInfo

from schedules.budget import Budget
from schedules.expand import Occurrence, occurrences
from schedules.model import Campaign, Site, SiteCatalog
from schedules.solar import THRESHOLDS, SunEvent

MIN_WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class Conflict:
    kind: str
    """equal_priority_overlap | no_targets | unknown_target | no_sites | too_short"""
    message: str
    campaign: str
    window: int | None = None
    site: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def find_conflicts(
    campaigns: Sequence[Campaign], catalog: SiteCatalog, start: datetime, end: datetime
) -> list[Conflict]:
    found: list[Conflict] = []
    city_ids = {c.id for c in catalog.cities}
    site_ids = {s.id for s in catalog.sites}
    tags = {t for s in catalog.sites for t in s.tags}
    for campaign in campaigns:
        for index, window in enumerate(campaign.windows):
            where = f"{campaign.id} windows[{index}]"
            t = window.targets
            if t.empty:
                found.append(Conflict("no_targets", f"{where}: no targets", campaign.id, index))
                continue
            for kind, names, known in (
                ("city", t.cities, city_ids),
                ("site", t.sites, site_ids),
                ("tag", t.tags, tags),
            ):
                for name in names:
                    if name not in known:
                        found.append(
                            Conflict(
                                "unknown_target",
                                f"{where}: targets name an unknown {kind} {name!r}",
                                campaign.id,
                                index,
                            )
                        )
            if not any(t.matches(site) for site in catalog.sites):
                found.append(
                    Conflict("no_sites", f"{where}: targets match no site", campaign.id, index)
                )
    per_site: dict[str, list[Occurrence]] = {}
    for rank, campaign in enumerate(campaigns):
        for site in catalog.sites:
            zone = catalog.city_of(site).zone
            for occ in occurrences(campaign, rank, site, zone, start, end):
                per_site.setdefault(site.id, []).append(occ)
                if occ.end - occ.start < MIN_WINDOW:
                    found.append(
                        Conflict(
                            "too_short",
                            f"{campaign.id} windows[{occ.window}] at {site.id} lasts "
                            f"{(occ.end - occ.start).total_seconds():.0f} s "
                            f"from {occ.start.isoformat()}",
                            campaign.id,
                            occ.window,
                            site.id,
                            occ.start,
                            occ.end,
                        )
                    )
    for site_id, occs in sorted(per_site.items()):
        for a, b in combinations(sorted(occs, key=lambda o: o.start), 2):
            same_level = a.rank[:2] == b.rank[:2]
            if a.campaign != b.campaign and same_level and a.start < b.end and b.start < a.end:
                found.append(
                    Conflict(
                        "equal_priority_overlap",
                        f"{a.campaign} and {b.campaign} overlap at {site_id} with equal "
                        f"priority {a.rank[1]} from {max(a.start, b.start).isoformat()}; "
                        "the newer campaign wins",
                        b.campaign,
                        b.window,
                        site_id,
                        max(a.start, b.start),
                        min(a.end, b.end),
                    )
                )
    return found


def check_campaign(
    campaign: Campaign,
    catalog: SiteCatalog,
    start: datetime,
    end: datetime,
    budget: Budget | None = None,
) -> None:
    """Raise PolarPolicyMissing when some occurrence in [start, end) needs a policy.

    Only windows with a solar time and no polar policy can need one, and only at sites
    where their event may fail to happen (see `event_is_certain`).
    """
    events = {
        spec.sun
        for window in campaign.windows
        if window.polar is None
        for spec in (window.start, window.end)
        if spec.sun is not None
    }
    if not events:
        return
    for site in catalog.sites:
        zone = catalog.city_of(site).zone
        if all(event_is_certain(event, site, zone, start.year) for event in events):
            continue
        occurrences(campaign, 0, site, zone, start, end, budget)


SAFE_LATITUDE = 55.0
"""Below this latitude (less the event's depth below the horizon, past the sunset's) the
Sun crosses every threshold twice a day, with hours to spare around local noon."""
SAFE_CLOCK_SKEW = timedelta(hours=2, minutes=30)
"""How far the zone's clock may run from the site's mean solar time for that to hold."""


def event_is_certain(event: SunEvent, site: Site, zone: ZoneInfo, year: int) -> bool:
    """Does `event` happen on every date of `year` at `site`, on the date it is keyed to?

    A conservative test: True only well inside the latitudes where it always does, and
    when the zone's clock keeps within `SAFE_CLOCK_SKEW` of the site's solar time (so an
    evening event never falls before local noon, nor a morning one before midnight).
    """
    depth = abs(THRESHOLDS[event]) - abs(THRESHOLDS[SunEvent.SUNSET])
    if abs(site.lat) >= SAFE_LATITUDE - depth:
        return False
    solar = timedelta(hours=site.lon / 15)
    for month in (1, 7):
        offset = datetime(year, month, 1, 12, tzinfo=zone).utcoffset() or timedelta(0)
        if abs(offset - solar) > SAFE_CLOCK_SKEW:
            return False
    return True
