"""Applying a campaign: validate it against the registered sites, then store it.

The CLI (`illuminate schedules apply`) and the API (`PUT /api/v1/campaigns/{id}`) both
come through here, so a campaign is checked the same way whichever door it uses, and
nothing is half-applied: a refused campaign changes nothing.

The checks are bounded: the campaign's cost is counted first (`schedules.cost`), and a
`Budget` (a deadline on a monotonic clock) stops any evaluation that still runs long.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from controller.store.base import Stores
from schedules.budget import Budget, EvaluationRefused
from schedules.conflicts import check_campaign
from schedules.cost import Limits, check_cost
from schedules.expand import PolarPolicyMissing
from schedules.model import Campaign

CHECK_AHEAD = timedelta(days=400)
"""How far ahead a campaign's occurrences are expanded to look for missing policies."""
TOP = "(top)"
EVALUATION_S = 5.0
"""How long checking one campaign sent to the API may take (`limits.evaluation_s`)."""


class CampaignRejected(ValueError):
    """The campaign cannot be applied. `path` names the field at fault (or `(top)`),
    `message` says why; `str()` gives both, after the campaign's id when known."""

    def __init__(self, message: str, path: str = TOP, campaign: str | None = None) -> None:
        where = f"campaign {campaign}: " if campaign else ""
        super().__init__(f"{where}{path}: {message}" if path != TOP else f"{where}{message}")
        self.path = path
        self.message = message


def check(
    stores: Stores,
    campaign: Campaign,
    now: datetime,
    limits: Limits | None = None,
    budget: Budget | None = None,
) -> None:
    """Raise CampaignRejected unless the campaign can be applied as it is."""
    catalog = stores.registry.catalog()
    if budget is not None:
        budget.restart()  # the deadline bounds the evaluation, not reading 10,000 sites
    start, end = now - timedelta(days=1), now + CHECK_AHEAD
    try:
        check_cost(campaign, catalog, start.date(), end.date(), limits or Limits(), budget)
        if budget is not None:
            budget.where = TOP
        check_campaign(campaign, catalog, start, end, budget)
    except EvaluationRefused as exc:
        raise CampaignRejected(exc.message, exc.path, campaign.id) from None
    except PolarPolicyMissing as exc:
        raise CampaignRejected(str(exc)) from None


def apply_campaign(
    stores: Stores,
    campaign: Campaign,
    now: datetime,
    limits: Limits | None = None,
    budget: Budget | None = None,
) -> bool:
    """Check, then store the campaign (insert or replace). True when it was new."""
    check(stores, campaign, now, limits, budget)
    return stores.campaigns.put(campaign, now)
