"""What a campaign may cost: refusals that name the window, counted without instants."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from schedules.budget import Budget, EvaluationRefused
from schedules.conflicts import check_campaign, event_is_certain
from schedules.cost import Limits, check_cost
from schedules.expand import PolarPolicyMissing
from schedules.model import Campaign, SiteCatalog
from schedules.solar import SunEvent

FIRST, LAST = date(2026, 5, 8), date(2027, 6, 12)


def _catalog(sites: int = 3, lat: float = 50.85, lon: float = 4.35) -> SiteCatalog:
    return SiteCatalog.model_validate(
        {
            "cities": [{"id": "here", "name": {"en": "Here"}, "timezone": "Europe/Brussels"}],
            "sites": [
                {"id": f"s{i}", "city": "here", "name": {"en": f"S{i}"}, "lat": lat, "lon": lon}
                for i in range(sites)
            ],
        }
    )


def _window(**changes: Any) -> dict[str, Any]:
    window: dict[str, Any] = {
        "targets": {"all": True},
        "rrule": "FREQ=DAILY",
        "start": {"at": "21:00"},
        "end": {"at": "23:00"},
    }
    window.update(changes)
    return window


def _campaign(*windows: dict[str, Any]) -> Campaign:
    return Campaign.model_validate(
        {"id": "blue-heart", "title": {"en": "Blue"}, "color": "#009EDB", "windows": windows}
    )


def _refusal(campaign: Campaign, limits: Limits | None = None, **kw: Any) -> EvaluationRefused:
    with pytest.raises(EvaluationRefused) as exc:
        catalog = kw.get("catalog", _catalog())
        check_cost(campaign, catalog, FIRST, LAST, limits or Limits(), kw.get("budget"))
    return exc.value


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
        "FREQ=DAILY;BYMONTH=4;BYMONTHDAY=31",
        "FREQ=WEEKLY;BYDAY=MO;BYMONTH=2;BYMONTHDAY=30",
        "FREQ=DAILY;UNTIL=20200101",
        "FREQ=DAILY;COUNT=3",
    ],
)
def test_a_rule_that_never_occurs_is_refused(rule: str) -> None:
    refusal = _refusal(_campaign(_window(), _window(rrule=rule)))
    assert refusal.path == "windows[1].rrule"
    assert f"rrule {rule!r} never occurs" in refusal.message
    assert "2026-05-08" in refusal.message


def test_a_rare_rule_is_kept() -> None:
    leap_day = _campaign(_window(rrule="FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29"))
    check_cost(leap_day, _catalog(), FIRST, LAST, Limits())  # next one in 2028


def test_too_many_occurrences_names_the_window_that_crosses_the_limit() -> None:
    campaign = _campaign(*[_window() for _ in range(5)])
    refusal = _refusal(campaign, Limits(max_occurrences=1000))
    assert refusal.path == "windows[2]"
    assert "occurs 1,203 times in the 401 days checked" in refusal.message
    assert "limit of 1,000" in refusal.message


def test_too_many_site_occurrences_is_refused() -> None:
    refusal = _refusal(_campaign(_window()), Limits(max_site_occurrences=1000))
    assert refusal.path == "windows[0]"
    assert "1,203 site occurrences (sites times occurrences)" in refusal.message


def test_the_default_limits_refuse_a_huge_expansion_at_once() -> None:
    # 1,000 daily windows over 10,000 sites would be 4 billion site occurrences
    campaign = _campaign(*[_window() for _ in range(1000)])
    budget = Budget(lambda: 0.0, steps=100_000)
    refusal = _refusal(campaign, catalog=_catalog(10_000), budget=budget)
    assert refusal.path == "windows[0]"
    assert "site occurrences" in refusal.message
    assert budget.spent < 50_000  # dates counted once, no instants at 10,000 sites


def test_solar_events_are_certain_only_where_they_must_happen() -> None:
    brussels = _catalog().sites[0]
    zone = _catalog().cities[0].zone
    assert event_is_certain(SunEvent.SUNSET, brussels, zone, 2026)
    assert not event_is_certain(SunEvent.NAUTICAL_DUSK, brussels, zone, 2026)
    tromso = _catalog(lat=69.65, lon=18.96).sites[0]
    assert not event_is_certain(SunEvent.SUNSET, tromso, zone, 2026)
    far_from_its_zone = _catalog(lon=-60.0).sites[0]
    assert not event_is_certain(SunEvent.SUNSET, far_from_its_zone, zone, 2026)


def test_the_polar_check_still_refuses_where_an_event_can_fail() -> None:
    campaign = _campaign(_window(start={"sun": "sunset"}))
    start, end = datetime(2026, 5, 8, tzinfo=UTC), datetime(2027, 6, 12, tzinfo=UTC)
    check_campaign(campaign, _catalog(), start, end)
    with pytest.raises(PolarPolicyMissing):
        check_campaign(campaign, _catalog(lat=69.65, lon=18.96), start, end)
