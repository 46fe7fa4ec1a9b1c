"""The rollouts store: one contract on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from controller.rollout import CANARY, Release, RolloutState
from controller.store.rollouts import MemoryRollouts, NewRollout, RolloutStore
from schedules.rollout import RolloutConfig
from tests.support.stores import SQL_KINDS, sql_database

T0 = datetime(2026, 7, 30, 20, 0, tzinfo=UTC)
R = RolloutState
CONFIG = RolloutConfig.model_validate(
    {
        "canary_sites": ["atomium"],
        "maximum_per_minute": 5,
        "wave_interval": "2m",
        "pause": {"threshold_percentage": 25, "min_results": 4},
    }
)


@pytest.fixture(params=["memory", *SQL_KINDS])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RolloutStore]:
    if request.param == "memory":
        yield MemoryRollouts()
        return
    with sql_database(request.param, tmp_path) as (_, _sessions, stores):
        assert stores.rollouts is not None
        yield stores.rollouts


def new(campaign: str = "blue-heart", at: datetime = T0) -> NewRollout:
    return NewRollout(
        campaign_id=campaign,
        config=CONFIG,
        body={"id": campaign, "color": "#C8102E"},
        previous={"id": campaign, "color": "#009EDB"},
        sites=("atomium", "menin-gate"),
        at=at,
    )


def test_start_get_recent_active(store: RolloutStore) -> None:
    assert store.active() == [] and store.recent() == [] and store.get(1) is None
    first = store.start(new())
    assert first.state is R.RUNNING
    assert (first.started_at, first.state_at, first.counted_from) == (T0, T0, T0)
    assert first.config == CONFIG
    assert first.body == {"id": "blue-heart", "color": "#C8102E"}
    assert first.previous == {"id": "blue-heart", "color": "#009EDB"}
    assert first.sites == ("atomium", "menin-gate")
    assert store.get(first.id) == first
    other = store.start(new("red-ribbon", T0 + timedelta(minutes=1)))
    assert [r.id for r in store.recent()] == [other.id, first.id]
    assert [r.id for r in store.recent(1)] == [other.id]
    assert [r.id for r in store.active()] == [first.id, other.id]


def test_instants_come_back_in_utc(store: RolloutStore) -> None:
    brussels = timezone(timedelta(hours=2))
    started = store.start(new(at=T0.astimezone(brussels)))
    found = store.get(started.id)
    assert found is not None
    assert found.started_at == T0 and found.started_at.utcoffset() == timedelta(0)


def test_a_new_rollout_of_a_campaign_supersedes_its_active_one(store: RolloutStore) -> None:
    first = store.start(new())
    other = store.start(new("red-ribbon"))
    second = store.start(new(at=T0 + timedelta(minutes=5)))
    old = store.get(first.id)
    assert old is not None
    assert old.state is R.SUPERSEDED
    assert old.reason == f"by rollout {second.id}"
    assert old.state_at == T0 + timedelta(minutes=5)
    assert [r.id for r in store.active()] == [other.id, second.id]
    assert store.supersede("blue-heart", T0 + timedelta(minutes=6), "changed") == [second.id]
    assert store.supersede("blue-heart", T0 + timedelta(minutes=7), "changed") == []
    assert [r.id for r in store.active()] == [other.id]


def test_moves_follow_the_state_machine(store: RolloutStore) -> None:
    rollout = store.start(new())
    at = T0 + timedelta(minutes=1)
    assert store.move(rollout.id, R.RUNNING, at) is None  # running -> running
    paused = store.move(rollout.id, R.PAUSED, at, "2 of 4 failed")
    assert paused is not None
    assert (paused.state, paused.state_at, paused.reason) == (R.PAUSED, at, "2 of 4 failed")
    assert paused.counted_from == T0
    assert store.move(rollout.id, R.DONE, at) is None  # paused -> done is not allowed
    resumed_at = T0 + timedelta(minutes=2)
    resumed = store.move(rollout.id, R.RUNNING, resumed_at, "resumed")
    assert resumed is not None
    assert resumed.counted_from == resumed_at  # the pause rule counts afresh
    # compare-and-set: only from the states given
    assert store.move(rollout.id, R.ABORTED, resumed_at, only_from={R.PAUSED}) is None
    aborted = store.move(rollout.id, R.ABORTED, resumed_at, "aborted", only_from={R.RUNNING})
    assert aborted is not None and aborted.state is R.ABORTED
    for target in R:
        assert store.move(rollout.id, target, resumed_at) is None  # final
    assert store.get(rollout.id) == aborted
    assert store.move(999, R.PAUSED, at) is None
    assert store.active() == []


def test_a_long_reason_is_clipped(store: RolloutStore) -> None:
    rollout = store.start(new())
    moved = store.move(rollout.id, R.PAUSED, T0, "x" * 2000)
    assert moved is not None and moved.reason == "x" * 500


def test_releases(store: RolloutStore) -> None:
    rollout = store.start(new())
    other = store.start(new("red-ribbon"))
    assert store.releases(rollout.id) == []
    assert store.add_releases(rollout.id, []) == 0
    later = T0 + timedelta(minutes=1)
    first = [Release("b-ctl", 3, later, "city:ypres"), Release("a-ctl", 2, T0, CANARY)]
    assert store.add_releases(rollout.id, first) == 2
    # a device already recorded stays as it was
    again = [Release("a-ctl", 9, later, "city:x"), Release("c-ctl", 4, later, "city:ypres")]
    assert store.add_releases(rollout.id, again) == 1
    assert store.releases(rollout.id) == [
        Release("a-ctl", 2, T0, CANARY),
        Release("b-ctl", 3, later, "city:ypres"),
        Release("c-ctl", 4, later, "city:ypres"),
    ]
    assert store.releases(other.id) == []
