"""GET /api/v1/audit: the audit log, newest first, for admins (every entry) and
coordinators (campaign entries only), as the policy in `controller/access.py` says."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from controller.access import Action, AuditKind, Grant
from controller.store.audit import MAX_PAGE
from controller.web.api import AUTH_RESPONSES, Staff, permit

AuditReader = Annotated[Grant, Depends(permit(Action.READ_AUDIT))]


class AuditItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    at: datetime
    actor: str
    kind: AuditKind
    action: str
    subject: str | None = None
    city: str | None = None
    detail: dict[str, Any] | None = None


class AuditPage(BaseModel):
    entries: list[AuditItem]
    next_before: int | None
    """Pass as `before` for the next (older) page; null when this page is the last."""


def build_audit_api() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["audit"], responses=AUTH_RESPONSES)

    @router.get("/audit", response_model=AuditPage)
    def read_audit(
        staff: Staff,
        allowed: AuditReader,
        kind: Annotated[AuditKind | None, Query(description="only entries of this kind")] = None,
        before: Annotated[
            int | None, Query(ge=1, le=2**62, description="only entries older than this id")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> AuditPage:
        """Who did what through the staff API, and when (UTC), newest first.

        Admins see every entry; coordinators see the campaign entries only.
        """
        kinds = allowed.audit_kinds if kind is None else allowed.audit_kinds & {kind}
        found = staff.audit.entries(kinds, before, limit) if kinds else []
        items = [
            AuditItem(
                id=e.id,
                at=e.record.at,
                actor=e.record.actor,
                kind=e.record.kind,
                action=e.record.action,
                subject=e.record.subject,
                city=e.record.city,
                detail=e.record.detail,
            )
            for e in found
        ]
        more = len(found) == limit and found[-1].id > 1
        return AuditPage(entries=items, next_before=found[-1].id if more else None)

    return router
