"""Property tests of expansion and resolution.

For random valid campaigns and ranges in 2026, at sites in five zones (two hemispheres,
both DST directions, no DST, and Tromsø above the Arctic circle):

- segments are sorted and never overlap per site, and lie inside the range;
- expanding [a, b) and [b, c) and joining the pieces that touch at b equals [a, c);
- `desired_state` agrees with the timeline at random instants;
- the winner of every piece is the highest (override, priority, age) occurrence covering it,
  and occurrences are exactly the windows that overlap the range (brute force over days).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedules.expand import occurrences, window_instants
from schedules.model import Campaign, Site, SiteCatalog
from schedules.resolve import Segment, desired_state, timeline
from schedules.solar import SunEvent

CATALOG = SiteCatalog.model_validate(
    {
        "cities": [
            {"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"},
            {"id": "sydney", "name": {"en": "Sydney"}, "timezone": "Australia/Sydney"},
            {"id": "santiago", "name": {"en": "Santiago"}, "timezone": "America/Santiago"},
            {"id": "reykjavik", "name": {"en": "Reykjavik"}, "timezone": "Atlantic/Reykjavik"},
            {"id": "tromso", "name": {"en": "Tromsø"}, "timezone": "Europe/Oslo"},
        ],
        "sites": [
            {
                "id": "manneken-pis",
                "city": "brussels",
                "name": {"en": "Manneken Pis"},
                "lat": 50.84497,
                "lon": 4.34998,
                "tags": ["fountain", "old-town"],
            },
            {
                "id": "atomium",
                "city": "brussels",
                "name": {"en": "Atomium"},
                "lat": 50.8949,
                "lon": 4.3415,
                "tags": ["modern"],
            },
            {
                "id": "opera-house",
                "city": "sydney",
                "name": {"en": "Opera House"},
                "lat": -33.8568,
                "lon": 151.2153,
                "tags": ["modern", "harbour"],
            },
            {
                "id": "la-moneda",
                "city": "santiago",
                "name": {"en": "La Moneda"},
                "lat": -33.4429,
                "lon": -70.6539,
                "tags": ["old-town"],
            },
            {
                "id": "hallgrimskirkja",
                "city": "reykjavik",
                "name": {"en": "Hallgrímskirkja"},
                "lat": 64.1417,
                "lon": -21.9266,
                "tags": ["church"],
            },
            {
                "id": "arctic-cathedral",
                "city": "tromso",
                "name": {"en": "Arctic Cathedral"},
                "lat": 69.65,
                "lon": 18.96,
                "tags": ["church", "modern"],
            },
        ],
    }
)
SITES = CATALOG.sites
CITY_IDS = [c.id for c in CATALOG.cities]
SITE_IDS = [s.id for s in SITES]
TAGS = sorted({t for s in SITES for t in s.tags})

YEAR = datetime(2026, 1, 1, tzinfo=UTC)
DST_CHANGES = [
    # Brussels (EU rule), Sydney, Santiago: only used to bias the ranges towards the changes
    datetime(2026, 3, 29, 1, tzinfo=UTC),
    datetime(2026, 10, 25, 1, tzinfo=UTC),
    datetime(2026, 4, 4, 16, tzinfo=UTC),
    datetime(2026, 10, 3, 16, tzinfo=UTC),
    datetime(2026, 4, 5, 3, tzinfo=UTC),
    datetime(2026, 9, 6, 4, tzinfo=UTC),
]
HIGH_LATITUDE = [datetime(2026, 5, 15, tzinfo=UTC), datetime(2026, 7, 24, tzinfo=UTC)]
RRULES = ["FREQ=WEEKLY;BYDAY=FR", "FREQ=DAILY;INTERVAL=3", "FREQ=WEEKLY;BYDAY=MO,TH,SA"]
COLORS = ["#FF0000", "#00FF00", "#0000FF"]


@dataclass(frozen=True)
class Scenario:
    campaigns: tuple[Campaign, ...]
    start: datetime
    end: datetime
    site: Site

    @property
    def zone(self):
        return CATALOG.city_of(self.site).zone


def zone_of(site: Site):
    return CATALOG.city_of(site).zone


minute_times = st.one_of(
    st.builds(time, st.integers(0, 23), st.integers(0, 59)),
    # wall times that fall in or next to the DST gaps and overlaps, and around midnight
    st.sampled_from([time(0, 0), time(0, 30), time(2, 0), time(2, 30), time(3, 0), time(23, 30)]),
)


def hhmm(t: time) -> str:
    return f"{t.hour:02d}:{t.minute:02d}"


@st.composite
def time_specs(draw):
    if draw(st.booleans()):
        return {"at": hhmm(draw(minute_times))}, False
    spec = {
        "sun": str(draw(st.sampled_from(list(SunEvent)))),
        "offset": f"{draw(st.integers(-120, 120)):+d}m",
    }
    if draw(st.booleans()):
        spec["earliest"] = hhmm(draw(minute_times))
    if draw(st.booleans()):
        spec["latest"] = hhmm(draw(minute_times))
    return spec, True


@st.composite
def targets(draw):
    kind = draw(st.sampled_from(["all", "cities", "sites", "tags", "mixed"]))
    if kind == "all":
        return {"all": True}
    pick = {
        "cities": lambda: draw(st.lists(st.sampled_from(CITY_IDS), min_size=1, max_size=3)),
        "sites": lambda: draw(st.lists(st.sampled_from(SITE_IDS), min_size=1, max_size=3)),
        "tags": lambda: draw(st.lists(st.sampled_from(TAGS), min_size=1, max_size=2)),
    }
    if kind == "mixed":
        return {"cities": pick["cities"](), "tags": pick["tags"]()}
    return {kind: pick[kind]()}


@st.composite
def windows(draw, first: date, days: int, one_off: bool):
    def a_date():
        return (first + timedelta(days=draw(st.integers(-3, days + 2)))).isoformat()

    start, sun_start = draw(time_specs())
    end, sun_end = draw(time_specs())
    window = {"targets": draw(targets()), "start": start, "end": end}
    dates = draw(st.lists(st.builds(a_date), max_size=4, unique=True))
    if one_off or (dates and draw(st.booleans())):
        window["dates"] = dates or [a_date()]
    else:
        window["rrule"] = draw(st.sampled_from(RRULES))
        if dates:
            window["dates"] = dates
        if draw(st.booleans()):
            window["exdates"] = [a_date()]
    if sun_start or sun_end:
        window["polar"] = draw(st.sampled_from(["skip", {"fallback": "22:00"}]))
    return window


@st.composite
def campaigns(draw, index: int, first: date, days: int):
    override = draw(st.integers(0, 5)) == 0
    on = not override or draw(st.booleans())
    data = {
        "id": f"c{index}",
        "title": {"en": f"Campaign {index}"},
        "priority": draw(st.sampled_from([10, 50, 50, 90])),
        "on": on,
        "windows": draw(st.lists(windows(first, days, override), min_size=1, max_size=3)),
    }
    if on:
        data["color"] = draw(st.sampled_from(COLORS))
        data["level"] = draw(st.sampled_from([40, 100]))
    if override:
        data.update(override=True, reason="emergency drill")
    return Campaign.model_validate(data)


@st.composite
def ranges(draw):
    where = draw(st.sampled_from(["anywhere", "dst", "dst", "high-latitude"]))
    if where == "anywhere":
        start = YEAR + timedelta(minutes=draw(st.integers(0, 343 * 1440)))
    else:
        anchor = draw(st.sampled_from(DST_CHANGES if where == "dst" else HIGH_LATITUDE))
        start = anchor + timedelta(minutes=draw(st.integers(-5 * 1440, 1440)))
    length = timedelta(minutes=draw(st.integers(60, 20 * 1440)))
    return start, start + length


@st.composite
def scenarios(draw):
    start, end = draw(ranges())
    first = start.date()
    days = (end - start).days + 1
    count = draw(st.integers(1, 4))
    found = tuple(draw(campaigns(i, first, days)) for i in range(count))
    return Scenario(found, start, end, draw(st.sampled_from(SITES)))


def instants_in(scenario: Scenario):
    span = int((scenario.end - scenario.start).total_seconds())
    return st.integers(0, span - 1).map(lambda s: scenario.start + timedelta(seconds=s))


def check_sorted_disjoint_inside(segments: list[Segment], start: datetime, end: datetime):
    for seg in segments:
        assert start <= seg.start < seg.end <= end, seg
    for left, right in pairwise(segments):
        assert left.end <= right.start, (left, right)
        # maximal: touching pieces of one campaign and look are one segment
        if left.end == right.start:
            assert (left.campaign, left.light) != (right.campaign, right.light)


def join(left: list[Segment], right: list[Segment]) -> list[Segment]:
    if left and right:
        a, b = left[-1], right[0]
        if a.end == b.start and (a.campaign, a.light) == (b.campaign, b.light):
            return [*left[:-1], Segment(a.site, a.campaign, a.start, b.end, a.light), *right[1:]]
    return left + right


PROPERTY = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(scenarios())
def test_segments_are_sorted_disjoint_and_inside_the_range(scenario):
    for site in SITES:
        segments = timeline(scenario.campaigns, site, zone_of(site), scenario.start, scenario.end)
        check_sorted_disjoint_inside(segments, scenario.start, scenario.end)
        assert all(seg.site == site.id for seg in segments)


@PROPERTY
@given(st.data(), scenarios())
def test_adjacent_ranges_join_into_their_union(data, scenario):
    a, c = scenario.start, scenario.end
    b = a + timedelta(minutes=data.draw(st.integers(1, int((c - a).total_seconds() // 60) - 1)))
    whole = timeline(scenario.campaigns, scenario.site, scenario.zone, a, c)
    left = timeline(scenario.campaigns, scenario.site, scenario.zone, a, b)
    right = timeline(scenario.campaigns, scenario.site, scenario.zone, b, c)
    check_sorted_disjoint_inside(left, a, b)
    check_sorted_disjoint_inside(right, b, c)
    assert join(left, right) == whole


@PROPERTY
@given(st.data(), scenarios())
def test_desired_state_agrees_with_the_timeline(data, scenario):
    segments = timeline(
        scenario.campaigns, scenario.site, scenario.zone, scenario.start, scenario.end
    )
    probes = data.draw(st.lists(instants_in(scenario), min_size=1, max_size=3))
    # the edges of segments are where an off-by-one would show
    probes += [s.start for s in segments[:2]] + [s.end for s in segments[:2]]
    for t in probes:
        if not scenario.start <= t < scenario.end:
            continue
        expected = next((s for s in segments if s.contains(t)), None)
        got = desired_state(scenario.campaigns, scenario.site, scenario.zone, t)
        if expected is None:
            assert got is None, t
        else:
            assert got is not None, t
            assert (got.campaign, got.light) == (expected.campaign, expected.light), t
            assert got.contains(t)


@PROPERTY
@given(scenarios())
def test_winner_is_the_highest_override_priority_age_covering_it(scenario):
    site, zone, start, end = scenario.site, scenario.zone, scenario.start, scenario.end
    campaigns = scenario.campaigns

    # Brute force, independent of occurrences' own range arithmetic: every day the window
    # names, well beyond the range, through window_instants, kept when it overlaps.
    expected_occ = set()
    first = start.astimezone(zone).date() - timedelta(days=4)
    last = end.astimezone(zone).date() + timedelta(days=4)
    for campaign in campaigns:
        for index, window in enumerate(campaign.windows):
            if not window.targets.matches(site):
                continue
            for day in window.days(first, last):
                found = window_instants(window, day, site, zone, campaign.id)
                if found and found[0] < end and found[1] > start:
                    expected_occ.add((campaign.id, index, *found))
    occs = [
        o
        for rank, campaign in enumerate(campaigns)
        for o in occurrences(campaign, rank, site, zone, start, end)
    ]
    assert {(o.campaign, o.window, o.start, o.end) for o in occs} == expected_occ
    by_id = {c.id: (age, c) for age, c in enumerate(campaigns)}
    for o in occs:
        age, campaign = by_id[o.campaign]
        assert o.rank == (campaign.override, campaign.priority, age)
        assert o.light == campaign.light

    segments = timeline(campaigns, site, zone, start, end)
    cuts = sorted({start, end} | {t for o in occs for t in (o.start, o.end) if start < t < end})
    for lo, hi in pairwise(cuts):
        covering = [o for o in occs if o.start <= lo and hi <= o.end]
        holder = [s for s in segments if s.start <= lo and hi <= s.end]
        partial = [s for s in segments if s.start < hi and lo < s.end]
        if not covering:
            assert partial == [], (lo, hi)
            continue
        assert len(holder) == 1 and partial == holder, (lo, hi)
        best = max(
            covering,
            key=lambda o: (
                by_id[o.campaign][1].override,
                by_id[o.campaign][1].priority,
                by_id[o.campaign][0],
            ),
        )
        assert (holder[0].campaign, holder[0].light) == (best.campaign, best.light), (lo, hi)


# --- a bug the properties found ---------------------------------------------------------------

TROMSO = next(s for s in SITES if s.id == "arctic-cathedral")


def test_occurrence_starting_the_evening_before_its_date_is_seen_by_a_range_ending_then():
    early = Campaign.model_validate(
        {
            "id": "dawn",
            "title": {"en": "Dawn"},
            "color": "#FF0000",
            "windows": [
                {
                    "targets": {"all": True},
                    "dates": ["2026-07-28"],
                    "start": {"sun": "sunrise", "offset": "-2h"},
                    "end": {"at": "03:00"},
                    "polar": "skip",
                }
            ],
        }
    )
    zone = zone_of(TROMSO)
    begins, ends = window_instants(early.windows[0], date(2026, 7, 28), TROMSO, zone)
    # sunrise at Tromsø on 28 July 2026 is about 01:43 CEST, so the window opens at about
    # 23:43 CEST on 27 July, 21:43 UTC, and closes at 03:00 CEST on the 28th
    assert (
        datetime(2026, 7, 27, 21, 30, tzinfo=UTC) < begins < datetime(2026, 7, 27, 22, tzinfo=UTC)
    )
    assert ends == datetime(2026, 7, 28, 1, tzinfo=UTC)
    a, b, c = (datetime(2026, 7, 27, h, m, tzinfo=UTC) for h, m in ((21, 0), (21, 50), (23, 0)))
    assert desired_state([early], TROMSO, zone, b - timedelta(minutes=1)) is not None
    whole = timeline([early], TROMSO, zone, a, c)
    assert (
        join(timeline([early], TROMSO, zone, a, b), timeline([early], TROMSO, zone, b, c)) == whole
    )
    assert timeline([early], TROMSO, zone, a, b) == [
        Segment(TROMSO.id, "dawn", begins, b, early.light)
    ]
