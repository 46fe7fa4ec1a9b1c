from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from schedules.expand import local_to_utc
from schedules.files import ScheduleFileError, parse_document
from schedules.model import Campaign, Site
from schedules.resolve import desired_state, timeline

BXL = ZoneInfo("Europe/Brussels")
SITE = Site(id="manneken-pis", city="brussels", name={"en": "Manneken Pis"}, lat=50.8, lon=4.3)


def campaign(cid="c", start="21:30", end="01:00", dates=("2026-07-30",), priority=50, **kw):
    return Campaign.model_validate(
        {
            "id": cid,
            "title": {"en": cid},
            "color": kw.pop("color", "#009edb"),
            "priority": priority,
            "windows": [
                {
                    "targets": kw.pop("targets", {"cities": ["brussels"]}),
                    "dates": list(dates),
                    "start": {"at": start},
                    "end": {"at": end},
                }
            ],
            **kw,
        }
    )


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def test_window_crossing_midnight_ends_next_local_day():
    segs = timeline([campaign()], SITE, BXL, utc(2026, 7, 29), utc(2026, 8, 2))
    assert [(s.start, s.end) for s in segs] == [(utc(2026, 7, 30, 19, 30), utc(2026, 7, 30, 23))]
    assert segs[0].light.color == "#009EDB"


def test_spring_gap_moves_forward_by_the_gap():
    assert local_to_utc(date(2026, 3, 29), time(2, 30), BXL) == utc(2026, 3, 29, 1, 30)
    # 01:30 UTC is 03:30 CEST: the same instant as the wall time an hour after the gap
    assert local_to_utc(date(2026, 3, 29), time(3, 30), BXL) == utc(2026, 3, 29, 1, 30)


def test_autumn_overlap_takes_first_occurrence_and_fires_once():
    assert local_to_utc(date(2026, 10, 25), time(2, 30), BXL) == utc(2026, 10, 25, 0, 30)
    segs = timeline(
        [campaign(start="02:30", end="02:45", dates=("2026-10-25",))],
        SITE,
        BXL,
        utc(2026, 10, 24),
        utc(2026, 10, 26),
    )
    assert [(s.start, s.end) for s in segs] == [
        (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 0, 45))
    ]


def test_higher_priority_wins_and_newer_wins_a_tie():
    low = campaign("low", start="20:00", end="23:00", priority=10, color="#0000FF")
    high = campaign("high", start="21:00", end="22:00", priority=90, color="#FF0000")
    segs = timeline([high, low], SITE, BXL, utc(2026, 7, 30), utc(2026, 7, 31))
    assert [(s.campaign, s.start.hour, s.end.hour) for s in segs] == [
        ("low", 18, 19),
        ("high", 19, 20),
        ("low", 20, 21),
    ]
    tie = campaign("tie", start="20:00", end="23:00", priority=10, color="#00FF00")
    assert desired_state([low, tie], SITE, BXL, utc(2026, 7, 30, 19)).campaign == "tie"
    assert desired_state([tie, low], SITE, BXL, utc(2026, 7, 30, 19)).campaign == "low"


def test_desired_state_is_off_outside_windows_and_for_other_cities():
    c = campaign()
    assert desired_state([c], SITE, BXL, utc(2026, 7, 30, 19, 29, 59)) is None
    assert desired_state([c], SITE, BXL, utc(2026, 7, 30, 19, 30)).light.on
    assert desired_state([c], SITE, BXL, utc(2026, 7, 30, 23)) is None
    other = campaign(targets={"cities": ["bruges"]})
    assert desired_state([other], SITE, BXL, utc(2026, 7, 30, 20)) is None


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"color": "blue"}, "color"),
        ({"level": 101}, "level"),
        ({"surprise": 1}, "surprise"),
        (
            {
                "windows": [
                    {
                        "targets": {"all": True},
                        "dates": ["2026-07-30"],
                        "start": {"at": "25:00"},
                        "end": {"at": "01:00"},
                    }
                ]
            },
            "windows[0].start.at",
        ),
    ],
)
def test_bad_campaign_names_the_path(patch, where):
    data = campaign().model_dump(mode="json")
    data.update(patch)
    with pytest.raises(ScheduleFileError) as err:
        parse_document(Campaign, data, "c.yaml")
    assert f"c.yaml: {where}" in str(err.value)


def test_a_dumped_campaign_reads_back_the_same():
    data = {
        "id": "c",
        "title": {"en": "c"},
        "color": "#009EDB",
        "windows": [
            {
                "targets": {"all": True},
                "rrule": "FREQ=YEARLY;BYMONTH=7;BYMONTHDAY=30",
                "start": {"sun": "sunset", "offset": "-1h15m", "earliest": "20:00"},
                "end": {"at": "01:00"},
                "polar": {"fallback": "22:00"},
            },
            {
                "targets": {"tags": ["fountain"]},
                "dates": ["2026-07-30"],
                "start": {"sun": "civil_dusk"},
                "end": {"sun": "sunrise", "offset": "+30m", "latest": "06:00"},
                "polar": "skip",
            },
        ],
    }
    campaign = Campaign.model_validate(data)
    for mode in ("json", "python"):
        assert Campaign.model_validate(campaign.model_dump(mode=mode)) == campaign
    dumped = campaign.model_dump(mode="json")
    assert dumped["windows"][0]["start"] == {
        "sun": "sunset",
        "offset": "-1h15m",
        "earliest": "20:00:00",
    }
    assert dumped["windows"][1]["polar"] == "skip"
