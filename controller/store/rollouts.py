"""The rollouts store: staged rollouts, their state, and which devices each one sent.

`RolloutStore` is the seam; `SqlRollouts` keeps them in the `rollouts` and
`rollout_releases` tables, `MemoryRollouts` in dicts. One contract
(`tests/controller/test_rollouts_store.py`) runs on memory, SQLite and PostgreSQL.

Every state change is a compare-and-set: it is made only when the state machine of
`controller/rollout.py` allows it from the row's current state (and, when `only_from`
is given, that state is one of them), so a staff member's abort and the reconciler's
pause never both win.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from controller.rollout import ACTIVE, SOURCES, Release, RolloutState
from controller.store.tables import RolloutReleaseRow, RolloutRow
from schedules.model import Campaign
from schedules.rollout import RolloutConfig

if TYPE_CHECKING:
    from controller.store.base import DeviceView

MAX_REASON = 500
MAX_LIST = 500


@dataclass(frozen=True)
class NewRollout:
    campaign_id: str
    config: RolloutConfig
    body: dict[str, Any]
    previous: dict[str, Any]
    sites: tuple[str, ...]
    at: datetime


@dataclass(frozen=True)
class Rollout:
    id: int
    campaign_id: str
    state: RolloutState
    config: RolloutConfig
    body: dict[str, Any]
    """The campaign as changed."""
    previous: dict[str, Any]
    """The campaign before the change (what an abort puts back)."""
    sites: tuple[str, ...]
    """The sites the change may touch: those its campaign targets, before or after."""
    started_at: datetime
    state_at: datetime
    counted_from: datetime
    """The pause rule counts the results of versions sent from this instant on."""
    reason: str | None = None


class RolloutStore(Protocol):
    def start(self, new: NewRollout) -> Rollout:
        """A RUNNING rollout; the campaign's active rollouts become SUPERSEDED."""

    def supersede(self, campaign_id: str, at: datetime, reason: str) -> list[int]:
        """The campaign's active rollouts become SUPERSEDED; their ids."""

    def get(self, rollout_id: int) -> Rollout | None: ...

    def recent(self, limit: int = 100) -> list[Rollout]:
        """Newest first."""

    def active(self) -> list[Rollout]:
        """RUNNING and PAUSED rollouts, oldest first."""

    def move(
        self,
        rollout_id: int,
        target: RolloutState,
        at: datetime,
        reason: str | None = None,
        only_from: Collection[RolloutState] | None = None,
    ) -> Rollout | None:
        """Move the rollout if allowed from its current state; the rollout as moved, or
        None (unknown, or not allowed). Back to RUNNING restarts the pause rule's count
        (`counted_from` = `at`)."""

    def add_releases(self, rollout_id: int, releases: Sequence[Release]) -> int:
        """Record devices sent; a device already recorded for the rollout is kept as it
        was. How many were added."""

    def releases(self, rollout_id: int) -> list[Release]:
        """Oldest first."""


def held_campaigns(
    rollouts: RolloutStore, campaigns: Sequence[Campaign], devices: Iterable[DeviceView]
) -> Mapping[str, tuple[Campaign, ...]]:
    """For each site a running or paused rollout still holds (one of its devices was not
    sent the change): the campaigns with the rollout's campaign as it was before the
    change, which is what that site's devices run. The public view shows such a site by
    them, so a monument lit in the look from before the change is shown lit in it."""
    active = rollouts.active()
    if not active:
        return {}
    at_site: dict[str, list[str]] = {}
    for device in devices:
        at_site.setdefault(device.site_id, []).append(device.id)
    out: dict[str, tuple[Campaign, ...]] = {}
    for rollout in active:
        sent = {r.device_id for r in rollouts.releases(rollout.id)}
        before = Campaign.model_validate(rollout.previous)
        swapped = tuple(before if c.id == rollout.campaign_id else c for c in campaigns)
        for site in rollout.sites:
            if site not in out and any(d not in sent for d in at_site.get(site, ())):
                out[site] = swapped
    return out


def _sources(target: RolloutState, only_from: Collection[RolloutState] | None) -> set[str]:
    allowed = set(SOURCES[target])
    if only_from is not None:
        allowed &= set(only_from)
    return {s.value for s in allowed}


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("a rollout needs aware instants")
    return at.astimezone(UTC)


def _clip(reason: str | None) -> str | None:
    return None if reason is None else reason[:MAX_REASON]


# SQL --------------------------------------------------------------------------------


class SqlRollouts:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def start(self, new: NewRollout) -> Rollout:
        with self.sessions.begin() as s:
            row = RolloutRow(
                campaign_id=new.campaign_id,
                state=RolloutState.RUNNING.value,
                config=new.config.model_dump(mode="json"),
                body=new.body,
                previous=new.previous,
                sites=list(new.sites),
                started_at=new.at,
                state_at=new.at,
                counted_from=new.at,
            )
            s.add(row)
            s.flush()
            self._supersede(s, new.campaign_id, new.at, f"by rollout {row.id}", keep=row.id)
            return _rollout(row)

    def supersede(self, campaign_id: str, at: datetime, reason: str) -> list[int]:
        with self.sessions.begin() as s:
            return self._supersede(s, campaign_id, at, reason)

    @staticmethod
    def _supersede(
        s: Session, campaign_id: str, at: datetime, reason: str, keep: int | None = None
    ) -> list[int]:
        query = (
            update(RolloutRow)
            .where(
                RolloutRow.campaign_id == campaign_id,
                RolloutRow.state.in_(_sources(RolloutState.SUPERSEDED, None)),
            )
            .values(state=RolloutState.SUPERSEDED.value, state_at=at, reason=_clip(reason))
            .returning(RolloutRow.id)
        )
        if keep is not None:
            query = query.where(RolloutRow.id != keep)
        return sorted(s.scalars(query))

    def get(self, rollout_id: int) -> Rollout | None:
        with self.sessions() as s:
            row = s.get(RolloutRow, rollout_id)
            return None if row is None else _rollout(row)

    def recent(self, limit: int = 100) -> list[Rollout]:
        query = select(RolloutRow).order_by(RolloutRow.id.desc()).limit(min(limit, MAX_LIST))
        with self.sessions() as s:
            return [_rollout(row) for row in s.scalars(query)]

    def active(self) -> list[Rollout]:
        query = (
            select(RolloutRow)
            .where(RolloutRow.state.in_([s.value for s in ACTIVE]))
            .order_by(RolloutRow.id)
        )
        with self.sessions() as s:
            return [_rollout(row) for row in s.scalars(query)]

    def move(
        self,
        rollout_id: int,
        target: RolloutState,
        at: datetime,
        reason: str | None = None,
        only_from: Collection[RolloutState] | None = None,
    ) -> Rollout | None:
        values: dict[str, Any] = {"state": target.value, "state_at": at, "reason": _clip(reason)}
        if target is RolloutState.RUNNING:
            values["counted_from"] = at
        with self.sessions.begin() as s:
            moved = s.scalars(
                update(RolloutRow)
                .where(
                    RolloutRow.id == rollout_id,
                    RolloutRow.state.in_(_sources(target, only_from)),
                )
                .values(**values)
                .returning(RolloutRow.id)
            ).all()
            if not moved:
                return None
            row = s.get(RolloutRow, rollout_id, populate_existing=True)
            return None if row is None else _rollout(row)

    def add_releases(self, rollout_id: int, releases: Sequence[Release]) -> int:
        if not releases:
            return 0
        with self.sessions.begin() as s:
            known = set(
                s.scalars(
                    select(RolloutReleaseRow.device_id).where(
                        RolloutReleaseRow.rollout_id == rollout_id
                    )
                )
            )
            rows = []
            for r in releases:
                if r.device_id in known:
                    continue
                known.add(r.device_id)
                rows.append(
                    {
                        "rollout_id": rollout_id,
                        "device_id": r.device_id,
                        "version": r.version,
                        "at": r.at,
                        "wave": r.wave,
                    }
                )
            if rows:
                s.execute(insert(RolloutReleaseRow), rows)
            return len(rows)

    def releases(self, rollout_id: int) -> list[Release]:
        query = (
            select(RolloutReleaseRow)
            .where(RolloutReleaseRow.rollout_id == rollout_id)
            .order_by(RolloutReleaseRow.at, RolloutReleaseRow.device_id)
        )
        with self.sessions() as s:
            return [Release(r.device_id, r.version, r.at, r.wave) for r in s.scalars(query)]


def _rollout(row: RolloutRow) -> Rollout:
    return Rollout(
        id=row.id,
        campaign_id=row.campaign_id,
        state=RolloutState(row.state),
        config=RolloutConfig.model_validate(row.config),
        body=dict(row.body),
        previous=dict(row.previous),
        sites=tuple(row.sites),
        started_at=row.started_at,
        state_at=row.state_at,
        counted_from=row.counted_from,
        reason=row.reason,
    )


# memory -----------------------------------------------------------------------------


@dataclass
class MemoryRollouts:
    _rows: dict[int, Rollout] = field(default_factory=dict)
    _releases: dict[int, dict[str, Release]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, new: NewRollout) -> Rollout:
        new = replace(new, at=_utc(new.at))
        with self._lock:
            rollout_id = max(self._rows, default=0) + 1
            self._supersede(new.campaign_id, new.at, f"by rollout {rollout_id}")
            rollout = Rollout(
                rollout_id,
                new.campaign_id,
                RolloutState.RUNNING,
                new.config,
                dict(new.body),
                dict(new.previous),
                tuple(new.sites),
                new.at,
                new.at,
                new.at,
            )
            self._rows[rollout_id] = rollout
            return rollout

    def supersede(self, campaign_id: str, at: datetime, reason: str) -> list[int]:
        with self._lock:
            return self._supersede(campaign_id, _utc(at), reason)

    def _supersede(self, campaign_id: str, at: datetime, reason: str) -> list[int]:
        ids = []
        for rollout in list(self._rows.values()):
            if rollout.campaign_id == campaign_id and rollout.state in ACTIVE:
                self._rows[rollout.id] = replace(
                    rollout, state=RolloutState.SUPERSEDED, state_at=at, reason=_clip(reason)
                )
                ids.append(rollout.id)
        return sorted(ids)

    def get(self, rollout_id: int) -> Rollout | None:
        with self._lock:
            return self._rows.get(rollout_id)

    def recent(self, limit: int = 100) -> list[Rollout]:
        with self._lock:
            return [self._rows[k] for k in sorted(self._rows, reverse=True)][: min(limit, MAX_LIST)]

    def active(self) -> list[Rollout]:
        with self._lock:
            return [self._rows[k] for k in sorted(self._rows) if self._rows[k].state in ACTIVE]

    def move(
        self,
        rollout_id: int,
        target: RolloutState,
        at: datetime,
        reason: str | None = None,
        only_from: Collection[RolloutState] | None = None,
    ) -> Rollout | None:
        with self._lock:
            rollout = self._rows.get(rollout_id)
            if rollout is None or rollout.state.value not in _sources(target, only_from):
                return None
            at = _utc(at)
            moved = replace(rollout, state=target, state_at=at, reason=_clip(reason))
            if target is RolloutState.RUNNING:
                moved = replace(moved, counted_from=at)
            self._rows[rollout_id] = moved
            return moved

    def add_releases(self, rollout_id: int, releases: Sequence[Release]) -> int:
        with self._lock:
            known = self._releases.setdefault(rollout_id, {})
            added = 0
            for r in releases:
                if r.device_id not in known:
                    known[r.device_id] = replace(r, at=_utc(r.at))
                    added += 1
            return added

    def releases(self, rollout_id: int) -> list[Release]:
        with self._lock:
            found = self._releases.get(rollout_id, {}).values()
            return sorted(found, key=lambda r: (r.at, r.device_id))
