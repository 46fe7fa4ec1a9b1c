"""The day words and phases of the public page: pure functions of an aware `now` and the
site's zone, across the times of day and the DST days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from controller.public_when import (
    Countdown,
    Phase,
    Relative,
    countdown,
    is_night,
    night_of,
    phase_at,
    relative_day,
)

BXL = ZoneInfo("Europe/Brussels")


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BXL)  # type: ignore[misc]


WINDOW = local(2026, 7, 30, 21, 30)  # a Blue Heart evening


@pytest.mark.parametrize(
    ("now", "word"),
    [
        (local(2026, 7, 29, 9, 0), Relative.TOMORROW_EVENING),
        (local(2026, 7, 29, 22, 0), Relative.TOMORROW_EVENING),  # the evening before
        (local(2026, 7, 30, 0, 30), Relative.THIS_EVENING),  # the small hours before
        (local(2026, 7, 30, 9, 0), Relative.THIS_EVENING),  # never "tonight" at 09:00
        (local(2026, 7, 30, 16, 59), Relative.THIS_EVENING),
        (local(2026, 7, 30, 17, 0), Relative.TONIGHT),
        (local(2026, 7, 30, 21, 29), Relative.TONIGHT),
        (local(2026, 7, 30, 23, 0), Relative.TONIGHT),  # during
        (local(2026, 7, 31, 1, 30), Relative.TONIGHT),  # after it ended at 01:00
        (local(2026, 7, 31, 4, 59), Relative.TONIGHT),
        (local(2026, 7, 31, 5, 0), Relative.LAST_NIGHT),
        (local(2026, 7, 31, 9, 0), Relative.LAST_NIGHT),
        (local(2026, 7, 31, 18, 0), Relative.LAST_NIGHT),
        (local(2026, 8, 1, 9, 0), Relative.ON_DATE),
        (local(2026, 7, 27, 12, 0), Relative.ON_DATE),
        (local(2026, 8, 2, 12, 0), Relative.ON_DATE),
    ],
)
def test_an_evening_window_is_named_by_the_time_of_day(now: datetime, word: Relative) -> None:
    assert relative_day(WINDOW, now, BXL) is word


def test_the_words_follow_the_site_zone_not_utc() -> None:
    # 09:00 in Brussels is 07:00 UTC; 21:30 is 19:30 UTC: still "this evening"
    now = datetime(2026, 7, 30, 7, 0, tzinfo=UTC)
    assert relative_day(WINDOW.astimezone(UTC), now, BXL) is Relative.THIS_EVENING
    # at 09:00 UTC it is 11:00 in Brussels ("this evening"), and 18:00 in Tokyo, where
    # the window falls at 04:30 the next morning: the small hours of "tonight"
    now = datetime(2026, 7, 30, 9, 0, tzinfo=UTC)
    assert relative_day(WINDOW, now, BXL) is Relative.THIS_EVENING
    assert relative_day(WINDOW, now, ZoneInfo("Asia/Tokyo")) is Relative.TONIGHT


@pytest.mark.parametrize(
    ("at", "now", "word"),
    [
        (local(2026, 7, 30, 10, 0), local(2026, 7, 30, 9, 0), Relative.TODAY),
        (local(2026, 7, 30, 10, 0), local(2026, 7, 29, 20, 0), Relative.TOMORROW),
        (local(2026, 7, 30, 10, 0), local(2026, 7, 31, 9, 0), Relative.YESTERDAY),
        (local(2026, 7, 30, 10, 0), local(2026, 8, 5, 9, 0), Relative.ON_DATE),
    ],
)
def test_a_day_window_is_today_tomorrow_or_yesterday(
    at: datetime, now: datetime, word: Relative
) -> None:
    assert relative_day(at, now, BXL) is word


@pytest.mark.parametrize(
    ("at", "now", "word"),
    [
        # 29 March 2026: clocks go from 02:00 to 03:00 (a 23-hour day)
        (local(2026, 3, 29, 20, 0), local(2026, 3, 29, 9, 0), Relative.THIS_EVENING),
        (local(2026, 3, 29, 20, 0), local(2026, 3, 29, 3, 30), Relative.THIS_EVENING),
        (local(2026, 3, 28, 22, 0), local(2026, 3, 29, 3, 30), Relative.TONIGHT),
        (local(2026, 3, 28, 22, 0), local(2026, 3, 29, 5, 0), Relative.LAST_NIGHT),
        # 25 October 2026: clocks go from 03:00 back to 02:00 (a 25-hour day)
        (local(2026, 10, 24, 22, 0), local(2026, 10, 25, 2, 30), Relative.TONIGHT),
        (
            local(2026, 10, 24, 22, 0),
            local(2026, 10, 25, 2, 30).replace(fold=1),
            Relative.TONIGHT,
        ),
        (local(2026, 10, 24, 22, 0), local(2026, 10, 25, 9, 0), Relative.LAST_NIGHT),
        (local(2026, 10, 25, 19, 0), local(2026, 10, 25, 9, 0), Relative.THIS_EVENING),
    ],
)
def test_the_dst_days_keep_the_words_of_the_wall_clock(
    at: datetime, now: datetime, word: Relative
) -> None:
    assert relative_day(at, now, BXL) is word


def test_night_of_and_is_night_use_the_wall_clock() -> None:
    assert night_of(local(2026, 7, 31, 0, 59)).isoformat() == "2026-07-30"
    assert night_of(local(2026, 7, 31, 5, 0)).isoformat() == "2026-07-31"
    assert is_night(local(2026, 7, 30, 17, 0)) and is_night(local(2026, 7, 31, 4, 59))
    assert not is_night(local(2026, 7, 30, 9, 0))
    # the hour repeated on 25 October is the same night, both times
    first = local(2026, 10, 25, 2, 30)
    assert night_of(first) == night_of(first.replace(fold=1))


def test_phases() -> None:
    end = WINDOW + timedelta(hours=3, minutes=30)
    assert phase_at(WINDOW, end, WINDOW - timedelta(seconds=1)) is Phase.BEFORE
    assert phase_at(WINDOW, end, WINDOW) is Phase.DURING
    assert phase_at(WINDOW, end, end - timedelta(microseconds=1)) is Phase.DURING
    assert phase_at(WINDOW, end, end) is Phase.AFTER
    with pytest.raises(ValueError, match="end must be after start"):
        phase_at(end, WINDOW, WINDOW)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        relative_day(WINDOW, datetime(2026, 7, 30, 9, 0), BXL)
    with pytest.raises(ValueError, match="at must be an aware datetime"):
        relative_day(datetime(2026, 7, 30, 9, 0), WINDOW, BXL)


@pytest.mark.parametrize(
    ("left", "expected"),
    [
        (timedelta(0), Countdown(0, 0, 0, 0)),
        (timedelta(seconds=-5), Countdown(0, 0, 0, 0)),
        (timedelta(seconds=0.2), Countdown(0, 0, 0, 1)),
        (timedelta(seconds=59), Countdown(0, 0, 0, 59)),
        (timedelta(seconds=60), Countdown(0, 0, 1, 0)),
        (timedelta(seconds=61), Countdown(0, 0, 2, 0)),  # minutes round up
        (timedelta(hours=2, minutes=30), Countdown(0, 2, 30, 0)),
        (timedelta(days=1, hours=2, minutes=1), Countdown(1, 2, 1, 0)),
    ],
)
def test_countdown(left: timedelta, expected: Countdown) -> None:
    assert countdown(WINDOW, WINDOW - left) == expected
