"""When, in words: the phase of a campaign's night and the day words the public page uses.

Pure functions of an aware `now` and the site's zone. The words follow the local time
of day: a window that opens at 21:30 is "this evening" at 09:00 and "tonight" at 19:00,
and the count of a night that ended at 01:00 is "tonight" at 01:30 and "last night" at
09:00. Nothing here is translated: the page maps each `Relative` to its sentence.

The evening runs from `EVENING` to `NIGHT_ENDS` the next morning: the small hours
belong to the evening before (a window from 21:30 to 01:00 is one night).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

EVENING = time(17, 0)
NIGHT_ENDS = time(5, 0)
_NIGHT_SHIFT = timedelta(hours=NIGHT_ENDS.hour, minutes=NIGHT_ENDS.minute)


class Phase(StrEnum):
    BEFORE = "before"
    DURING = "during"
    AFTER = "after"


class Relative(StrEnum):
    """A day word, as the page says it of an instant seen from `now`."""

    TONIGHT = "tonight"
    """In the evening or night we are in now."""
    THIS_EVENING = "this_evening"
    """This evening, said during the day (never "tonight" at 09:00)."""
    TOMORROW_EVENING = "tomorrow_evening"
    LAST_NIGHT = "last_night"
    TODAY = "today"
    TOMORROW = "tomorrow"
    YESTERDAY = "yesterday"
    ON_DATE = "on_date"
    """Further away: the page gives the date."""


def _aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")


def is_night(local: datetime) -> bool:
    """Is this local wall time in the evening or the small hours?"""
    wall = local.time()
    return wall >= EVENING or wall < NIGHT_ENDS


def night_of(local: datetime) -> date:
    """The date of the evening a local wall time belongs to (01:00 is the evening before)."""
    return (local.replace(tzinfo=None) - _NIGHT_SHIFT).date()


def relative_day(at: datetime, now: datetime, zone: ZoneInfo) -> Relative:
    """How the page names the day of `at`, seen from `now`, in `zone`'s wall time."""
    _aware(at, "at")
    _aware(now, "now")
    when = at.astimezone(zone)
    here = now.astimezone(zone)
    today = here.date()
    if is_night(when):
        night = night_of(when)
        if is_night(here) and night_of(here) == night:
            return Relative.TONIGHT
        if night == today:
            return Relative.THIS_EVENING  # said during the day, or in the small hours
        if night == today + timedelta(days=1):
            return Relative.TOMORROW_EVENING
        if night == today - timedelta(days=1):
            return Relative.LAST_NIGHT  # said during the day after
        return Relative.ON_DATE
    day = when.date()
    if day == today:
        return Relative.TODAY
    if day == today + timedelta(days=1):
        return Relative.TOMORROW
    if day == today - timedelta(days=1):
        return Relative.YESTERDAY
    return Relative.ON_DATE


def phase_at(start: datetime, end: datetime, now: datetime) -> Phase:
    """The phase of a night that lights from `start` to `end`."""
    _aware(start, "start")
    _aware(end, "end")
    _aware(now, "now")
    if end <= start:
        raise ValueError("end must be after start")
    if now < start:
        return Phase.BEFORE
    if now < end:
        return Phase.DURING
    return Phase.AFTER


@dataclass(frozen=True)
class Countdown:
    """What is left until an instant, in whole units (seconds only under a minute)."""

    days: int
    hours: int
    minutes: int
    seconds: int


def countdown(to: datetime, now: datetime) -> Countdown:
    """Time left from `now` to `to` (zero once passed), minutes rounded up: "in 1 min"
    until the last minute, then seconds."""
    _aware(to, "to")
    _aware(now, "now")
    left = max(0, int((to - now).total_seconds() + 0.999))
    if left < 60:
        return Countdown(0, 0, 0, left)
    minutes_up = (left + 59) // 60
    days, rest = divmod(minutes_up, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return Countdown(days, hours, minutes, 0)
