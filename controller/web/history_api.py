"""The record of what was lit, for staff (docs/record.md):

- `GET /api/v1/devices/{device_id}/history`: a device's windows with their verdicts,
  every step it reported applying and its status changes, and the controller's down
  periods, over a span of time (technicians: devices of their own cities).
- `GET /api/v1/campaigns/{campaign_id}/outcome`: a campaign's outcome per site, from
  the stored window outcomes, so it is there after the campaign has ended or changed
  (coordinators and admins).

`build_web` puts the history store in `app.state.history` and includes this router.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from controller.access import Action, Grant
from controller.store.history import DeviceEvent, HistoryStore, Verdict, WindowRecord
from controller.web.api import (
    AUTH_RESPONSES,
    CampaignReader,
    ErrorItem,
    IdParam,
    Problem,
    Staff,
    StaffContext,
    _bad_id,
    _invalid,
    in_scope,
    permit,
)
from controller.windows import SEVERITY, down_periods, worst
from schedules.model import is_id

DEFAULT_SPAN = timedelta(days=7)
MAX_SPAN = timedelta(days=366)
DEFAULT_EVENTS = 500
MAX_EVENTS = 5000

DeviceReader = Annotated[Grant, Depends(permit(Action.READ_DEVICES))]


def history_store(request: Request) -> HistoryStore:
    found = getattr(request.app.state, "history", None)
    if found is None:
        raise RuntimeError("the record is not installed: set app.state.history")
    return found  # type: ignore[no-any-return]


History = Annotated[HistoryStore, Depends(history_store)]


class WindowOut(BaseModel):
    campaign: str
    start: datetime
    end: datetime
    state: dict[str, Any]
    outcome: Verdict
    confirmed_at: datetime | None = None
    """The device's own time of applying the window's opening step."""
    reported_at: datetime | None = None
    """When that report reached the controller."""


class EventOut(BaseModel):
    kind: str
    at: datetime
    """When the controller received it."""
    version: int | None = None
    step_at: datetime | None = None
    applied_at: datetime | None = None
    state: dict[str, Any] | None = None
    source: str | None = None
    confirmed_by: str | None = None
    """A step: how it was confirmed (`echo`, `readback` or `sensor`)."""
    reading: dict[str, Any] | None = None
    """What the device's light sensor saw (colour, level, raw counts), when it has one."""
    reason: str | None = None
    """A `mismatch`: why the sensor's reading does not confirm the step."""


class DownPeriod(BaseModel):
    start: datetime
    end: datetime


class DeviceHistory(BaseModel):
    device: str
    site: str
    since: datetime
    until: datetime
    windows: list[WindowOut]
    events: list[EventOut]
    """The newest `limit` events of the span, oldest first."""
    controller_down: list[DownPeriod]


class SiteOutcome(BaseModel):
    site: str
    city: str | None
    outcome: Verdict
    """The worst of its windows' (each the worst of its devices')."""
    windows: int
    counts: dict[str, int]
    """Windows by outcome."""
    first_start: datetime
    last_end: datetime


class CampaignOutcome(BaseModel):
    campaign: str
    sites: list[SiteOutcome]


def _window(r: WindowRecord) -> WindowOut:
    return WindowOut(
        campaign=r.campaign_id,
        start=r.starts_at,
        end=r.ends_at,
        state=r.state,
        outcome=r.verdict,
        confirmed_at=r.confirmed_at,
        reported_at=r.reported_at,
    )


def _event(e: DeviceEvent) -> EventOut:
    return EventOut(
        kind=e.kind.value,
        at=e.received_at,
        version=e.version,
        step_at=e.step_at,
        applied_at=e.applied_at,
        state=e.state,
        source=e.source,
        confirmed_by=e.confirmed_by,
        reading=e.reading,
        reason=e.reason,
    )


def _span(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime] | JSONResponse:
    problems = [
        ErrorItem(path=name, message="give a time zone (for example 2026-07-30T19:30:00Z)")
        for name, value in (("since", since), ("until", until))
        if value is not None and value.tzinfo is None
    ]
    if problems:
        return _invalid(problems)
    end = until if until is not None else now
    start = since if since is not None else end - DEFAULT_SPAN
    if start >= end:
        return _invalid([ErrorItem(path="since", message="must be before until")])
    if end - start > MAX_SPAN:
        return _invalid([ErrorItem(path="since", message="the span is at most 366 days")])
    return start, end


def outcome_per_site(records: list[WindowRecord], cities: dict[str, str]) -> list[SiteOutcome]:
    """Per site: each window's verdict is the worst of its devices'; the site's is the
    worst of its windows'."""
    by_window: dict[str, dict[datetime, list[WindowRecord]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in records:
        by_window[r.site_id][r.starts_at].append(r)
    out = []
    for site_id in sorted(by_window):
        windows = by_window[site_id]
        verdicts = [worst([r.verdict for r in rs]) for rs in windows.values()]
        known = [v for v in verdicts if v is not None]
        counts = {v.value: known.count(v) for v in SEVERITY if v in known}
        everything = [r for rs in windows.values() for r in rs]
        out.append(
            SiteOutcome(
                site=site_id,
                city=cities.get(site_id),
                outcome=worst(known) or Verdict.UNCONFIRMED,
                windows=len(windows),
                counts=counts,
                first_start=min(r.starts_at for r in everything),
                last_end=max(r.ends_at for r in everything),
            )
        )
    return out


def device_history_of(
    staff: StaffContext,
    history: HistoryStore,
    allowed: Grant,
    device_id: str,
    start: datetime,
    end: datetime,
    limit: int = DEFAULT_EVENTS,
) -> DeviceHistory:
    """One device's record over [start, end): 404 HTTPException when the device is
    unknown or of a city the grant does not cover. The API and the console both read
    it here."""
    view = staff.stores.reports.views([device_id]).get(device_id)
    cities = {s.id: s.city for s in staff.stores.registry.catalog().sites}
    found = in_scope(
        allowed,
        view,
        lambda v: cities.get(v.site_id),
        f"no device {device_id!r}",
    )
    windows = [
        _window(r)
        for r in history.outcomes(device_id=device_id, ends_since=start, starts_before=end)
    ]
    events = [_event(e) for e in history.events([device_id], since=start, until=end, limit=limit)]
    now = staff.clock()
    runs = history.runs()
    current = runs[-1].id if runs and runs[-1].stopped_at is None else None
    down = [
        DownPeriod(start=g.start, end=g.end)
        for g in down_periods(runs, now, current)
        if g.end > start and g.start < end
    ]
    return DeviceHistory(
        device=device_id,
        site=found.site_id,
        since=start,
        until=end,
        windows=windows,
        events=events,
        controller_down=down,
    )


def build_history_api() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["record"], responses=AUTH_RESPONSES)

    @router.get(
        "/devices/{device_id}/history",
        response_model=DeviceHistory,
        responses={
            404: {"model": Problem, "description": "no such device (in the caller's cities)"},
            422: {"description": "a bad id or span"},
        },
    )
    def device_history(
        device_id: IdParam,
        staff: Staff,
        history: History,
        allowed: DeviceReader,
        since: Annotated[
            datetime | None, Query(description="start of the span (default: until - 7 days)")
        ] = None,
        until: Annotated[
            datetime | None, Query(description="end of the span (default: now)")
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_EVENTS, description="at most this many events (the newest)")
        ] = DEFAULT_EVENTS,
    ) -> DeviceHistory | JSONResponse:
        """What the device was asked to light in the span, what became of each window,
        and every step it reported applying."""
        if not is_id(device_id):
            return _bad_id("device_id", device_id)
        span = _span(since, until, staff.clock())
        if isinstance(span, JSONResponse):
            return span
        start, end = span
        return device_history_of(staff, history, allowed, device_id, start, end, limit)

    @router.get(
        "/campaigns/{campaign_id}/outcome",
        response_model=CampaignOutcome,
        responses={
            404: {"model": Problem, "description": "no such campaign, and no record of one"},
            422: {"description": "a bad id"},
        },
    )
    def campaign_outcome(
        campaign_id: IdParam, staff: Staff, history: History, _allowed: CampaignReader
    ) -> CampaignOutcome | JSONResponse:
        """The campaign's outcome per site, over every window of it that has ended: the
        permanent record, kept after the campaign ends or changes."""
        if not is_id(campaign_id):
            return _bad_id("campaign_id", campaign_id)
        records = history.outcomes(campaign_id=campaign_id)
        if not records and staff.stores.campaigns.record(campaign_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no campaign {campaign_id!r}")
        cities = {s.id: s.city for s in staff.stores.registry.catalog().sites}
        return CampaignOutcome(campaign=campaign_id, sites=outcome_per_site(records, cities))

    return router
