"""What a campaign may cost to evaluate, checked before it is accepted.

Evaluating a campaign (the plans, the public page, the preview) costs about one step
per site per occurrence, so a campaign is refused, naming the window at fault, when
over the horizon checked:

- a recurrence rule never occurs (no date in `NEVER_YEARS` years from the start);
- its windows occur more than `Limits.max_occurrences` times;
- its sites times occurrences exceed `Limits.max_site_occurrences`.

Counting needs the dates of each window, not their instants, and each distinct rule is
walked once, so even a refusal at the limit is cheap; a `Budget` bounds the counting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from schedules.budget import Budget, EvaluationRefused
from schedules.model import Campaign, SiteCatalog, Targets
from schedules.recurrence import NEVER_YEARS, next_day, rule_days

MAX_OCCURRENCES = 50_000
"""Occurrences of one campaign over the horizon: 125 daily windows for 400 days."""
MAX_SITE_OCCURRENCES = 2_000_000
"""Sites times occurrences of one campaign over the horizon: 5,000 sites every day."""


@dataclass(frozen=True)
class Limits:
    max_occurrences: int = MAX_OCCURRENCES
    max_site_occurrences: int = MAX_SITE_OCCURRENCES


def _years_later(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def check_cost(
    campaign: Campaign,
    catalog: SiteCatalog,
    first: date,
    last: date,
    limits: Limits,
    budget: Budget | None = None,
) -> None:
    """Raise EvaluationRefused when the campaign's windows from local date `first` to
    `last` cost more than `limits` allow, or when one of its rules never occurs."""
    days = (last - first).days + 1
    occurrences = 0
    site_occurrences = 0
    matched: dict[Targets, int] = {}
    occurs: dict[str, bool] = {}
    rule_dates: dict[str, tuple[date, ...]] = {}
    until = _years_later(first, NEVER_YEARS)
    for index, window in enumerate(campaign.windows):
        where = f"windows[{index}]"
        rule = window.rrule
        if rule is not None:
            if budget is not None:
                budget.where = f"{where}.rrule"
            if rule not in occurs:
                occurs[rule] = next_day(rule, first, until, budget) is not None
            if not occurs[rule]:
                raise EvaluationRefused(
                    f"{where}.rrule",
                    f"rrule {window.rrule!r} never occurs: it has no date from {first} to {until}",
                )
            if rule not in rule_dates:
                rule_dates[rule] = rule_days(rule, first, last, budget)
        if budget is not None:
            budget.where = where
        found = {d for d in window.dates if first <= d <= last}
        found.update(rule_dates[rule] if rule is not None else ())
        count = len(found - set(window.exdates))
        occurrences += count
        if occurrences > limits.max_occurrences:
            raise EvaluationRefused(
                where,
                f"with this window the campaign occurs {occurrences:,} times in the "
                f"{days} days checked, more than the limit of {limits.max_occurrences:,}",
            )
        if window.targets not in matched:
            if budget is not None:
                budget.spend(1 + len(catalog.sites) // 1000)
            matched[window.targets] = sum(1 for s in catalog.sites if window.targets.matches(s))
        site_occurrences += count * matched[window.targets]
        if site_occurrences > limits.max_site_occurrences:
            raise EvaluationRefused(
                where,
                f"with this window the campaign covers {site_occurrences:,} site "
                f"occurrences (sites times occurrences) in the {days} days checked, more "
                f"than the limit of {limits.max_site_occurrences:,}",
            )
