"""Staged rollouts under /api/v1/rollouts: read them (as campaigns are read), resume a
paused one or abort one (coordinators and admins; `Action.CONTROL_ROLLOUTS`).

Resume and abort are written to the audit log as campaign entries
(`rollout-resumed`, `rollout-aborted`), with the rollout's id in the detail.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from controller.access import Action, AuditKind, Grant
from controller.rollout import RolloutState
from controller.rollouts import Progress, RolloutRefused, abort, find, progress, resume
from controller.store.audit import AuditRecord
from controller.store.rollouts import MAX_LIST
from controller.web.api import (
    AUTH_RESPONSES,
    Problem,
    Staff,
    StaffContext,
    _notify,
    audit,
    permit,
)

log = logging.getLogger(__name__)

RolloutReader = Annotated[Grant, Depends(permit(Action.READ_CAMPAIGNS))]
RolloutController = Annotated[Grant, Depends(permit(Action.CONTROL_ROLLOUTS))]
RolloutId = Annotated[int, PathParam(ge=1, le=2**62, description="the rollout's number")]

MISSING: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such rollout"}
}
REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "the rollout is not in a state to do this"}
}


class Counted(BaseModel):
    results: int
    failures: int
    percentage: float


class RolloutItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    campaign_id: str
    state: RolloutState
    started_at: datetime
    state_at: datetime
    reason: str | None
    config: dict[str, Any]
    """The campaign's `rollout:` section, as it was when the rollout started."""
    sites: int
    """How many sites the change may touch."""
    sent: int
    waves: dict[str, int]
    """Devices sent per wave (`canary`, `city:<id>`), in the order they started."""
    results: dict[str, int]
    """Of the versions sent: applied, failed, rejected, open."""
    counted: Counted
    """What the pause rule counts: results since the start or the last resume."""


class RolloutAction(BaseModel):
    rollout: RolloutItem
    restored: bool | None = None
    """After an abort: was the campaign put back as it was before the change?"""


def _item(p: Progress) -> RolloutItem:
    r = p.rollout
    return RolloutItem(
        id=r.id,
        campaign_id=r.campaign_id,
        state=r.state,
        started_at=r.started_at,
        state_at=r.state_at,
        reason=r.reason,
        config=r.config.model_dump(mode="json"),
        sites=len(r.sites),
        sent=p.sent,
        waves=p.waves,
        results=p.results,
        counted=Counted(
            results=p.counted.results,
            failures=p.counted.failures,
            percentage=round(p.counted.percentage(), 2),
        ),
    )


def _refused(exc: RolloutRefused) -> HTTPException:
    code = status.HTTP_404_NOT_FOUND if exc.missing else status.HTTP_409_CONFLICT
    return HTTPException(code, detail=str(exc))


def _record(staff: StaffContext, allowed: Grant, action: str, p: Progress, **detail: Any) -> None:
    audit(
        staff,
        AuditRecord(
            at=p.rollout.state_at,
            actor=allowed.principal.name,
            kind=AuditKind.CAMPAIGN,
            action=action,
            subject=p.rollout.campaign_id,
            detail={"rollout": p.rollout.id, **detail},
        ),
    )


def rollout_items(staff: StaffContext) -> list[RolloutItem]:
    """Staged rollouts, newest first (at most MAX_LIST): the API's list and the console's."""
    stores = staff.stores
    found = stores.rollouts.recent(MAX_LIST) if stores.rollouts is not None else []
    return [_item(progress(stores, r)) for r in found]


def resume_as(staff: StaffContext, allowed: Grant, rollout_id: int) -> Progress:
    """Resume a paused rollout and record who did (RolloutRefused when it cannot be).
    Blocking: the API and the console call it on a worker thread."""
    moved = resume(staff.stores, rollout_id, staff.clock())
    found = progress(staff.stores, moved)
    _record(staff, allowed, "rollout-resumed", found)
    log.info("rollout %d resumed by %s", rollout_id, allowed.principal.name)
    return found


def abort_as(staff: StaffContext, allowed: Grant, rollout_id: int) -> tuple[Progress, bool]:
    """Abort a running or paused rollout and record who did; whether the campaign was
    put back as it was (RolloutRefused when it cannot be). Blocking, as `resume_as`."""
    moved, restored = abort(staff.stores, rollout_id, staff.clock())
    found = progress(staff.stores, moved)
    _record(staff, allowed, "rollout-aborted", found, restored=restored)
    log.info("rollout %d aborted by %s", rollout_id, allowed.principal.name)
    return found, restored


def build_rollouts_api() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["rollouts"], responses=AUTH_RESPONSES)

    @router.get("/rollouts", response_model=list[RolloutItem])
    def list_rollouts(staff: Staff, _allowed: RolloutReader) -> list[RolloutItem]:
        """Staged rollouts, newest first (at most 500)."""
        return rollout_items(staff)

    @router.get("/rollouts/{rollout_id}", response_model=RolloutItem, responses=MISSING)
    def get_rollout(rollout_id: RolloutId, staff: Staff, _allowed: RolloutReader) -> RolloutItem:
        """One rollout: its state, why it is in it, and how far it got."""
        try:
            return _item(progress(staff.stores, find(staff.stores, rollout_id)))
        except RolloutRefused as exc:
            raise _refused(exc) from None

    @router.post(
        "/rollouts/{rollout_id}/resume",
        response_model=RolloutAction,
        responses={**MISSING, **REFUSED},
    )
    async def resume_rollout(
        rollout_id: RolloutId, staff: Staff, allowed: RolloutController
    ) -> RolloutAction:
        """Resume a paused rollout. The pause rule counts afresh from now."""
        try:
            found = await run_in_threadpool(resume_as, staff, allowed, rollout_id)
        except RolloutRefused as exc:
            raise _refused(exc) from None
        await run_in_threadpool(_notify, staff.on_change)
        return RolloutAction(rollout=_item(found))

    @router.post(
        "/rollouts/{rollout_id}/abort",
        response_model=RolloutAction,
        responses={**MISSING, **REFUSED},
    )
    async def abort_rollout(
        rollout_id: RolloutId, staff: Staff, allowed: RolloutController
    ) -> RolloutAction:
        """Abort a running or paused rollout: the campaign is put back as it was before
        the change. Devices not sent yet never get the change; those already sent get
        the campaign as it was before, as a new plan version."""

        try:
            found, restored = await run_in_threadpool(abort_as, staff, allowed, rollout_id)
        except RolloutRefused as exc:
            raise _refused(exc) from None
        await run_in_threadpool(_notify, staff.on_change)
        return RolloutAction(rollout=_item(found), restored=restored)

    return router
