"""Campaign removal in the staff API: `DELETE /api/v1/campaigns/{id}` (coordinators
and admins, by the policy in `controller/access.py`).

The campaign and its audit entry go in one transaction; the devices get new plans
without it at once. Reading and writing campaigns are in `controller/web/api.py`.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.concurrency import run_in_threadpool

from controller.access import AuditKind
from controller.auth import Principal
from controller.campaigns import delete_campaign as remove_campaign
from controller.store.audit import AuditRecord
from controller.web.api import (
    AUTH_RESPONSES,
    CampaignEditor,
    CampaignId,
    Problem,
    Staff,
    StaffContext,
    _bad_id,
    _notify,
)
from schedules.model import is_id

log = logging.getLogger(__name__)


def delete_campaign_as(staff: StaffContext, principal: Principal, campaign_id: str) -> bool:
    """Delete a stored campaign with its audit entry, in one transaction; False when
    there was none. The caller then notifies `staff.on_change`. The API and the console
    both come through here."""
    now = staff.clock()
    record = AuditRecord(
        at=now,
        actor=principal.name,
        kind=AuditKind.CAMPAIGN,
        action="deleted",
        subject=campaign_id,
    )
    return remove_campaign(staff.stores, campaign_id, now, [record])


def build_campaigns_api() -> APIRouter:
    router = APIRouter(prefix="/api/v1/campaigns", tags=["staff"], responses=AUTH_RESPONSES)

    @router.delete(
        "/{campaign_id}",
        status_code=204,
        response_class=Response,
        responses={
            204: {"description": "deleted"},
            404: {"model": Problem, "description": "no such campaign"},
        },
    )
    async def delete_campaign(
        campaign_id: CampaignId, staff: Staff, allowed: CampaignEditor
    ) -> Response:
        """Delete a campaign; its windows leave every plan at once (a staged rollout of
        it stops). The audit log keeps who deleted it and when."""
        if not is_id(campaign_id):
            return _bad_id("campaign_id", campaign_id)

        if not await run_in_threadpool(delete_campaign_as, staff, allowed.principal, campaign_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no campaign {campaign_id!r}")
        log.info("campaign %s deleted by %s", campaign_id, allowed.principal.name)
        await run_in_threadpool(_notify, staff.on_change)
        return Response(status_code=204)

    return router
