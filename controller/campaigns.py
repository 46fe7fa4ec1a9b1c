"""Applying a campaign: validate it against the registered sites, then store it.

The CLI (`illuminate schedules apply`) and the API (`PUT /api/v1/campaigns/{id}`) both
come through here, so a campaign is checked the same way whichever door it uses, and
nothing is half-applied: a refused campaign changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from controller.store.base import Stores
from schedules.conflicts import check_campaign
from schedules.expand import PolarPolicyMissing
from schedules.model import Campaign

CHECK_AHEAD = timedelta(days=400)
"""How far ahead a campaign's occurrences are expanded to look for missing policies."""


class CampaignRejected(ValueError):
    """The campaign cannot be applied; the message says why."""


def apply_campaign(stores: Stores, campaign: Campaign, now: datetime) -> bool:
    """Check, then store the campaign (insert or replace). True when it was new."""
    catalog = stores.registry.catalog()
    try:
        check_campaign(campaign, catalog, now - timedelta(days=1), now + CHECK_AHEAD)
    except PolarPolicyMissing as exc:
        raise CampaignRejected(str(exc)) from None
    return stores.campaigns.put(campaign, now)
