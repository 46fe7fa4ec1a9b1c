"""Recurrence rules (an iCalendar RRULE) as windows use them: local dates, bounded cost.

A rule is read by dateutil and checked for what would make it cost without bound:

- `INTERVAL` is 1 to `MAX_INTERVAL` (0 never advances, and a negative one runs back);
- it repeats at most daily, and names no times (`BYHOUR`, `BYMINUTE`, `BYSECOND`): a
  window takes its times from `start` and `end`, so a rule only picks dates;
- one rule, with an optional naive `DTSTART` between `EARLIEST_START` and
  `LATEST_START` (extra and removed dates go in the window's `dates` and `exdates`).

Even so, dateutil looks for the next date by walking period after period, and a rule
that has no date at all (30 February) walks to the year 9999 without yielding. So every
expansion here runs on a counted walk: dateutil builds its month (or year) tables once
per period it enters, each entered period is a step, and since each such step is at a
later month than the last, the walk stops as soon as it has passed the last date asked
for. A `Budget` (steps and a deadline) can cap it further.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from dateutil.rrule import DAILY, WEEKLY, YEARLY, rrule, rrulestr

from schedules.budget import Budget

MAX_RULE_CHARS = 500
MAX_INTERVAL = 1000
EARLIEST_START = date(1970, 1, 1)
LATEST_START = date(2100, 12, 31)
NEVER_YEARS = 100
"""A rule with no date in this many years from now is refused as one that never occurs."""
FORBIDDEN_PARTS = {
    "BYHOUR": "windows take their times from 'start' and 'end'",
    "BYMINUTE": "windows take their times from 'start' and 'end'",
    "BYSECOND": "windows take their times from 'start' and 'end'",
    "BYEASTER": "it is not part of iCalendar",
}

RRULE_ANCHOR = datetime(2000, 1, 1)  # noqa: DTZ001 - a naive local calendar anchor
"""DTSTART of an rrule that names none: the rule counts local dates from 1 January 2000."""


def _parts(text: str) -> tuple[list[str], dict[str, str]]:
    """The property names of the lines, and the NAME=VALUE parts of the rule line."""
    names: list[str] = []
    rule: dict[str, str] = {}
    for line in text.upper().splitlines():
        line = line.strip()
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            name, value = "RRULE", line
        name = name.split(";", 1)[0].strip()
        names.append(name)
        if name == "RRULE":
            for part in value.split(";"):
                key, _, val = part.partition("=")
                rule[key.strip()] = val.strip()
    return names, rule


def check_rule(text: str) -> str:
    """The rule, stripped, if it can be used; ValueError saying why not."""
    text = text.strip()
    if len(text) > MAX_RULE_CHARS:
        raise ValueError(f"rrule is longer than {MAX_RULE_CHARS} characters")
    if "FREQ=" not in text.upper():
        raise ValueError(
            f"rrule needs FREQ=..., e.g. FREQ=YEARLY;BYMONTH=7;BYMONTHDAY=30: {text!r}"
        )
    names, parts = _parts(text)
    extra = [n for n in names if n not in ("RRULE", "DTSTART")]
    if extra or names.count("RRULE") != 1 or names.count("DTSTART") > 1:
        raise ValueError(
            f"rrule {text!r}: give one RRULE and at most one DTSTART; list extra dates in "
            "'dates' and removed ones in 'exdates'"
        )
    for key, why in FORBIDDEN_PARTS.items():
        if key in parts:
            raise ValueError(f"rrule {text!r} may not use {key}: {why}")
    interval = parts.get("INTERVAL")
    if interval is not None and interval.lstrip("+-").isdigit():
        if int(interval) < 1:
            raise ValueError(
                f"rrule {text!r} never advances: INTERVAL must be at least 1, not {interval}"
            )
        if int(interval) > MAX_INTERVAL:
            raise ValueError(f"rrule {text!r}: INTERVAL may be at most {MAX_INTERVAL}")
    try:
        rule = rrulestr(text, dtstart=RRULE_ANCHOR)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"rrule {text!r} is not valid: {exc}") from None
    if not isinstance(rule, rrule):
        raise ValueError(f"rrule {text!r}: give one rule")
    if vars(rule)["_freq"] > DAILY:
        raise ValueError(f"rrule {text!r} repeats more often than daily; windows are per date")
    start = vars(rule)["_dtstart"]
    if start is None or start.tzinfo is not None:
        raise ValueError(f"rrule {text!r}: DTSTART must be a local date, without a time zone")
    if not EARLIEST_START <= start.date() <= LATEST_START:
        raise ValueError(
            f"rrule {text!r}: DTSTART must be between {EARLIEST_START} and {LATEST_START}"
        )
    return text


@lru_cache(maxsize=1024)
def _parsed(text: str) -> rrule:
    rule = rrulestr(check_rule(text), dtstart=RRULE_ANCHOR)
    assert isinstance(rule, rrule)
    return rule


class _PastTheEnd(Exception):
    """The walk has entered a month after the last date asked for."""


class _Steps:
    def __init__(self, limit: int, budget: Budget | None) -> None:
        self.limit = limit
        self.budget = budget
        self.taken = 0

    def step(self) -> None:
        self.taken += 1
        if self.taken > self.limit:
            raise _PastTheEnd
        if self.budget is not None:
            self.budget.spend()


class _CountedRule(rrule):
    """An rrule whose walk reports every period it enters.

    dateutil reads `_byeaster` once as the walk starts and once each time it builds the
    tables of a new period (`_iterinfo.rebuild`: every period of a YEARLY or MONTHLY
    rule, every change of month of a WEEKLY or DAILY one). Each of those is a step, at a
    later month than the one before. The test suite holds dateutil to this.
    """

    _steps: _Steps

    @property
    def _byeaster(self) -> Any:
        self.__dict__["_steps"].step()
        return self.__dict__["_counted_byeaster"]

    @_byeaster.setter
    def _byeaster(self, value: Any) -> None:
        self.__dict__["_counted_byeaster"] = value


def _counted(rule: rrule, steps: _Steps) -> _CountedRule:
    counted = object.__new__(_CountedRule)
    state = dict(rule.__dict__)
    state["_counted_byeaster"] = state.pop("_byeaster")
    state["_steps"] = steps
    state["_cache"] = None
    state["_cache_complete"] = False
    counted.__dict__.update(state)
    return counted


def _months(start: date, end: date) -> int:
    return (end.year - start.year) * 12 + end.month - start.month


def _moved_near(rule: rrule, first: date) -> rrule:
    """The same rule with its DTSTART moved forward by whole periods, to two periods or
    more before `first`, so the walk need not start in 2000. Dates from two periods
    before `first` on are unchanged: a period is the same wherever it falls, and the
    defaults dateutil takes from DTSTART (the weekday of a WEEKLY rule, the day of a
    MONTHLY one, the day and month of a YEARLY one) stay as they were. A rule with a
    COUNT counts from its DTSTART, and one starting after the 28th may not land on a
    date that exists: those are not moved."""
    attrs = vars(rule)
    start: datetime = attrs["_dtstart"]
    freq, interval = attrs["_freq"], attrs["_interval"]
    if attrs["_count"] is not None:
        return rule
    if freq in (DAILY, WEEKLY):
        period = timedelta(days=interval * (7 if freq == WEEKLY else 1))
        target = datetime.combine(first, start.time()) - 2 * period
        if target <= start:
            return rule
        return rule.replace(dtstart=start + (target - start) // period * period)
    if start.day > 28:
        return rule
    period_months = interval * (12 if freq == YEARLY else 1)
    ahead = _months(start.date(), first) - 2 * period_months
    if ahead <= 0:
        return rule
    months = start.month - 1 + ahead // period_months * period_months
    return rule.replace(
        dtstart=start.replace(year=start.year + months // 12, month=months % 12 + 1)
    )


def _walk(
    text: str, first: date, last: date, budget: Budget | None, stop_at_first: bool
) -> Iterator[date]:
    rule = _moved_near(_parsed(text), first)
    start = vars(rule)["_dtstart"].date()
    # steps: one as the walk starts, one per period entered, each at a later month; a
    # YEARLY period is a whole year, so count its months from January
    if vars(rule)["_freq"] == YEARLY:
        start = date(start.year, 1, 1)
    limit = _months(start, last) + 2
    if limit < 2:
        return
    steps = _Steps(limit, budget)
    try:
        for instant in _counted(rule, steps):
            day = instant.date()
            if day > last:
                return
            if budget is not None:
                budget.spend()
            if day >= first:
                yield day
                if stop_at_first:
                    return
    except _PastTheEnd:
        return


def rule_days(text: str, first: date, last: date, budget: Budget | None = None) -> tuple[date, ...]:
    """The local dates of the rule from `first` to `last` inclusive."""
    if budget is None:
        return _rule_days(text, first, last)
    return tuple(sorted(set(_walk(text, first, last, budget, stop_at_first=False))))


@lru_cache(maxsize=4096)
def _rule_days(text: str, first: date, last: date) -> tuple[date, ...]:
    return tuple(sorted(set(_walk(text, first, last, None, stop_at_first=False))))


def next_day(text: str, after: date, last: date, budget: Budget | None = None) -> date | None:
    """The rule's first date from `after` to `last`, or None."""
    return next(_walk(text, after, last, budget, stop_at_first=True), None)
