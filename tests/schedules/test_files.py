"""Campaign and site files: bad files, valid files, the polar policy, conflicts."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
import yaml

from schedules.conflicts import check_campaign, find_conflicts
from schedules.expand import PolarPolicyMissing, occurrences
from schedules.files import ScheduleFileError, load_campaign, load_sites
from schedules.model import Campaign, SiteCatalog
from schedules.solar import SunEvent


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def write(tmp_path: Path, name: str, content: str | dict) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(textwrap.dedent(content), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return path


ISSUE_SITES = """\
    cities:
      - id: brussels
        name: {en: Brussels, fr: Bruxelles, nl: Brussel, de: Brüssel}
        timezone: Europe/Brussels
    sites:
      - id: manneken-pis
        city: brussels
        name: {en: Manneken Pis, fr: Manneken-Pis}
        lat: 50.84497
        lon: 4.34998
        tags: [fountain, old-town]
    """

ISSUE_CAMPAIGN = """\
    id: world-day-2026
    title: {en: World Day Against Trafficking in Persons}
    color: "#009EDB"
    level: 100
    priority: 50
    windows:
      - targets: {cities: [brussels, bruges]}   # or {sites: [...]}, {tags: [...]}, {all: true}; combinable
        dates: ["2026-07-30"]                   # and/or rrule: "FREQ=YEARLY;BYMONTH=7;BYMONTHDAY=30"; exdates: [...]
        start: {sun: sunset, offset: "-15m", earliest: "20:00", latest: "22:30"}
        end: {at: "01:00"}
        polar: skip                             # or {fallback: "22:00"}
    """  # noqa: E501


def good_campaign(**top) -> dict:
    window = {
        "targets": {"cities": ["brussels"]},
        "dates": ["2026-07-30"],
        "start": {"sun": "sunset", "offset": "-15m"},
        "end": {"at": "01:00"},
    }
    return {
        "id": "c",
        "title": {"en": "C"},
        "color": "#009EDB",
        "windows": [dict(window), dict(window), dict(window)],
        **top,
    }


def good_sites() -> dict:
    return yaml.safe_load(textwrap.dedent(ISSUE_SITES))


# --- valid files -------------------------------------------------------------------------------


def test_the_issue_example_campaign_and_sites_load_and_expand(tmp_path):
    catalog = load_sites(write(tmp_path, "sites.yaml", ISSUE_SITES))
    assert [c.id for c in catalog.cities] == ["brussels"]
    assert catalog.cities[0].name["de"] == "Brüssel"
    (site,) = catalog.sites
    assert (site.id, site.city, site.lat, site.lon) == (
        "manneken-pis",
        "brussels",
        50.84497,
        4.34998,
    )
    assert site.tags == ("fountain", "old-town")

    campaign = load_campaign(write(tmp_path, "campaign.yaml", ISSUE_CAMPAIGN))
    assert (campaign.id, campaign.color, campaign.level, campaign.priority) == (
        "world-day-2026",
        "#009EDB",
        100,
        50,
    )
    (window,) = campaign.windows
    assert window.targets.cities == ("brussels", "bruges")
    assert window.dates == (date(2026, 7, 30),)
    assert window.start.sun is SunEvent.SUNSET
    assert window.start.offset == timedelta(minutes=-15)
    assert (window.start.earliest, window.start.latest) == (time(20), time(22, 30))
    assert window.end.at == time(1)
    assert window.polar is not None and window.polar.skip

    (occ,) = occurrences(
        campaign, 0, site, catalog.city_of(site).zone, utc(2026, 7, 29), utc(2026, 8, 2)
    )
    # PyEphem 4.2.1 (USNO: upper limb, horizon -0:34, no refraction model beyond that) puts
    # the Brussels sunset on 30 July 2026 at 19:31:19 UTC (21:31:19 CEST); minus 15 minutes,
    # inside the 20:00-22:30 clamps.
    assert abs(occ.start - utc(2026, 7, 30, 19, 16, 19)) <= timedelta(seconds=60)
    assert occ.end == utc(2026, 7, 30, 23)  # 01:00 CEST on 31 July


def test_rrule_and_exdates_as_in_the_issue_comment(tmp_path):
    data = good_campaign()
    data["windows"] = [
        {
            "targets": {"all": True},
            "rrule": "FREQ=YEARLY;BYMONTH=7;BYMONTHDAY=30",
            "exdates": ["2027-07-30"],
            "start": {"at": "21:30"},
            "end": {"at": "01:00"},
        }
    ]
    campaign = load_campaign(write(tmp_path, "c.yaml", data))
    assert campaign.windows[0].days(date(2025, 1, 1), date(2028, 12, 31)) == [
        date(2025, 7, 30),
        date(2026, 7, 30),
        date(2028, 7, 30),
    ]


# --- bad campaign files ------------------------------------------------------------------------


def campaign_error(tmp_path: Path, data: dict | str) -> tuple[str, str]:
    path = write(tmp_path, "campaign.yaml", data)
    with pytest.raises(ScheduleFileError) as err:
        load_campaign(path)
    return str(err.value), str(path)


def _set(data: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[last] = value
    return data


@pytest.mark.parametrize(
    ("where", "value", "path", "says"),
    [
        ("surprise", 1, "surprise", ["Extra inputs are not permitted"]),
        ("windows.0.start.when", "20:00", "windows[0].start.when", ["not permitted"]),
        ("windows.1.targets.city", ["brussels"], "windows[1].targets.city", ["not permitted"]),
        ("windows.0.start", {"at": "25:00"}, "windows[0].start.at", ["'25:00'", "HH:MM"]),
        ("windows.2.start.offset", "15", "windows[2].start.offset", ["'15'", "-15m"]),
        ("color", "blue", "color", ["'blue'", "#RRGGBB"]),
        ("level", 101, "level", ["less than or equal to 100"]),
        ("windows.0.rrule", "BYDAY=FR", "windows[0].rrule", ["FREQ"]),
        ("windows.0.rrule", "FREQ=WEEKLY;BYDAY=XX", "windows[0].rrule", ["not valid", "XX"]),
        ("windows.1.start", {"at": "20:00", "offset": "-15m"}, "windows[1].start", ["'sun'"]),
        ("windows.0.polar", {"fallback": "24:00"}, "windows[0].polar", ["'24:00'", "HH:MM"]),
        ("windows.0.dates", ["2026-02-30"], "windows[0].dates[0]", ["date"]),
        ("windows.0.start", {"sun": "moonrise"}, "windows[0].start.sun", ["sunset"]),
    ],
)
def test_a_bad_campaign_names_file_path_and_fault(tmp_path, where, value, path, says):
    message, file = campaign_error(tmp_path, _set(good_campaign(), where, value))
    lines = [
        ln
        for ln in message.splitlines()
        if ln.startswith(f"{file}: {path}") and all(words in ln for words in says)
    ]
    assert lines, message


def test_a_bad_polar_fallback_names_the_path_in_the_file(tmp_path):
    data = _set(good_campaign(), "windows.0.polar", {"fallback": "24:00"})
    message, file = campaign_error(tmp_path, data)
    assert message.splitlines() == [
        f"{file}: windows[0].polar.fallback: time must be HH:MM or HH:MM:SS (00:00-23:59), "
        "not '24:00'"
    ]


def test_a_window_needs_dates_or_an_rrule(tmp_path):
    data = good_campaign()
    del data["windows"][1]["dates"]
    message, file = campaign_error(tmp_path, data)
    assert f"{file}: windows[1]: a window needs 'dates', an 'rrule', or both" in message


def test_ten_thousand_windows_are_over_the_limit_of_a_thousand(tmp_path):
    window = good_campaign()["windows"][0]
    message, file = campaign_error(tmp_path, good_campaign(windows=[window] * 10_000))
    assert message.startswith(f"{file}: windows: ")
    assert "at most 1000" in message
    assert "10000" in message


def test_an_override_needs_a_reason(tmp_path):
    message, file = campaign_error(tmp_path, good_campaign(override=True, on=False))
    assert message.startswith(f"{file}: ")
    assert "override needs a 'reason'" in message


def test_an_override_with_a_reason_loads(tmp_path):
    data = good_campaign(override=True, on=False, reason="storm warning", priority=0)
    data.pop("color")
    campaign = load_campaign(write(tmp_path, "c.yaml", data))
    assert campaign.override and campaign.reason == "storm warning"
    assert not campaign.light.on


def test_yaml_syntax_errors_and_non_mappings_name_the_file(tmp_path):
    message, file = campaign_error(tmp_path, "id: [unclosed\n")
    assert message.startswith(f"{file}: not valid YAML")
    message, file = campaign_error(tmp_path, "- just\n- a list\n")
    assert message.startswith(f"{file}: (top): ")


def test_one_bad_window_gives_one_error_line(tmp_path):
    data = good_campaign()
    data["windows"] = data["windows"][:1]
    data["windows"][0]["start"] = {"at": "25:00"}
    message, file = campaign_error(tmp_path, data)
    assert message.splitlines() == [
        f"{file}: windows[0].start.at: time must be HH:MM or HH:MM:SS (00:00-23:59), not '25:00'"
    ]


@pytest.mark.parametrize("freq", ["MINUTELY", "SECONDLY"])
def test_sub_daily_rrules_are_rejected(tmp_path, freq):
    data = good_campaign()
    data["windows"][0]["rrule"] = f"FREQ={freq}"
    message, file = campaign_error(tmp_path, data)
    assert message.startswith(f"{file}: windows[0].rrule: ")


# --- bad sites files ---------------------------------------------------------------------------


def sites_error(tmp_path: Path, data: dict) -> tuple[str, str]:
    path = write(tmp_path, "sites.yaml", data)
    with pytest.raises(ScheduleFileError) as err:
        load_sites(path)
    return str(err.value), str(path)


def test_unknown_time_zone_names_the_city(tmp_path):
    data = good_sites()
    data["cities"][0]["timezone"] = "Europe/Bruxelles"
    message, file = sites_error(tmp_path, data)
    assert message == f"{file}: cities[0].timezone: unknown time zone 'Europe/Bruxelles'"


def test_duplicate_site_ids(tmp_path):
    data = good_sites()
    data["sites"].append(dict(data["sites"][0], name={"en": "Copy"}))
    message, file = sites_error(tmp_path, data)
    assert message.startswith(f"{file}: ")
    assert "sites[1].id: duplicate id 'manneken-pis'" in message


def test_duplicate_city_ids(tmp_path):
    data = good_sites()
    data["cities"].append(dict(data["cities"][0], timezone="Europe/Paris"))
    message, file = sites_error(tmp_path, data)
    assert message.startswith(f"{file}: ")
    assert "cities[1].id: duplicate id 'brussels'" in message


def test_a_site_in_an_unknown_city(tmp_path):
    data = good_sites()
    data["sites"][0]["city"] = "bruges"
    message, file = sites_error(tmp_path, data)
    assert message.startswith(f"{file}: ")
    assert "sites[0].city: unknown city 'bruges'" in message


@pytest.mark.parametrize(
    ("where", "value", "path"),
    [
        ("sites.0.lat", 91, "sites[0].lat"),
        ("sites.0.colour", "red", "sites[0].colour"),
        ("cities.0.id", "Brussels", "cities[0].id"),
        ("extra", 1, "extra"),
    ],
)
def test_other_bad_sites_name_the_path(tmp_path, where, value, path):
    message, file = sites_error(tmp_path, _set(good_sites(), where, value))
    assert message.startswith(f"{file}: {path}: "), message


# --- the polar policy --------------------------------------------------------------------------

POLAR_SITES = {
    "cities": [
        {"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"},
        {"id": "tromso", "name": {"en": "Tromsø"}, "timezone": "Europe/Oslo"},
    ],
    "sites": [
        {
            "id": "manneken-pis",
            "city": "brussels",
            "name": {"en": "Manneken Pis"},
            "lat": 50.84497,
            "lon": 4.34998,
        },
        {
            "id": "arctic-cathedral",
            "city": "tromso",
            "name": {"en": "Arctic Cathedral"},
            "lat": 69.65,
            "lon": 18.96,
        },
    ],
}


def midsummer(tmp_path, cities=("tromso", "brussels"), day="2026-06-20", **window) -> Campaign:
    data = {
        "id": "midsummer",
        "title": {"en": "Midsummer"},
        "color": "#FFD700",
        "windows": [
            {
                "targets": {"cities": list(cities)},
                "dates": [day],
                "start": {"sun": "sunset"},
                "end": {"at": "01:00"},
                **window,
            }
        ],
    }
    return load_campaign(write(tmp_path, "midsummer.yaml", data))


@pytest.fixture
def polar_catalog(tmp_path) -> SiteCatalog:
    return load_sites(write(tmp_path, "sites.yaml", POLAR_SITES))


JUNE = (utc(2026, 6, 1), utc(2026, 7, 1))


def site(catalog: SiteCatalog, site_id: str):
    found = next(s for s in catalog.sites if s.id == site_id)
    return found, catalog.city_of(found).zone


def test_tromso_in_june_without_polar_is_rejected_naming_site_and_date(tmp_path, polar_catalog):
    campaign = midsummer(tmp_path)  # the file itself is valid
    with pytest.raises(PolarPolicyMissing) as err:
        check_campaign(campaign, polar_catalog, *JUNE)
    message = str(err.value)
    assert "arctic-cathedral" in message
    assert "2026-06-20" in message
    assert "polar" in message


def test_tromso_in_june_with_polar_skip_has_no_window_that_night(tmp_path, polar_catalog):
    campaign = midsummer(tmp_path, polar="skip")
    check_campaign(campaign, polar_catalog, *JUNE)
    tromso, oslo = site(polar_catalog, "arctic-cathedral")
    assert occurrences(campaign, 0, tromso, oslo, *JUNE) == []
    brussels, bxl = site(polar_catalog, "manneken-pis")
    (occ,) = occurrences(campaign, 0, brussels, bxl, *JUNE)
    assert occ.end == utc(2026, 6, 20, 23)  # 01:00 CEST
    # Brussels' longest-day sunset is at about 22:00 CEST
    assert utc(2026, 6, 20, 19, 50) < occ.start < utc(2026, 6, 20, 20, 10)


def test_tromso_in_june_with_a_fallback_starts_at_the_fallback(tmp_path, polar_catalog):
    campaign = midsummer(tmp_path, polar={"fallback": "22:00"})
    check_campaign(campaign, polar_catalog, *JUNE)
    tromso, oslo = site(polar_catalog, "arctic-cathedral")
    (occ,) = occurrences(campaign, 0, tromso, oslo, *JUNE)
    assert (occ.start, occ.end) == (utc(2026, 6, 20, 20), utc(2026, 6, 20, 23))  # 22:00-01:00


def test_no_polar_key_is_fine_where_the_sun_sets(tmp_path, polar_catalog):
    # only Brussels: the policy is not needed, so not demanded
    check_campaign(midsummer(tmp_path, cities=("brussels",)), polar_catalog, *JUNE)
    # Tromsø in September has sunsets
    september = (utc(2026, 9, 1), utc(2026, 10, 1))
    check_campaign(midsummer(tmp_path, day="2026-09-15"), polar_catalog, *september)
    # Tromsø in June, but the range does not reach that night
    check_campaign(midsummer(tmp_path), polar_catalog, utc(2026, 6, 25), utc(2026, 7, 1))


# --- conflicts ---------------------------------------------------------------------------------

CONFLICT_SITES = SiteCatalog.model_validate(
    {
        "cities": [
            {"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"},
            {"id": "liege", "name": {"en": "Liège"}, "timezone": "Europe/Brussels"},
        ],
        "sites": [
            {
                "id": "manneken-pis",
                "city": "brussels",
                "name": {"en": "Manneken Pis"},
                "lat": 50.84497,
                "lon": 4.34998,
                "tags": ["fountain"],
            },
            {
                "id": "atomium",
                "city": "brussels",
                "name": {"en": "Atomium"},
                "lat": 50.8949,
                "lon": 4.3415,
            },
        ],
    }
)
JULY_30 = (utc(2026, 7, 29), utc(2026, 8, 1))


def conflict_campaign(cid, windows, priority=50, **top) -> Campaign:
    full = []
    for targets, start, end in windows:
        full.append(
            {
                "targets": targets,
                "dates": ["2026-07-30"],
                "start": {"at": start},
                "end": {"at": end},
            }
        )
    data = {"id": cid, "title": {"en": cid}, "color": "#123456", "priority": priority}
    data.update(top, windows=full)
    return Campaign.model_validate(data)


def kinds(conflicts, kind):
    return [c for c in conflicts if c.kind == kind]


def test_equal_priority_overlap_is_reported_once_with_its_span():
    a = conflict_campaign("a", [({"cities": ["brussels"]}, "20:00", "22:00")])
    b = conflict_campaign("b", [({"sites": ["manneken-pis"]}, "21:00", "23:00")])
    found = find_conflicts([a, b], CONFLICT_SITES, *JULY_30)
    assert [(c.campaign, c.site, c.start, c.end) for c in found] == [
        ("b", "manneken-pis", utc(2026, 7, 30, 19), utc(2026, 7, 30, 20))
    ]
    (conflict,) = found
    assert conflict.kind == "equal_priority_overlap"
    assert "a and b" in conflict.message and "50" in conflict.message


def test_no_overlap_report_for_other_priorities_same_campaign_or_touching_windows():
    a = conflict_campaign("a", [({"all": True}, "20:00", "22:00")], priority=50)
    higher = conflict_campaign("higher", [({"all": True}, "21:00", "23:00")], priority=60)
    both = conflict_campaign(
        "both", [({"all": True}, "20:00", "22:00"), ({"all": True}, "21:00", "23:00")]
    )
    after = conflict_campaign("after", [({"all": True}, "22:00", "23:00")])
    override = conflict_campaign(
        "override",
        [({"all": True}, "21:00", "23:00")],
        override=True,
        reason="storm",
        on=False,
        color="#000000",
    )
    assert find_conflicts([a, higher], CONFLICT_SITES, *JULY_30) == []
    assert find_conflicts([both], CONFLICT_SITES, *JULY_30) == []
    assert find_conflicts([a, after], CONFLICT_SITES, *JULY_30) == []
    assert find_conflicts([a, override], CONFLICT_SITES, *JULY_30) == []


def test_window_without_targets():
    c = conflict_campaign(
        "c", [({"all": True}, "20:00", "21:00"), ({}, "20:00", "21:00")], priority=10
    )
    found = find_conflicts([c], CONFLICT_SITES, *JULY_30)
    assert [(x.kind, x.campaign, x.window) for x in found] == [("no_targets", "c", 1)]


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ({"cities": ["bruges"]}, [("unknown_target", "city 'bruges'"), ("no_sites", "")]),
        ({"sites": ["belfry"]}, [("unknown_target", "site 'belfry'"), ("no_sites", "")]),
        ({"tags": ["bridge"]}, [("unknown_target", "tag 'bridge'"), ("no_sites", "")]),
        ({"cities": ["liege"]}, [("no_sites", "")]),  # a known city without sites
        ({"cities": ["bruges"], "tags": ["fountain"]}, [("unknown_target", "city 'bruges'")]),
        ({"sites": ["atomium"]}, []),
    ],
)
def test_targets_that_match_no_site_or_name_unknown_places(targets, expected):
    c = conflict_campaign("c", [(targets, "20:00", "21:00")])
    found = find_conflicts([c], CONFLICT_SITES, *JULY_30)
    assert [x.kind for x in found] == [kind for kind, _ in expected]
    for conflict, (_, words) in zip(found, expected, strict=True):
        assert conflict.window == 0
        assert words in conflict.message
        assert conflict.message.startswith("c windows[0]: ")


def test_windows_shorter_than_a_minute():
    c = conflict_campaign(
        "c",
        [
            ({"sites": ["atomium"]}, "21:00:00", "21:00:30"),
            ({"sites": ["atomium"]}, "22:00", "22:01"),  # exactly one minute: fine
            ({"sites": ["manneken-pis"]}, "23:00:00", "23:00:59"),
        ],
        priority=10,
    )
    found = find_conflicts([c], CONFLICT_SITES, *JULY_30)
    assert sorted((x.kind, x.window, x.site, x.start, x.end) for x in found) == [
        ("too_short", 0, "atomium", utc(2026, 7, 30, 19), utc(2026, 7, 30, 19, 0, 30)),
        ("too_short", 2, "manneken-pis", utc(2026, 7, 30, 21), utc(2026, 7, 30, 21, 0, 59)),
    ]
    messages = {x.site: x.message for x in found}
    assert messages["atomium"].startswith("c windows[0] at atomium lasts 30 s from ")
    assert messages["manneken-pis"].startswith("c windows[2] at manneken-pis lasts 59 s from ")
