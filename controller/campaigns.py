"""Applying a campaign: validate it against the registered sites, then store it.

The CLI (`illuminate schedules apply`) and the API (`PUT /api/v1/campaigns/{id}`) both
come through here, so a campaign is checked the same way whichever door it uses, and
nothing is half-applied: a refused campaign changes nothing.

A campaign with a `rollout:` section that is changed while one of its windows (as
stored before the change) is open starts a staged rollout (`controller/rollout.py`):
the rollout is stored before the campaign, so the reconciler never sees the change
without its rollout. Any other change ends the campaign's running rollout (SUPERSEDED)
and goes out at once.

The checks are bounded: the campaign's cost is counted first (`schedules.cost`), and a
`Budget` (a deadline on a monotonic clock) stops any evaluation that still runs long.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from controller.store.base import Stores
from controller.store.rollouts import NewRollout
from schedules.budget import Budget, EvaluationRefused
from schedules.conflicts import check_campaign
from schedules.cost import Limits, check_cost
from schedules.expand import PolarPolicyMissing
from schedules.model import Campaign, SiteCatalog
from schedules.rollout import is_live, touched_sites

if TYPE_CHECKING:
    from controller.store.audit import AuditRecord

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
    check_rollout(campaign, catalog)
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


def check_rollout(campaign: Campaign, catalog: SiteCatalog) -> None:
    """The sites and cities a `rollout:` section names must exist."""
    if campaign.rollout is None:
        return
    sites = {s.id for s in catalog.sites}
    for index, site in enumerate(campaign.rollout.canary_sites):
        if site not in sites:
            raise CampaignRejected(
                f"unknown site {site!r}", f"rollout.canary_sites[{index}]", campaign.id
            )
    cities = {c.id for c in catalog.cities}
    for index, city in enumerate(campaign.rollout.city_order):
        if city not in cities:
            raise CampaignRejected(
                f"unknown city {city!r}", f"rollout.city_order[{index}]", campaign.id
            )


def staged_rollout(
    previous: Campaign | None,
    campaign: Campaign,
    catalog: SiteCatalog | Callable[[], SiteCatalog],
    now: datetime,
) -> NewRollout | None:
    """The rollout this change needs: when the campaign has a `rollout:` section and a
    window of its stored version is open at `now`; else None (it goes out at once)."""
    if campaign.rollout is None or previous is None or previous == campaign:
        return None
    if callable(catalog):
        catalog = catalog()  # read only when a rollout may be needed
    if not is_live(previous, catalog, now):
        return None
    return NewRollout(
        campaign_id=campaign.id,
        config=campaign.rollout,
        body=campaign.model_dump(mode="json"),
        previous=previous.model_dump(mode="json"),
        sites=touched_sites((previous, campaign), catalog),
        at=now,
    )


def apply_campaign(
    stores: Stores,
    campaign: Campaign,
    now: datetime,
    limits: Limits | None = None,
    budget: Budget | None = None,
) -> bool:
    """Check, then store the campaign (insert or replace). True when it was new.

    During a live window, a campaign with a `rollout:` section starts a staged rollout."""
    check(stores, campaign, now, limits, budget)
    rollouts = stores.rollouts
    if rollouts is not None:
        record = stores.campaigns.record(campaign.id)
        previous = Campaign.model_validate(record.body) if record is not None else None
        rollout = staged_rollout(previous, campaign, stores.registry.catalog, now)
        if rollout is not None:
            rollouts.start(rollout)
        elif previous != campaign:
            rollouts.supersede(campaign.id, now, "the campaign was changed again")
    return stores.campaigns.put(campaign, now)


def delete_campaign(
    stores: Stores, campaign_id: str, now: datetime, audit: Sequence[AuditRecord] = ()
) -> bool:
    """Remove a stored campaign (with its audit entries); False when there was none.
    A staged rollout of it stops (SUPERSEDED): the deletion goes out at once."""
    deleted = stores.campaigns.delete(campaign_id, now, audit)
    if deleted and stores.rollouts is not None:
        stores.rollouts.supersede(campaign_id, now, "the campaign was deleted")
    return deleted
