"""A campaign's `rollout:` section: how a change made during a live window goes out.

Pure: the model, and which sites a change touches and which of them are live. The
controller (`controller/rollout.py`, `controller/campaigns.py`) decides what to do.

The names follow the staged rollouts of device fleets (a maximum number of devices
notified per minute; pausing on a failure percentage once enough devices answered):

- `canary_sites`: the sites whose devices get the change first (one wave of their own);
- then one wave per city, in `city_order` first, then the other cities by id;
- `maximum_per_minute`: at most this many devices get the change in any 60 seconds;
- `wave_interval`: a wave starts at least this long after the previous one started;
- `pause`: the rollout pauses by itself when failed plus rejected results are over
  `threshold_percentage` of the results, once there are `min_results` of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, PlainSerializer, StrictInt
from pydantic import BaseModel as _Base

if TYPE_CHECKING:
    from schedules.model import Campaign, SiteCatalog

MAX_PER_MINUTE = 100_000
MAX_WAVE_INTERVAL = timedelta(hours=12)
LIVE_LOOKAROUND = timedelta(days=2)


class _Frozen(_Base):
    model_config = ConfigDict(extra="forbid", frozen=True)


_DURATION_RE = re.compile(r"^(?:(\d{1,2})h)?(?:(\d{1,4})m)?(?:(\d{1,5})s)?$")


def _parse_duration(value: object) -> object:
    """`90s`, `5m`, `1h30m` (or a whole number of seconds) as a timedelta."""
    if isinstance(value, bool):
        raise ValueError("a duration looks like 90s, 5m or 1h30m")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration must not be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if not match or not any(match.groups()):
            raise ValueError(f"a duration looks like 90s, 5m or 1h30m, not {value!r}")
        hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if isinstance(value, timedelta):
        return value
    raise ValueError(f"a duration looks like 90s, 5m or 1h30m, not {value!r}")


def _check_duration(value: timedelta) -> timedelta:
    if value < timedelta(0) or value > MAX_WAVE_INTERVAL:
        raise ValueError("wave_interval must be between 0s and 12h")
    return value


def format_duration(value: timedelta) -> str:
    total = int(value.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return out + (f"{seconds}s" if seconds or not out else "")


Duration = Annotated[
    timedelta,
    BeforeValidator(_parse_duration),
    AfterValidator(_check_duration),
    PlainSerializer(format_duration),
]


_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")


def _check_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid id (lower-case letters, digits and '-')")
    return value


Id = Annotated[str, AfterValidator(_check_id)]


class PauseRule(_Frozen):
    """Pause when (failed + rejected) / results > `threshold_percentage` %, once there
    are at least `min_results` results (applied, failed or rejected)."""

    threshold_percentage: Annotated[float, Field(strict=True, ge=0, lt=100)]
    min_results: StrictInt = Field(ge=1, le=MAX_PER_MINUTE)


class RolloutConfig(_Frozen):
    canary_sites: tuple[Id, ...] = Field(default=(), max_length=1000)
    city_order: tuple[Id, ...] = Field(default=(), max_length=1000)
    maximum_per_minute: StrictInt = Field(ge=1, le=MAX_PER_MINUTE)
    wave_interval: Duration = timedelta(0)
    pause: PauseRule


def touched_sites(campaigns: Iterable[Campaign | None], catalog: SiteCatalog) -> tuple[str, ...]:
    """The sites any window of these campaigns (versions of one campaign) targets."""
    found = {
        site.id
        for campaign in campaigns
        if campaign is not None
        for window in campaign.windows
        for site in catalog.sites
        if window.targets.matches(site)
    }
    return tuple(sorted(found))


def live_sites(campaign: Campaign, catalog: SiteCatalog, now: datetime) -> tuple[str, ...]:
    """The sites where a window of `campaign` is open at `now` (its own windows, whatever
    other campaigns do there)."""
    return tuple(_live(campaign, catalog, now))


def is_live(campaign: Campaign, catalog: SiteCatalog, now: datetime) -> bool:
    """Is a window of `campaign` open at `now` at any site? (Stops at the first.)"""
    return next(_live(campaign, catalog, now), None) is not None


def _live(campaign: Campaign, catalog: SiteCatalog, now: datetime) -> Iterator[str]:
    from schedules.expand import occurrences  # here: schedules.model imports this module

    zones = {c.id: c.zone for c in catalog.cities}
    for site in catalog.sites:
        if not any(w.targets.matches(site) for w in campaign.windows):
            continue
        found = occurrences(
            campaign, 0, site, zones[site.city], now - LIVE_LOOKAROUND, now + LIVE_LOOKAROUND
        )
        if any(o.start <= now < o.end for o in found):
            yield site.id
