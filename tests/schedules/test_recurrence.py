"""Recurrence rules: refused when they never advance or name times; walks that stop.

No test here is timed: the walks are bounded by counting their steps (a `Budget` with a
step cap, a monotonic seam that moves one second per reading).
"""

from __future__ import annotations

from datetime import date, datetime, time
from itertools import count

import pytest
from dateutil.rrule import rrulestr

from schedules.budget import Budget, EvaluationRefused
from schedules.files import ScheduleFileError, parse_document
from schedules.model import Campaign
from schedules.recurrence import RRULE_ANCHOR, check_rule, next_day, rule_days

NEVER = "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"


def _no_clock() -> float:
    return 0.0


def _campaign(rrule: str) -> dict[str, object]:
    return {
        "id": "blue-heart",
        "title": {"en": "Blue Heart"},
        "color": "#009EDB",
        "windows": [
            {
                "targets": {"all": True},
                "rrule": rrule,
                "start": {"at": "21:00"},
                "end": {"at": "23:00"},
            }
        ],
    }


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ("FREQ=DAILY;INTERVAL=0", ["never advances", "INTERVAL"]),
        ("FREQ=WEEKLY;INTERVAL=-1", ["never advances"]),
        ("FREQ=YEARLY;INTERVAL=1001", ["INTERVAL may be at most 1000"]),
        ("FREQ=DAILY;BYHOUR=0,1,2,3", ["BYHOUR", "'start' and 'end'"]),
        ("FREQ=DAILY;BYMINUTE=1", ["BYMINUTE"]),
        ("FREQ=DAILY;BYSECOND=1", ["BYSECOND"]),
        ("FREQ=YEARLY;BYEASTER=0", ["BYEASTER"]),
        ("RRULE:FREQ=DAILY\nRRULE:FREQ=WEEKLY", ["one RRULE"]),
        ("RRULE:FREQ=DAILY\nRDATE:20260730", ["one RRULE", "'dates'"]),
        ("DTSTART;TZID=Europe/Brussels:20260101T000000\nRRULE:FREQ=DAILY", ["time zone"]),
        ("DTSTART:00010101T000000\nRRULE:FREQ=DAILY", ["DTSTART must be between"]),
        ("FREQ=HOURLY", ["more often than daily"]),
    ],
)
def test_rules_that_cannot_be_bounded_are_refused_naming_the_field(
    rule: str, words: list[str]
) -> None:
    with pytest.raises(ScheduleFileError) as exc:
        parse_document(Campaign, _campaign(rule), "campaigns/blue-heart.yaml")
    message = str(exc.value)
    assert message.startswith("campaigns/blue-heart.yaml: windows[0].rrule: ")
    for word in words:
        assert word in message


def test_usable_rules_pass() -> None:
    for rule in (
        "FREQ=YEARLY;BYMONTH=7;BYMONTHDAY=30",
        "DTSTART:20260301\nRRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=FR",
        "FREQ=MONTHLY;BYDAY=-1FR;COUNT=12",
    ):
        assert check_rule(rule) == rule


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=DAILY",
        "FREQ=DAILY;INTERVAL=3;COUNT=50",
        "FREQ=WEEKLY;BYDAY=MO,SU",
        "FREQ=WEEKLY;INTERVAL=2;WKST=SU;BYDAY=SA,SU",
        "FREQ=MONTHLY;BYDAY=-1FR",
        "FREQ=MONTHLY;BYMONTHDAY=31",
        "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO",
        "FREQ=YEARLY;BYSETPOS=-1;BYMONTH=3;BYDAY=SU",
        "FREQ=YEARLY;BYYEARDAY=1,-1",
        "DTSTART:20000701\nRRULE:FREQ=YEARLY",
        "DTSTART:20250301\nRRULE:FREQ=WEEKLY;INTERVAL=2",
        "FREQ=DAILY;UNTIL=20260215",
        "FREQ=DAILY;INTERVAL=7",
        "FREQ=WEEKLY;INTERVAL=3;BYDAY=MO,FR",
        "FREQ=MONTHLY;INTERVAL=5;BYDAY=2TU",
        "FREQ=MONTHLY;INTERVAL=2",
        "DTSTART:20000115\nRRULE:FREQ=MONTHLY",
        "DTSTART:20000131\nRRULE:FREQ=MONTHLY",
        "FREQ=YEARLY;INTERVAL=3",
        "FREQ=YEARLY;INTERVAL=4;BYMONTH=2;BYMONTHDAY=29",
        "DTSTART:20000229\nRRULE:FREQ=YEARLY",
        "DTSTART:20000315\nRRULE:FREQ=YEARLY;BYWEEKNO=1,53;BYDAY=TH",
    ],
)
@pytest.mark.parametrize(
    ("first", "last"),
    [
        (date(2026, 1, 1), date(2027, 2, 1)),
        (date(2000, 1, 1), date(2000, 3, 1)),
        (date(2026, 2, 26), date(2026, 3, 2)),
        (date(2025, 12, 29), date(2026, 1, 4)),
        (date(2032, 2, 1), date(2033, 3, 31)),
    ],
)
def test_the_counted_walk_finds_what_dateutil_finds(rule: str, first: date, last: date) -> None:
    expected = rrulestr(rule, dtstart=RRULE_ANCHOR).between(
        datetime.combine(first, time()), datetime.combine(last, time()), inc=True
    )
    assert list(rule_days(rule, first, last)) == sorted({d.date() for d in expected})


def test_a_rule_that_never_occurs_stops_past_the_range() -> None:
    # dateutil alone walks day by day to the year 9999 (2.9 million days) looking for a
    # 30 February; the counted walk starts near the range and stops once past it: one
    # step per month
    budget = Budget(_no_clock, steps=400)
    assert rule_days(NEVER, date(2026, 1, 1), date(2026, 12, 31), budget) == ()
    assert 12 <= budget.spent <= 16  # the steps were counted, so the walk was watched
    assert next_day(NEVER, date(2026, 1, 1), date(2126, 1, 1)) is None


def test_a_rule_that_occurs_is_found_years_ahead() -> None:
    friday_29_february = "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=FR"
    assert next_day(friday_29_february, date(2026, 5, 9), date(2126, 5, 9)) == date(2036, 2, 29)
    assert rule_days(friday_29_february, date(2026, 1, 1), date(2027, 1, 1)) == ()


def test_the_step_cap_stops_a_walk_and_names_the_field() -> None:
    budget = Budget(_no_clock, steps=50)
    budget.where = "windows[2].rrule"
    with pytest.raises(EvaluationRefused) as exc:
        rule_days("FREQ=DAILY", date(2026, 1, 1), date(2026, 12, 31), budget)
    assert exc.value.path == "windows[2].rrule"
    assert "more than 50 steps" in exc.value.message
    assert budget.spent == 51


def test_the_deadline_stops_a_walk_on_the_monotonic_seam() -> None:
    readings = count()  # one second per reading
    budget = Budget(lambda: float(next(readings)), seconds=10)
    with pytest.raises(EvaluationRefused) as exc:
        rule_days(NEVER, date(2026, 1, 1), date(2026, 12, 31), budget)
    assert "longer than 10 s" in exc.value.message
    assert budget.spent == 11  # the reading at creation, then one per step
