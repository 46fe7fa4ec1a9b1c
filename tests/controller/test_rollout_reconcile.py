"""The reconciler with a staged rollout: canaries first, then city waves at the rate;
the pause when too many devices fail or reject; resume and abort. On memory and on a
real SQLite file, with `now` given to every run (a fake clock).

The window is 21:00-23:00 in Brussels on 10 June 2025, that is 19:00Z-21:00Z.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.campaigns import apply_campaign
from controller.lifecycle import CommandState
from controller.public import public_status
from controller.public_view import PublicView
from controller.reconcile import Reconciler, ReconcileResult
from controller.rollout import CANARY, RolloutState
from controller.rollouts import RolloutRefused, abort, progress, resume
from controller.store.base import Move, NewDevice, Stores
from controller.store.changes import Snapshots
from controller.store.memory import memory_stores
from controller.store.rollouts import Rollout
from controller.store.sql import database
from devices.protocol import LightState
from schedules.model import Campaign, SiteCatalog

S = datetime(2025, 6, 10, 19, 0, tzinfo=UTC)
E = datetime(2025, 6, 10, 21, 0, tzinfo=UTC)
T0 = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
LIVE = S + timedelta(minutes=10)
BLUE = LightState(on=True, color="#009EDB", level=80)
RED = LightState(on=True, color="#C8102E", level=80)
MINUTE = timedelta(minutes=1)

SITES = {
    "atomium": "brussels",
    "grand-place": "brussels",
    "manneken": "brussels",
    "menin-gate": "ypres",
    "cloth-hall": "ypres",
    "belfry": "bruges",
}
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [
            {"id": c, "name": {"en": c.title()}, "timezone": "Europe/Brussels"}
            for c in ("brussels", "ypres", "bruges")
        ],
        "sites": [
            {"id": s, "city": c, "name": {"en": s}, "lat": 50.85, "lon": 4.35}
            for s, c in SITES.items()
        ],
    }
)
ROLLOUT = {
    "canary_sites": ["atomium"],
    "maximum_per_minute": 2,
    "pause": {"threshold_percentage": 20, "min_results": 2},
}


def campaign(color: str = "#009edb", rollout: Any = ROLLOUT) -> Campaign:
    return Campaign.model_validate(
        {
            "id": "blue-heart",
            "title": {"en": "Blue Heart"},
            "color": color,
            "level": 80,
            "windows": [
                {
                    "targets": {"all": True},
                    "dates": ["2025-06-10"],
                    "start": {"at": "21:00"},
                    "end": {"at": "23:00"},
                }
            ],
            "rollout": rollout,
        }
    )


class NoClock:
    def __call__(self) -> datetime:
        raise AssertionError("the tests pass `now` explicitly")

    def monotonic(self) -> float:
        return 0.0


class Rig:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self.reconciler = Reconciler(stores, NoClock(), timedelta(hours=48), timedelta(seconds=30))

    def run(self, now: datetime) -> ReconcileResult:
        result = self.reconciler.run(now=now)
        pending = self.stores.outbox.pending()
        self.stores.outbox.move(
            [
                Move(c.id, CommandState.PUBLISHED, now, only_from=frozenset({CommandState.PENDING}))
                for c in pending
            ]
        )
        return result

    def answer(self, device_id: str, state: CommandState, at: datetime) -> None:
        command = self.stores.outbox.latest([device_id])[device_id]
        assert self.stores.outbox.move([Move(command.id, state, at, "test")]) == [True]

    def colour(self, device_id: str) -> str | None:
        """The colour the device's newest plan has in force during the window."""
        command = self.stores.outbox.latest([device_id])[device_id]
        return [s for s in command.plan.steps if s.at <= LIVE][-1].state.color

    def versions(self) -> dict[str, int]:
        return {d: c.version for d, c in self.stores.outbox.latest().items()}

    def rollout(self) -> Rollout:
        assert self.stores.rollouts is not None
        found = self.stores.rollouts.recent(1)
        assert found, "no rollout was started"
        return found[0]


@pytest.fixture(params=["memory", "sqlite"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    def make(stores: Stores) -> Rig:
        stores.registry.import_catalog(CATALOG)
        stores.registry.add_devices([NewDevice(f"{s}-ctl", s) for s in SITES], T0)
        apply_campaign(stores, campaign(), T0)
        rig = Rig(stores)
        assert rig.run(T0).new_versions == {f"{s}-ctl": 1 for s in SITES}
        return rig

    if request.param == "memory":
        yield make(memory_stores())
        return
    with database(f"sqlite:///{tmp_path}/db.sqlite") as (_, _, stores):
        yield make(stores)


def test_a_change_outside_a_live_window_goes_out_at_once(rig: Rig) -> None:
    before = S - timedelta(minutes=5)
    apply_campaign(rig.stores, campaign("#c8102e"), before)
    assert rig.stores.rollouts is not None and rig.stores.rollouts.recent() == []
    result = rig.run(before)
    assert result.new_versions == {f"{s}-ctl": 2 for s in SITES}
    assert result.held == 0


def test_a_campaign_without_a_rollout_section_goes_out_at_once_in_a_live_window(
    rig: Rig,
) -> None:
    apply_campaign(rig.stores, campaign("#c8102e", rollout=None), LIVE)
    assert rig.run(LIVE).new_versions == {f"{s}-ctl": 2 for s in SITES}


def test_canaries_first_then_city_waves_at_the_rate(rig: Rig) -> None:
    apply_campaign(rig.stores, campaign("#c8102e"), LIVE)
    rollout = rig.rollout()
    assert rollout.state is RolloutState.RUNNING
    assert rollout.sites == tuple(sorted(SITES))

    first = rig.run(LIVE)
    # the canary, then the first city (bruges, by id): two devices in the first minute
    assert first.new_versions == {"atomium-ctl": 2, "belfry-ctl": 2}
    assert first.held == 4
    assert LIVE + MINUTE in first.wake_at
    assert rig.colour("atomium-ctl") == RED.color
    assert rig.colour("grand-place-ctl") == BLUE.color  # held: keeps version 1

    assert rig.run(LIVE + timedelta(seconds=30)).new_versions == {}
    assert rig.run(LIVE + MINUTE).new_versions == {"grand-place-ctl": 2, "manneken-ctl": 2}
    last = rig.run(LIVE + 2 * MINUTE)
    assert last.new_versions == {"cloth-hall-ctl": 2, "menin-gate-ctl": 2}
    assert last.held == 0

    done = rig.rollout()
    assert done.state is RolloutState.DONE
    assert done.reason == "every device was sent the change (6)"
    found = progress(rig.stores, done)
    assert found.sent == 6
    assert found.waves == {CANARY: 1, "city:bruges": 1, "city:brussels": 2, "city:ypres": 2}
    # once done, the campaign's later changes are not gated by it
    assert rig.run(LIVE + 3 * MINUTE).new_versions == {}
    assert rig.versions() == {f"{s}-ctl": 2 for s in SITES}


def test_the_rollout_pauses_when_failures_go_over_the_threshold(rig: Rig) -> None:
    apply_campaign(rig.stores, campaign("#c8102e"), LIVE)
    rig.run(LIVE)
    rig.answer("atomium-ctl", CommandState.APPLIED, LIVE + timedelta(seconds=5))
    rig.answer("belfry-ctl", CommandState.REJECTED, LIVE + timedelta(seconds=5))
    # 1 of 2 results rejected: 50 % is over 20 %, and there are 2 results
    result = rig.run(LIVE + MINUTE)
    assert result.new_versions == {}
    assert result.paused == [rig.rollout().id]
    paused = rig.rollout()
    assert paused.state is RolloutState.PAUSED
    assert paused.reason == "1 of 2 results failed or were rejected (50.0 %, over 20 %)"
    for _ in range(3):  # held while paused, however long
        assert rig.run(LIVE + 10 * MINUTE).new_versions == {}
    assert rig.colour("grand-place-ctl") == BLUE.color

    resumed = resume(rig.stores, paused.id, LIVE + 11 * MINUTE)
    assert resumed.state is RolloutState.RUNNING
    assert resumed.counted_from == LIVE + 11 * MINUTE
    # the count starts afresh: the earlier rejection no longer pauses it
    again = rig.run(LIVE + 11 * MINUTE)
    assert again.new_versions == {"grand-place-ctl": 2, "manneken-ctl": 2}
    assert rig.rollout().state is RolloutState.RUNNING
    with pytest.raises(RolloutRefused, match="is running, not paused"):
        resume(rig.stores, paused.id, LIVE + 12 * MINUTE)


def test_below_the_minimum_of_results_it_does_not_pause(rig: Rig) -> None:
    apply_campaign(rig.stores, campaign("#c8102e"), LIVE)
    rig.run(LIVE)
    rig.answer("belfry-ctl", CommandState.FAILED, LIVE + timedelta(seconds=5))
    # one result (a failure) of the two needed
    assert rig.run(LIVE + MINUTE).new_versions == {"grand-place-ctl": 2, "manneken-ctl": 2}
    assert rig.rollout().state is RolloutState.RUNNING


def test_abort_puts_the_campaign_back_and_the_held_devices_never_get_the_change(
    rig: Rig,
) -> None:
    apply_campaign(rig.stores, campaign("#c8102e"), LIVE)
    rig.run(LIVE)
    rollout = rig.rollout()
    aborted, restored = abort(rig.stores, rollout.id, LIVE + 30 * timedelta(seconds=1))
    assert aborted.state is RolloutState.ABORTED and restored is True
    record = rig.stores.campaigns.record("blue-heart")
    assert record is not None and record.body["color"] == BLUE.color
    result = rig.run(LIVE + MINUTE)
    # those already sent get the campaign as it was, as a new version; the others
    # keep version 1, which already is what the restored campaign asks for
    assert result.new_versions == {"atomium-ctl": 3, "belfry-ctl": 3}
    assert rig.colour("atomium-ctl") == BLUE.color
    for _ in range(3):
        assert rig.run(LIVE + 5 * MINUTE).new_versions == {}
    versions = rig.versions()
    assert {d: v for d, v in versions.items() if v == 1} == {
        f"{s}-ctl": 1 for s in SITES if s not in ("atomium", "belfry")
    }
    assert all(rig.colour(f"{s}-ctl") == BLUE.color for s in SITES)
    with pytest.raises(RolloutRefused, match="is aborted: nothing to abort"):
        abort(rig.stores, rollout.id, LIVE + 6 * MINUTE)
    with pytest.raises(RolloutRefused, match="no rollout 99"):
        abort(rig.stores, 99, LIVE + 6 * MINUTE)


def test_changing_the_campaign_again_supersedes_the_rollout(rig: Rig) -> None:
    apply_campaign(rig.stores, campaign("#c8102e"), LIVE)
    rig.run(LIVE)
    first = rig.rollout()
    apply_campaign(rig.stores, campaign("#00ff00"), LIVE + MINUTE)
    second = rig.rollout()
    assert second.id != first.id
    assert rig.stores.rollouts is not None
    old = rig.stores.rollouts.get(first.id)
    assert old is not None and old.state is RolloutState.SUPERSEDED
    # the new rollout starts from its own canary again
    assert rig.run(LIVE + MINUTE).new_versions == {"atomium-ctl": 3, "belfry-ctl": 3}


def report_applied(rig: Rig, device_id: str, at: datetime) -> None:
    """The device applied the step in force of its newest plan, and is online."""
    command = rig.stores.outbox.latest([device_id])[device_id]
    step = [s for s in command.plan.steps if s.at <= at][-1]
    view = rig.stores.reports.views({device_id})[device_id]
    rig.stores.reports.save(
        [
            replace(
                view,
                online=True,
                status_at=at,
                applied_version=command.version,
                applied_step_at=step.at,
                applied_state=step.state.model_dump(mode="json"),
                applied_at=at,
            )
        ]
    )


def test_the_public_status_shows_a_held_site_lit_in_the_look_it_still_has(rig: Rig) -> None:
    apply_campaign(rig.stores, campaign("#c8102e"), LIVE)
    rig.run(LIVE)  # atomium and belfry get the change; the others are held
    now = LIVE + timedelta(seconds=10)
    for site in SITES:
        report_applied(rig, f"{site}-ctl", now)
    snap = rig.stores.snapshot()
    assert set(snap.held) == {"grand-place", "manneken", "menin-gate", "cloth-hall"}
    status = public_status(snap, now, timedelta(seconds=30), timedelta(hours=24))
    shown = {s.id: (s.state.value, s.color) for s in status.sites}
    assert shown == {
        "atomium": ("lit", RED.color),
        "belfry": ("lit", RED.color),
        "grand-place": ("lit", BLUE.color),
        "manneken": ("lit", BLUE.color),
        "menin-gate": ("lit", BLUE.color),
        "cloth-hall": ("lit", BLUE.color),
    }
    # the same through the public view the controller serves
    view = PublicView(
        Snapshots(rig.stores),
        FixedClock(now),
        grace=timedelta(seconds=30),
        upcoming=timedelta(hours=24),
    )
    view.rebuild()
    rendering = view.get("en")
    assert rendering is not None
    served = {s["id"]: (s["state"], s.get("color")) for s in json.loads(rendering.body)["sites"]}
    assert served == shown
    # once every device has it, no site is held
    for minute in (1, 2):
        rig.run(LIVE + minute * MINUTE)
    assert rig.stores.snapshot().held == {}


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return 0.0
