"""What the public page shows, in one language: a pure view model.

Built from public material only:
- the public status document of the language (`controller.public`: its allow-list),
  for every monument's state, colour, confirmation time and window;
- the campaigns' public fields: title, cause, call to action, colour, and the times of
  their windows (never their ids, reasons, priorities or rollouts);
- the sites' and cities' names, zones and photos from the site catalogue;
- for the final count of a night, how many monuments were confirmed lit (numbers only).

The campaign in front is the one lit now; else the next one to light within the
calendar's horizon, unless one ended less than `AFTER_HOLD` ago (its final count stays
in front that long).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from controller.public_when import Phase, Relative, night_of, phase_at, relative_day
from schedules.model import Campaign, SiteCatalog, display_name
from schedules.resolve import Segment, timeline

CALENDAR_DAYS = 14
"""How far ahead the calendar of lightings reaches."""
CALENDAR_MAX = 60
"""At most this many lightings in the calendar."""
AFTER_HOLD = timedelta(hours=12)
"""How long a night's final count stays in front after its last window ends."""
LOOKBACK = timedelta(days=2)


# ---- the campaigns' timelines ---------------------------------------------------


@dataclass(frozen=True)
class Lighting:
    """One window of one campaign at one site (a lit segment of the site's timeline)."""

    campaign: str
    site: str
    city: str
    start: datetime
    end: datetime
    color: str


def lightings(
    catalog: SiteCatalog, campaigns: Sequence[Campaign], start: datetime, end: datetime
) -> tuple[Lighting, ...]:
    """Every lit segment of every site over [start, end), by start then site."""
    cities = {c.id: c for c in catalog.cities}
    out: list[Lighting] = []
    for site in catalog.sites:
        city = cities[site.city]
        for seg in timeline(campaigns, site, city.zone, start, end):
            if seg.light.on:
                out.append(_lighting(seg, city.id))
    out.sort(key=lambda x: (x.start, x.site))
    return tuple(out)


def _lighting(seg: Segment, city: str) -> Lighting:
    return Lighting(seg.campaign, seg.site, city, seg.start, seg.end, seg.light.color)


@dataclass(frozen=True)
class Night:
    """A campaign's lightings of one night (by the local date of the evening)."""

    campaign: str
    night: date
    start: datetime
    end: datetime
    sites: tuple[str, ...]
    cities: tuple[str, ...]


def nights(items: Iterable[Lighting], zone: ZoneInfo) -> list[Night]:
    """The lightings grouped by campaign and night, by start."""
    groups: dict[tuple[str, date], list[Lighting]] = defaultdict(list)
    for item in items:
        groups[(item.campaign, night_of(item.start.astimezone(zone)))].append(item)
    out = [
        Night(
            campaign=campaign,
            night=day,
            start=min(x.start for x in group),
            end=max(x.end for x in group),
            sites=tuple(sorted({x.site for x in group})),
            cities=tuple(sorted({x.city for x in group})),
        )
        for (campaign, day), group in groups.items()
    ]
    out.sort(key=lambda n: (n.start, n.campaign))
    return out


def featured_night(all_nights: Sequence[Night], now: datetime) -> Night | None:
    """The night in front at `now` (see the module)."""
    during = [n for n in all_nights if n.start <= now < n.end]
    if during:
        return min(during, key=lambda n: n.start)
    ended = [n for n in all_nights if now - AFTER_HOLD <= n.end <= now]
    if ended:
        return max(ended, key=lambda n: n.end)
    coming = [n for n in all_nights if n.start > now]
    if coming:
        return min(coming, key=lambda n: n.start)
    return None


# ---- the view model ---------------------------------------------------------------


@dataclass(frozen=True)
class HelplineView:
    country: str
    number: str
    tel: str
    """The number for a tel: link (digits and a leading +)."""
    hours: str | None


@dataclass(frozen=True)
class CallView:
    text: str
    helplines: tuple[HelplineView, ...]
    url: str | None
    url_label: str | None
    """The link as people write it (no https://, no trailing slash)."""


@dataclass(frozen=True)
class CampaignView:
    title: str
    cause: str | None
    color: str
    call: CallView | None


@dataclass(frozen=True)
class Banner:
    campaign: CampaignView
    phase: Phase
    start: datetime
    end: datetime
    relative: Relative
    """The day word of the night (its start), seen from now."""
    site_ids: tuple[str, ...]
    total: int
    cities: int
    lit: int | None
    """Confirmed lit: now (during) or in the end (after; None while not settled)."""


@dataclass(frozen=True)
class SiteView:
    id: str
    name: str
    state: str
    color: str | None
    confirmed_at: datetime | None
    window_start: datetime | None
    window_end: datetime | None
    photo_src: str | None = None
    photo_alt: str | None = None
    confirmed_by: str | None = None
    lat: float | None = None
    lon: float | None = None
    """Where it stands (the status's own coordinates), for the map."""


@dataclass(frozen=True)
class CityView:
    name: str
    zone: ZoneInfo
    sites: tuple[SiteView, ...]


@dataclass(frozen=True)
class CalendarEntry:
    start: datetime
    end: datetime
    relative: Relative
    title: str
    cause: str | None
    color: str
    cities: tuple[tuple[str, tuple[str, ...]], ...]
    """(city name, monument names) in the page's language, sorted."""
    campaign_id: str = ""
    """For its calendar file (`/api/v1/public/campaigns/{id}.ics`)."""


@dataclass(frozen=True)
class PageModel:
    lang: str
    now: datetime
    zone: ZoneInfo
    banner: Banner | None
    summary: Mapping[str, int]
    cities: tuple[CityView, ...]
    calendar: tuple[CalendarEntry, ...]
    generated_at: datetime | None
    ready: bool = True
    """False before the first status is rendered: no monument list yet."""


def page_zone(catalog: SiteCatalog) -> ZoneInfo:
    """The zone the page speaks in: the one most cities are in (UTC when none)."""
    counts = Counter(c.timezone for c in catalog.cities)
    if not counts:
        return ZoneInfo("UTC")
    best = max(counts.items(), key=lambda kv: (kv[1], kv[0] == catalog.cities[0].timezone))
    return ZoneInfo(best[0])


def campaign_view(campaign: Campaign, lang: str) -> CampaignView:
    call = None
    cta = campaign.call_to_action
    if cta is not None:
        call = CallView(
            text=display_name(cta.text, lang),
            helplines=tuple(
                HelplineView(
                    country=h.country,
                    number=h.number,
                    tel=tel_uri(h.number, h.country),
                    hours=display_name(h.hours, lang) if h.hours else None,
                )
                for h in cta.helplines
            ),
            url=cta.url,
            url_label=url_label(cta.url) if cta.url else None,
        )
    return CampaignView(
        title=display_name(campaign.title, lang),
        cause=display_name(campaign.cause, lang) if campaign.cause else None,
        color=campaign.color,
        call=call,
    )


COUNTRY_CODES = {"BE": "32", "NL": "31", "FR": "33", "DE": "49", "LU": "352"}


def tel_uri(number: str, country: str) -> str:
    """`tel:` digits: `078/055.800` in BE is `+3278055800`; a number written with `+`
    is kept; a national number of a country not known here is dialled as written."""
    digits = "".join(ch for ch in number if ch.isdigit())
    if number.startswith("+"):
        return "+" + digits
    code = COUNTRY_CODES.get(country)
    if code is not None and digits.startswith("0") and not digits.startswith("00"):
        return f"+{code}{digits[1:]}"
    return digits


def url_label(url: str) -> str:
    label = url.removeprefix("https://")
    return label[:-1] if label.endswith("/") and label.count("/") == 1 else label


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _coordinate(value: Any, limit: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if -limit <= value <= limit else None


def build_page(
    *,
    lang: str,
    now: datetime,
    status: Mapping[str, Any] | None,
    catalog: SiteCatalog,
    campaigns: Sequence[Campaign],
    lit: Sequence[Lighting],
    final_count: Callable[[Night], int | None] = lambda night: None,
) -> PageModel:
    """The page in `lang` at `now`. `status` is the public status document of `lang`
    (None before the first one is rendered); `lit` the lightings around now
    (`lightings` over [now - LOOKBACK, now + CALENDAR_DAYS]); `final_count` how many
    monuments of a night that ended were confirmed lit, when that is settled."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    zone = page_zone(catalog)
    by_id = {c.id: c for c in campaigns}
    all_nights = [n for n in nights(lit, zone) if n.campaign in by_id]
    night = featured_night(all_nights, now)

    sites_json: list[Mapping[str, Any]] = []
    if status is not None:
        sites_json = [s for s in status.get("sites", ()) if isinstance(s, Mapping)]
    states = {str(s.get("id")): str(s.get("state")) for s in sites_json}

    banner = None
    if night is not None:
        phase = phase_at(night.start, night.end, now)
        count: int | None
        if phase is Phase.DURING:
            count = sum(1 for site in night.sites if states.get(site) == "lit")
        elif phase is Phase.AFTER:
            count = final_count(night)
        else:
            count = None
        banner = Banner(
            campaign=campaign_view(by_id[night.campaign], lang),
            phase=phase,
            start=night.start,
            end=night.end,
            relative=relative_day(night.start, now, zone),
            site_ids=night.sites,
            total=len(night.sites),
            cities=len(night.cities),
            lit=count,
        )

    city_of = {s.id: s.city for s in catalog.sites}
    site_of = {s.id: s for s in catalog.sites}
    city_by_id = {c.id: c for c in catalog.cities}
    grouped: dict[str, list[SiteView]] = defaultdict(list)
    city_names: dict[str, str] = {}
    for item in sites_json:
        site_id = str(item.get("id"))
        known = site_of.get(site_id)
        city_id = city_of.get(site_id, "")
        city_names.setdefault(city_id, str(item.get("city") or ""))
        window = item.get("window") if isinstance(item.get("window"), Mapping) else None
        state = str(item.get("state"))
        photo = known.photo if known is not None else None
        confirmed_by = item.get("confirmed_by")
        grouped[city_id].append(
            SiteView(
                id=site_id,
                name=str(item.get("name") or ""),
                state=state,
                color=item.get("color") if state == "lit" else None,
                confirmed_at=_instant(item.get("confirmed_at")),
                window_start=_instant(window.get("start")) if window else None,
                window_end=_instant(window.get("end")) if window else None,
                photo_src=photo.src if photo else None,
                photo_alt=display_name(photo.alt, lang) if photo else None,
                confirmed_by=confirmed_by if isinstance(confirmed_by, str) else None,
                lat=_coordinate(item.get("lat"), 90),
                lon=_coordinate(item.get("lon"), 180),
            )
        )
    cities = tuple(
        CityView(
            name=city_names[city_id],
            zone=city_by_id[city_id].zone if city_id in city_by_id else zone,
            sites=tuple(sorted(group, key=lambda s: (s.name.casefold(), s.id))),
        )
        for city_id, group in sorted(
            grouped.items(), key=lambda kv: (city_names[kv[0]].casefold(), kv[0])
        )
    )

    summary: Mapping[str, int] = {}
    generated_at = None
    if status is not None:
        raw = status.get("summary")
        summary = dict(raw) if isinstance(raw, Mapping) else {}
        generated_at = _instant(status.get("generated_at"))

    return PageModel(
        lang=lang,
        now=now,
        zone=zone,
        banner=banner,
        summary=summary,
        cities=cities,
        calendar=calendar(lit, catalog, by_id, lang, now, zone),
        generated_at=generated_at,
        ready=status is not None,
    )


def calendar(
    lit: Sequence[Lighting],
    catalog: SiteCatalog,
    campaigns: Mapping[str, Campaign],
    lang: str,
    now: datetime,
    zone: ZoneInfo,
) -> tuple[CalendarEntry, ...]:
    """The coming lightings (not yet ended, starting within the horizon): one entry per
    campaign and window times, with the cities and monuments it lights."""
    horizon = now + timedelta(days=CALENDAR_DAYS)
    site_names = {s.id: display_name(s.name, lang) for s in catalog.sites}
    city_names = {c.id: display_name(c.name, lang) for c in catalog.cities}
    groups: dict[tuple[datetime, datetime, str, str], dict[str, set[str]]] = defaultdict(
        lambda: defaultdict(set)
    )
    for item in lit:
        if item.end <= now or item.start > horizon or item.campaign not in campaigns:
            continue
        key = (item.start, item.end, item.campaign, item.color)
        groups[key][item.city].add(site_names.get(item.site, item.site))
    out: list[CalendarEntry] = []
    for (start, end, campaign_id, color), by_city in sorted(groups.items()):
        campaign = campaigns[campaign_id]
        out.append(
            CalendarEntry(
                start=start,
                end=end,
                relative=relative_day(start, now, zone),
                title=display_name(campaign.title, lang),
                cause=display_name(campaign.cause, lang) if campaign.cause else None,
                color=color,
                campaign_id="" if campaign.override else campaign_id,  # an override's is not public
                cities=tuple(
                    sorted(
                        (
                            (city_names.get(c, c), tuple(sorted(names, key=str.casefold)))
                            for c, names in by_city.items()
                        ),
                        key=lambda pair: pair[0].casefold(),
                    )
                ),
            )
        )
        if len(out) >= CALENDAR_MAX:
            break
    return tuple(out)
