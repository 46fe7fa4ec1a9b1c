"""The public status: which monuments are lit, as their devices confirmed.

Built from an allow-list of fields. It never carries device ids, topics, credentials,
addresses, firmware or raw errors. A site is `lit` only when every device at the site
reported applying the step that opened the current window, with the right output.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from controller.store.repo import DeviceView, Snapshot
from devices.protocol import Instant, LightState
from schedules.model import Site, display_name
from schedules.resolve import LOOKAROUND, Segment, timeline


class PublicState(StrEnum):
    SCHEDULED = "scheduled"
    PENDING = "pending"
    LIT = "lit"
    UNCONFIRMED = "unconfirmed"
    OFFLINE = "offline"
    OFF = "off"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PublicWindow(_Out):
    start: Instant
    end: Instant


class PublicSite(_Out):
    id: str
    name: str
    city: str
    lat: float
    lon: float
    state: PublicState
    color: str | None = None
    confirmed_at: Instant | None = None
    window: PublicWindow | None = None


class Summary(_Out):
    total: int
    lit: int
    pending: int
    unconfirmed: int
    offline: int
    scheduled: int
    off: int


class PublicStatus(_Out):
    generated_at: Instant
    summary: Summary
    sites: list[PublicSite]

    def etag(self) -> str:
        """Changes exactly when something other than generated_at changes."""
        body = self.model_dump(mode="json", exclude={"generated_at"}, exclude_none=True)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return f'"{digest[:32]}"'


def _device_state(
    device: DeviceView, seg: Segment, now: datetime, grace: timedelta
) -> tuple[PublicState, datetime | None]:
    if device.online is not True:
        return PublicState.OFFLINE, None
    target = LightState(on=True, color=seg.light.color, level=seg.light.level)
    confirmed = (
        device.applied_step_at == seg.start
        and device.applied_state is not None
        and LightState.model_validate(device.applied_state).matches(target)
    )
    contradicted = (
        device.reported_state is not None
        and device.reported_at is not None
        and device.applied_at is not None
        and device.reported_at > device.applied_at
        and not LightState.model_validate(device.reported_state).matches(target)
    )
    if confirmed and not contradicted:
        return PublicState.LIT, device.applied_at
    if now >= seg.start + grace:
        return PublicState.UNCONFIRMED, None
    return PublicState.PENDING, None


def _site_state(
    devices: list[DeviceView], seg: Segment, now: datetime, grace: timedelta
) -> tuple[PublicState, datetime | None]:
    if not devices:
        return (PublicState.UNCONFIRMED if now >= seg.start + grace else PublicState.PENDING), None
    states = [_device_state(d, seg, now, grace) for d in devices]
    kinds = {state for state, _ in states}
    if kinds == {PublicState.LIT}:
        confirmed = [at for _, at in states if at is not None]
        return PublicState.LIT, max(confirmed) if confirmed else None
    for worst in (PublicState.UNCONFIRMED, PublicState.OFFLINE):
        if worst in kinds:
            return worst, None
    return PublicState.PENDING, None


def _runs(segments: list[Segment]) -> list[Segment]:
    """Join touching segments with the same look, as a device's plan does: one step
    starts the run, whichever campaigns the pieces belong to (the first names it)."""
    out: list[Segment] = []
    for seg in segments:
        last = out[-1] if out else None
        if last is not None and last.end == seg.start and last.light == seg.light:
            out[-1] = Segment(last.site, last.campaign, last.start, seg.end, last.light)
        else:
            out.append(seg)
    return out


def site_status(
    snap: Snapshot, site: Site, now: datetime, grace: timedelta, upcoming: timedelta, lang: str
) -> PublicSite:
    city = snap.catalog.city_of(site)
    # look past the limit so an upcoming window shows its true end
    segments = timeline(
        snap.campaigns, site, city.zone, now - LOOKAROUND, now + upcoming + LOOKAROUND
    )
    lit_segments = [seg for seg in _runs(segments) if seg.light.on and seg.start <= now + upcoming]
    current = next((seg for seg in lit_segments if seg.contains(now)), None)
    base = {
        "id": site.id,
        "name": display_name(site.name, lang),
        "city": display_name(city.name, lang),
        "lat": site.lat,
        "lon": site.lon,
    }
    if current is not None:
        devices = [d for d in snap.devices if d.site_id == site.id]
        state, confirmed_at = _site_state(devices, current, now, grace)
        return PublicSite(
            **base,
            state=state,
            color=current.light.color if state is PublicState.LIT else None,
            confirmed_at=confirmed_at,
            window=PublicWindow(start=current.start, end=current.end),
        )
    nxt = next((seg for seg in lit_segments if seg.start > now), None)
    if nxt is not None:
        return PublicSite(
            **base,
            state=PublicState.SCHEDULED,
            window=PublicWindow(start=nxt.start, end=nxt.end),
        )
    return PublicSite(**base, state=PublicState.OFF)


def public_status(
    snap: Snapshot,
    now: datetime,
    grace: timedelta,
    upcoming: timedelta,
    lang: str = "en",
) -> PublicStatus:
    sites = [site_status(snap, s, now, grace, upcoming, lang) for s in snap.catalog.sites]
    counts = {state: 0 for state in PublicState}
    for site in sites:
        counts[site.state] += 1
    return PublicStatus(
        generated_at=now,
        summary=Summary(total=len(sites), **{k.value: v for k, v in counts.items()}),
        sites=sites,
    )
