"""The evaluation deadline of a campaign check bounds the evaluation, not the reads."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controller.campaigns import CampaignRejected, check
from controller.store.memory import memory_stores
from schedules.budget import Budget
from schedules.model import Campaign, SiteCatalog

NOW = datetime(2026, 7, 30, 12, 0, tzinfo=UTC)
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [{"id": "bxl", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"}],
        "sites": [{"id": "s0", "city": "bxl", "name": {"en": "S0"}, "lat": 50.8, "lon": 4.3}],
    }
)
CAMPAIGN = Campaign.model_validate(
    {
        "id": "blue",
        "title": {"en": "Blue"},
        "color": "#009edb",
        "level": 80,
        "windows": [
            {
                "targets": {"all": True},
                "dates": ["2026-07-30"],
                "start": {"at": "21:00"},
                "end": {"at": "23:00"},
            }
        ],
    }
)


class SlowCatalog:
    """A registry whose catalog read takes `seconds` of the fake monotonic clock."""

    def __init__(self, inner, clock: list[float], seconds: float) -> None:
        self.inner, self.clock, self.seconds = inner, clock, seconds

    def catalog(self) -> SiteCatalog:
        self.clock[0] += self.seconds
        return self.inner.catalog()


def stores_reading_for(clock: list[float], seconds: float):
    stores = memory_stores()
    stores.registry.import_catalog(CATALOG)
    return replace(stores, registry=SlowCatalog(stores.registry, clock, seconds))


def test_a_slow_read_of_the_sites_does_not_spend_the_deadline() -> None:
    clock = [0.0]
    stores = stores_reading_for(clock, seconds=10.0)
    check(stores, CAMPAIGN, NOW, budget=Budget(lambda: clock[0], seconds=2.0))


def test_an_evaluation_past_the_deadline_is_refused() -> None:
    clock = [0.0]
    stores = memory_stores()
    stores.registry.import_catalog(CATALOG)
    budget = Budget(lambda: clock[0], seconds=2.0)

    def restart_then_late() -> None:
        Budget.restart(budget)
        clock[0] += 3.0  # the evaluation itself takes too long

    budget.restart = restart_then_late  # type: ignore[method-assign]
    with pytest.raises(CampaignRejected, match="longer than 2 s"):
        check(stores, CAMPAIGN, NOW, budget=budget)
