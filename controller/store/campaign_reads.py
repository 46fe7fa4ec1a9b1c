"""Campaign rows with their times, for the staff API (the reconciler reads `Store`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from controller.store.repo import Store
from controller.store.tables import CampaignRow


@dataclass(frozen=True)
class CampaignRecord:
    id: str
    body: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def _record(row: CampaignRow) -> CampaignRecord:
    return CampaignRecord(
        id=row.id, body=dict(row.body), created_at=row.created_at, updated_at=row.updated_at
    )


def campaign_records(store: Store) -> list[CampaignRecord]:
    with store.sessions() as s:
        rows = s.scalars(select(CampaignRow).order_by(CampaignRow.id))
        return [_record(row) for row in rows]


def campaign_record(store: Store, campaign_id: str) -> CampaignRecord | None:
    with store.sessions() as s:
        row = s.get(CampaignRow, campaign_id)
        return None if row is None else _record(row)
