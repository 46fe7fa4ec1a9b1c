"""Plans from timelines, and the Reconciler against a real SQLite file database.

Times: the campaign window is 21:00-23:00 in Brussels on 10 June 2025 (CEST, UTC+2),
that is 19:00Z-21:00Z.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.lifecycle import CommandState
from controller.plansteps import SiteSteps
from controller.reconcile import Reconciler, plan_steps, same_from_now
from controller.store.base import Command, Move, NewDevice, Stores
from controller.store.changes import watched
from controller.store.memory import memory_stores
from controller.store.sql import database
from devices.protocol import LightState, Plan, PlanStep
from schedules.model import Campaign, Light, SiteCatalog
from schedules.resolve import Segment

OFF = LightState(on=False)
BLUE = LightState(on=True, color="#009EDB", level=80)
RED = LightState(on=True, color="#C8102E", level=80)
BLUE_LIGHT = Light(on=True, color="#009EDB", level=80)
RED_LIGHT = Light(on=True, color="#C8102E", level=80)

S = datetime(2025, 6, 10, 19, 0, tzinfo=UTC)  # 21:00 Brussels
E = datetime(2025, 6, 10, 21, 0, tzinfo=UTC)  # 23:00 Brussels
T0 = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
HORIZON = timedelta(hours=48)
GRACE = timedelta(seconds=30)


def seg(start: datetime, end: datetime, light: Light = BLUE_LIGHT) -> Segment:
    return Segment("atomium", "blue-heart", start, end, light)


def step(at: datetime, state: LightState) -> PlanStep:
    return PlanStep(at=at, state=state)


# plan_steps -----------------------------------------------------------------------


def test_window_ahead_off_now_on_at_start_off_at_end() -> None:
    steps = plan_steps([seg(S, E)], T0, T0 + HORIZON)
    assert steps == [step(T0, OFF), step(S, BLUE), step(E, OFF)]


def test_inside_a_window_the_first_step_is_the_true_start_in_the_past() -> None:
    now = S + timedelta(minutes=45)
    steps = plan_steps([seg(S, E)], now, now + HORIZON)
    assert steps == [step(S, BLUE), step(E, OFF)]


def test_at_the_exact_start_the_window_is_in_force() -> None:
    assert plan_steps([seg(S, E)], S, S + HORIZON) == [step(S, BLUE), step(E, OFF)]


def test_after_a_window_the_off_step_starts_at_its_end() -> None:
    now = E + timedelta(hours=1)
    assert plan_steps([seg(S, E)], now, now + HORIZON) == [step(E, OFF)]


def test_no_window_in_sight_is_off_from_now() -> None:
    assert plan_steps([], T0, T0 + HORIZON) == [step(T0, OFF)]


def test_two_windows_in_the_horizon() -> None:
    s2, e2 = S + timedelta(days=1), E + timedelta(days=1)
    steps = plan_steps([seg(S, E), seg(s2, e2, RED_LIGHT)], T0, T0 + HORIZON)
    assert steps == [
        step(T0, OFF),
        step(S, BLUE),
        step(E, OFF),
        step(s2, RED),
        step(e2, OFF),
    ]


def test_adjacent_segments_change_colour_without_an_off_between() -> None:
    mid = S + timedelta(hours=1)
    steps = plan_steps([seg(S, mid), seg(mid, E, RED_LIGHT)], T0, T0 + HORIZON)
    assert steps == [step(T0, OFF), step(S, BLUE), step(mid, RED), step(E, OFF)]


def test_windows_beyond_the_horizon_are_left_out() -> None:
    far_s, far_e = S + timedelta(days=3), E + timedelta(days=3)
    steps = plan_steps([seg(S, E), seg(far_s, far_e)], T0, T0 + HORIZON)
    assert steps == [step(T0, OFF), step(S, BLUE), step(E, OFF)]


def test_a_window_straddling_the_horizon_keeps_its_start_but_not_its_end() -> None:
    horizon_end = S + timedelta(hours=1)
    steps = plan_steps([seg(S, E)], T0, horizon_end)
    assert steps == [step(T0, OFF), step(S, BLUE)]


def test_previous_window_then_next_window() -> None:
    prev_s, prev_e = S - timedelta(days=1), E - timedelta(days=1)
    steps = plan_steps([seg(prev_s, prev_e), seg(S, E)], T0, T0 + HORIZON)
    assert steps == [step(prev_e, OFF), step(S, BLUE), step(E, OFF)]


# same_from_now -------------------------------------------------------------------


def test_restart_mid_window_is_the_same_plan() -> None:
    issued_before = [step(T0, OFF), step(S, BLUE), step(E, OFF)]
    recomputed = [step(S, BLUE), step(E, OFF)]
    assert same_from_now(issued_before, recomputed, S + timedelta(minutes=30))


def test_restart_before_the_window_is_the_same_plan() -> None:
    issued = [step(T0, OFF), step(S, BLUE), step(E, OFF)]
    later = T0 + timedelta(hours=2)
    assert same_from_now(issued, [step(later, OFF), step(S, BLUE), step(E, OFF)], later)


def test_a_new_window_entering_the_horizon_is_a_change() -> None:
    s2, e2 = S + timedelta(days=1), E + timedelta(days=1)
    old = [step(T0, OFF), step(S, BLUE), step(E, OFF)]
    new = [step(T0, OFF), step(S, BLUE), step(E, OFF), step(s2, BLUE), step(e2, OFF)]
    assert not same_from_now(old, new, T0 + timedelta(hours=1))


def test_a_colour_change_is_a_change() -> None:
    old = [step(S, BLUE), step(E, OFF)]
    new = [step(S, RED), step(E, OFF)]
    assert not same_from_now(old, new, S + timedelta(minutes=5))


def test_a_moved_end_is_a_change() -> None:
    old = [step(T0, OFF), step(S, BLUE), step(E, OFF)]
    new = [step(T0, OFF), step(S, BLUE), step(E + timedelta(minutes=15), OFF)]
    assert not same_from_now(old, new, T0)


def test_a_lit_step_with_another_start_is_a_change() -> None:
    # the step in force is what the device confirms: its start must stay the true one
    old = [step(S, BLUE), step(E, OFF)]
    new = [step(S + timedelta(minutes=1), BLUE), step(E, OFF)]
    assert not same_from_now(old, new, S + timedelta(minutes=5))


def test_a_change_that_is_already_past_does_not_count() -> None:
    old = [step(T0, OFF), step(S, BLUE), step(E, OFF)]
    new = [step(E, OFF)]
    assert same_from_now(old, new, E + timedelta(minutes=1))


# Reconciler on SQLite -------------------------------------------------------------

CATALOG = SiteCatalog.model_validate(
    {
        "cities": [
            {
                "id": "brussels",
                "name": {"en": "Brussels", "fr": "Bruxelles"},
                "timezone": "Europe/Brussels",
            }
        ],
        "sites": [
            {
                "id": "atomium",
                "city": "brussels",
                "name": {"en": "Atomium"},
                "lat": 50.89493,
                "lon": 4.34152,
            },
            {
                "id": "grand-place",
                "city": "brussels",
                "name": {"en": "Grand-Place"},
                "lat": 50.84673,
                "lon": 4.35247,
            },
        ],
    }
)


def campaign(color: str = "#009edb", dates: tuple[str, ...] = ("2025-06-10",), **extra) -> Campaign:
    return Campaign.model_validate(
        {
            "id": "blue-heart",
            "title": {"en": "Blue Heart"},
            "color": color,
            "level": 80,
            "windows": [
                {
                    "targets": {"all": True},
                    "dates": list(dates),
                    "start": {"at": "21:00"},
                    "end": {"at": "23:00"},
                }
            ],
            **extra,
        }
    )


@dataclass
class Rig:
    stores: Stores
    reconciler: Reconciler
    outbox_calls: list[int] = field(default_factory=list)

    def command(self, device_id: str, version: int) -> Command | None:
        return self.stores.outbox.get([(device_id, version)]).get((device_id, version))

    def plan(self, device_id: str, version: int) -> Plan:
        row = self.command(device_id, version)
        assert row is not None
        return row.plan

    def state(self, device_id: str, version: int) -> str:
        row = self.command(device_id, version)
        assert row is not None
        return row.state.value

    def events(self, device_id: str | None = None):
        return self.stores.outbox.events(device_id)

    def event_rows(self, device_id: str) -> list[tuple[int, str | None, str, datetime]]:
        return [(e.version, e.from_state, e.to_state, e.at) for e in self.events(device_id)]

    def put_campaign(self, c: Campaign, at: datetime) -> bool:
        return self.stores.campaigns.put(c, at)

    def count_commands(self, device_id: str | None = None) -> int:
        events = self.events(device_id)
        return len({(e.device_id, e.version) for e in events})

    def run(self, now: datetime):
        """A reconcile, then the dispatcher's part (`publish`)."""
        result = self.reconciler.run(now=now)
        self.publish()
        return result

    def publish(self) -> None:
        """What the dispatcher does with new versions: each reaches the broker (PUBLISHED)
        at the instant it was stored."""
        self.stores.outbox.move(
            [
                Move(
                    c.id,
                    CommandState.PUBLISHED,
                    c.created_at,
                    only_from=frozenset({CommandState.PENDING}),
                )
                for c in self.stores.outbox.pending()
            ]
        )

    def pending_commands(self) -> list[Command]:
        return self.stores.outbox.pending()

    def move(self, command_id: int, target: CommandState, at: datetime, detail=None) -> bool:
        return self.stores.outbox.move([Move(command_id, target, at, detail)])[0]

    def _update(self, device_id: str, **values) -> None:
        view = self.stores.reports.views({device_id})[device_id]
        self.stores.reports.save([replace(view, **values)])

    def record_status(self, device_id: str, online: bool, firmware, at: datetime) -> None:
        self._update(device_id, online=online, firmware=firmware, status_at=at)

    def applied(
        self, device_id: str, version: int, at: datetime, state: LightState, applied_at: datetime
    ) -> None:
        self._update(
            device_id,
            applied_version=version,
            applied_step_at=at,
            applied_state=state.model_dump(mode="json"),
            applied_at=applied_at,
        )


class NoClock:
    def __call__(self) -> datetime:
        raise AssertionError("the tests pass `now` explicitly")

    def monotonic(self) -> float:
        return 0.0  # never time for a periodic full read: every read is incremental


@pytest.fixture(params=["memory", "sqlite", "memory-watched", "sqlite-watched"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    no_clock = NoClock()

    def make(stores: Stores) -> Rig:
        if request.param.endswith("-watched"):
            stores = watched(stores)
        stores.registry.import_catalog(CATALOG)
        stores.registry.add_devices(
            [NewDevice("dev-a", "atomium"), NewDevice("dev-b", "grand-place")], T0
        )
        stores.campaigns.put(campaign(), T0)
        rig = Rig(stores, Reconciler(stores, no_clock, HORIZON, GRACE))
        rig.reconciler.on_outbox = lambda: rig.outbox_calls.append(1)
        return rig

    if request.param.startswith("memory"):
        yield make(memory_stores())
        return
    with database(f"sqlite:///{tmp_path}/db.sqlite") as (_, _, stores):
        yield make(stores)


def test_first_run_makes_version_1_per_device(rig: Rig) -> None:
    result = rig.reconciler.run(now=T0)
    assert result.new_versions == {"dev-a": 1, "dev-b": 1}
    assert result.unconfirmed == []
    assert result.wake_at == [T0 + GRACE, S, S + GRACE, E, E + GRACE]
    assert rig.outbox_calls == [1]
    for device in ("dev-a", "dev-b"):
        plan = rig.plan(device, 1)
        assert plan.version == 1
        assert plan.issued_at == T0
        assert plan.steps == [step(T0, OFF), step(S, BLUE), step(E, OFF)]
        assert rig.state(device, 1) == "pending"
        assert rig.event_rows(device) == [(1, None, "pending", T0)]
    assert [row.device_id for row in rig.pending_commands()] == ["dev-a", "dev-b"]


def test_a_later_run_inside_the_same_plan_makes_no_new_version(rig: Rig) -> None:
    rig.reconciler.run(now=T0)
    for device in ("dev-a", "dev-b"):
        rig.applied(device, 1, T0, OFF, T0 + timedelta(seconds=1))
    for now in (T0 + timedelta(seconds=1), T0 + timedelta(hours=3), S - timedelta(seconds=1)):
        result = rig.reconciler.run(now=now)
        assert result.new_versions == {}
        assert result.unconfirmed == []
    assert rig.count_commands() == 2
    assert rig.outbox_calls == [1]
    assert rig.event_rows("dev-a") == [(1, None, "pending", T0)]


def test_a_restart_mid_window_makes_no_new_version(rig: Rig) -> None:
    rig.reconciler.run(now=T0)
    restarted = Reconciler(rig.stores, rig.reconciler.clock, HORIZON, GRACE)
    result = restarted.run(now=S + timedelta(seconds=10))
    assert result.new_versions == {}
    assert rig.count_commands("dev-a") == 1


def test_editing_the_campaign_supersedes_the_old_version(rig: Rig) -> None:
    rig.reconciler.run(now=T0)
    t1 = T0 + timedelta(hours=1)
    assert rig.put_campaign(campaign(color="#c8102e"), t1) is False
    result = rig.reconciler.run(now=t1)
    assert result.new_versions == {"dev-a": 2, "dev-b": 2}
    assert rig.outbox_calls == [1, 1]
    for device in ("dev-a", "dev-b"):
        assert rig.state(device, 1) == "superseded"
        assert rig.state(device, 2) == "pending"
        assert rig.plan(device, 2).issued_at == t1
        assert rig.plan(device, 2).steps == [step(t1, OFF), step(S, RED), step(E, OFF)]
        assert rig.event_rows(device) == [
            (1, None, "pending", T0),
            (1, "pending", "superseded", t1),
            (2, None, "pending", t1),
        ]
    old = rig.command("dev-a", 1)
    assert old is not None
    assert old.reason == "by version 2"
    assert old.state_at == t1
    assert [e.detail for e in rig.events("dev-a")] == [None, "by version 2", None]


def test_an_edit_that_does_not_change_the_light_makes_no_new_version(rig: Rig) -> None:
    rig.reconciler.run(now=T0)
    rig.applied("dev-a", 1, T0, OFF, T0 + timedelta(seconds=1))
    t1 = T0 + timedelta(hours=1)
    rig.put_campaign(campaign(title={"en": "Blue Heart 2025"}), t1)
    assert rig.reconciler.run(now=t1).new_versions == {}
    assert rig.state("dev-a", 1) == "pending"


def test_a_window_entering_the_horizon_makes_a_new_version(rig: Rig) -> None:
    rig.put_campaign(campaign(dates=("2025-06-10", "2025-06-12")), T0)
    rig.reconciler.run(now=T0)
    # horizon end T0+48h = 12 June 12:00Z: the 12 June window (19:00Z) is not in yet
    assert rig.plan("dev-a", 1).steps == [step(T0, OFF), step(S, BLUE), step(E, OFF)]
    later = E + timedelta(hours=1)  # horizon end 12 June 22:00Z: the whole window is in
    result = rig.reconciler.run(now=later)
    assert result.new_versions == {"dev-a": 2, "dev-b": 2}
    s3, e3 = S + timedelta(days=2), E + timedelta(days=2)
    assert rig.plan("dev-a", 2).steps == [step(E, OFF), step(s3, BLUE), step(e3, OFF)]


CLIPPED = (
    "Reconciler._steps passes plan_steps the segments of timeline(..., now + horizon), "
    "which are clipped at the horizon end: a window straddling it gets a false OFF step "
    "at now + horizon, inside the window"
)


def test_a_window_straddling_the_horizon_end_has_no_off_step_inside_it(rig: Rig) -> None:
    rig.put_campaign(campaign(dates=("2025-06-12",)), T0)
    s3, e3 = S + timedelta(days=2), E + timedelta(days=2)
    now = s3 - HORIZON + timedelta(minutes=30)  # horizon end = 12 June 19:30Z, mid-window
    rig.reconciler.run(now=now)
    steps = rig.plan("dev-a", 1).steps
    assert steps[:2] == [step(now, OFF), step(s3, BLUE)]
    # the device must not be told to switch off at 19:30Z while the window lasts to 21:00Z;
    # ending the plan at the start, or with the true end, are both fine
    assert steps[2:] in ([], [step(e3, OFF)])


def test_ticks_while_the_horizon_end_is_inside_a_window_make_no_new_version(rig: Rig) -> None:
    rig.put_campaign(campaign(dates=("2025-06-12",)), T0)
    now = S + timedelta(days=2) - HORIZON + timedelta(minutes=30)
    assert rig.reconciler.run(now=now).new_versions == {"dev-a": 1, "dev-b": 1}
    for tick in (30, 60, 90):
        assert rig.reconciler.run(now=now + timedelta(seconds=tick)).new_versions == {}
    assert rig.count_commands("dev-a") == 1


def test_no_apply_report_after_grace_makes_the_command_unconfirmed(rig: Rig) -> None:
    rig.run(now=T0)
    # both devices confirm the OFF step they got on arrival
    for device in ("dev-a", "dev-b"):
        rig.applied(device, 1, T0, OFF, T0 + timedelta(seconds=1))
    # window opens: only dev-b reports applying the lit step
    rig.applied("dev-b", 1, S, BLUE, S + timedelta(seconds=2))

    before_grace = rig.run(now=S + timedelta(seconds=29))
    assert before_grace.unconfirmed == []
    assert rig.state("dev-a", 1) == "published"

    after = S + GRACE + timedelta(seconds=1)
    result = rig.run(now=after)
    assert result.unconfirmed == ["dev-a"]
    assert result.new_versions == {}
    assert rig.state("dev-a", 1) == "unconfirmed"
    assert rig.state("dev-b", 1) == "published"
    row = rig.command("dev-a", 1)
    assert row is not None
    assert row.reason == "no apply report for the step at 2025-06-10 19:00:00+00:00"
    assert rig.event_rows("dev-a") == [
        (1, None, "pending", T0),
        (1, "pending", "published", T0),
        (1, "published", "unconfirmed", after),
    ]
    assert rig.event_rows("dev-b") == [(1, None, "pending", T0), (1, "pending", "published", T0)]

    # a second run does not record it again
    assert rig.run(now=after + timedelta(minutes=5)).unconfirmed == []
    assert len(rig.events("dev-a")) == 3


def test_a_late_apply_resolves_unconfirmed_and_a_later_step_unconfirms_it_again(
    rig: Rig,
) -> None:
    rig.run(now=T0)
    rig.applied("dev-a", 1, T0, OFF, T0 + timedelta(seconds=1))
    rig.run(now=S + timedelta(minutes=1))
    row = rig.command("dev-a", 1)
    assert row is not None and row.state == "unconfirmed"

    late = S + timedelta(minutes=2)
    rig.applied("dev-a", 1, S, BLUE, late)
    assert rig.move(row.id, CommandState.APPLIED, late, "late")
    assert rig.run(now=S + timedelta(minutes=3)).unconfirmed == []
    assert rig.state("dev-a", 1) == "applied"

    # the OFF step at E falls due and is not reported within the grace period
    assert rig.run(now=E + timedelta(seconds=10)).unconfirmed == []
    end_check = E + GRACE
    # dev-b never reported anything: it is unconfirmed already and is not counted again
    assert rig.run(now=end_check).unconfirmed == ["dev-a"]
    assert rig.event_rows("dev-a")[-2:] == [
        (1, "unconfirmed", "applied", late),
        (1, "applied", "unconfirmed", end_check),
    ]


def test_catch_up_grace_runs_from_the_issue_of_the_plan(rig: Rig) -> None:
    issued = S + timedelta(hours=1)
    result = rig.run(now=issued)
    assert result.new_versions == {"dev-a": 1, "dev-b": 1}
    assert rig.plan("dev-a", 1).steps == [step(S, BLUE), step(E, OFF)]
    rig.applied("dev-b", 1, S, BLUE, issued + timedelta(seconds=3))
    assert rig.run(now=issued + timedelta(seconds=29)).unconfirmed == []
    assert rig.run(now=issued + GRACE).unconfirmed == ["dev-a"]


def test_a_report_of_a_later_step_confirms_an_earlier_version(rig: Rig) -> None:
    rig.reconciler.run(now=T0)
    # the device reports a step after the one due (clock skew or a newer report)
    rig.applied("dev-a", 1, S, BLUE, S)
    assert "dev-a" not in rig.reconciler.run(now=T0 + timedelta(minutes=5)).unconfirmed


def test_moves_on_a_final_command_are_refused_and_not_audited(rig: Rig) -> None:
    rig.reconciler.run(now=T0)
    rig.put_campaign(campaign(color="#c8102e"), T0 + timedelta(hours=1))
    rig.reconciler.run(now=T0 + timedelta(hours=1))
    old = rig.command("dev-a", 1)
    assert old is not None and old.state == "superseded"
    before = len(rig.events("dev-a"))
    assert not rig.move(old.id, CommandState.APPLIED, T0 + timedelta(hours=2))
    assert rig.state("dev-a", 1) == "superseded"
    assert len(rig.events("dev-a")) == before


def test_an_online_device_that_stays_unconfirmed_gets_the_plan_again_three_times(
    rig: Rig,
) -> None:
    rig.record_status("dev-a", True, None, T0)
    rig.run(now=T0)
    unconfirmed_at = S + GRACE + timedelta(seconds=1)
    assert rig.run(now=unconfirmed_at).unconfirmed == ["dev-a", "dev-b"]
    retry = rig.reconciler.retry_after
    assert retry == timedelta(seconds=60)
    # not before retry_after
    assert rig.run(now=unconfirmed_at + retry - timedelta(seconds=1)).new_versions == {}
    t = unconfirmed_at
    for version in (2, 3, 4):
        t = t + retry
        result = rig.run(now=t)
        assert result.new_versions == {"dev-a": version}  # dev-b is offline: left alone
        assert rig.state("dev-a", version - 1) == "superseded"
        t = t + GRACE + timedelta(seconds=1)
        assert rig.run(now=t).unconfirmed == ["dev-a"]
    # three retries for the step: then it stays unconfirmed, for someone to look at
    assert rig.run(now=t + retry * 10).new_versions == {}
    assert rig.state("dev-a", 4) == "unconfirmed"


@pytest.mark.parametrize("jump", [timedelta(hours=1), timedelta(hours=-1)], ids=["+1h", "-1h"])
def test_a_wall_clock_step_makes_no_new_version_for_an_unchanged_window(
    rig: Rig, jump: timedelta
) -> None:
    rig.reconciler.run(now=S + timedelta(minutes=10))  # issued inside the window
    assert rig.plan("dev-a", 1).steps[0] == step(S, BLUE)
    for device in ("dev-a", "dev-b"):
        rig.applied(device, 1, S, BLUE, S + timedelta(seconds=1))
    now = S + timedelta(minutes=30)
    assert rig.reconciler.run(now=now).new_versions == {}
    result = rig.reconciler.run(now=now + jump)
    assert result.new_versions == {}
    assert result.unconfirmed == []
    assert rig.count_commands() == 2


def test_runs_ask_for_wakeups_from_the_plans_not_from_their_own_time(rig: Rig) -> None:
    """A run must not ask for a wake-up just after itself: that wake-up would run again
    and ask for the next, and every safety tick would start another such chain."""
    rig.reconciler.run(now=T0)
    later = T0 + timedelta(minutes=10)
    assert rig.reconciler.run(now=later).wake_at == [S, S + GRACE, E, E + GRACE]


# incremental runs: devices whose inputs did not move are not decided again ---------


def test_a_steady_run_decides_no_device_again(rig: Rig) -> None:
    rig.reconciler.run(now=T0)
    for device in ("dev-a", "dev-b"):
        rig.applied(device, 1, T0, OFF, T0 + timedelta(seconds=1))
    first = rig.reconciler.run(now=T0 + timedelta(seconds=40))
    assert first.skipped == 0  # the reports moved since the run that issued the plans
    steady = rig.reconciler.run(now=T0 + timedelta(minutes=5))
    assert steady.skipped == 2
    assert steady.wake_at == first.wake_at == [S, S + GRACE, E, E + GRACE]


def test_a_device_report_makes_that_device_decided_again(rig: Rig) -> None:
    rig.reconciler.run(now=T0)
    rig.reconciler.run(now=T0 + timedelta(seconds=10))
    rig.record_status("dev-a", True, "1.0", T0 + timedelta(seconds=11))
    result = rig.reconciler.run(now=T0 + timedelta(seconds=12))
    assert result.skipped == 1  # dev-b only


def test_a_skipped_device_is_still_unconfirmed_when_its_grace_ends(rig: Rig) -> None:
    rig.run(now=T0)
    rig.applied("dev-a", 1, T0, OFF, T0 + timedelta(seconds=1))
    rig.applied("dev-b", 1, T0, OFF, T0 + timedelta(seconds=1))
    rig.run(now=T0 + timedelta(minutes=1))
    assert rig.run(now=S - timedelta(minutes=1)).skipped == 2
    rig.applied("dev-b", 1, S, BLUE, S + timedelta(seconds=2))
    result = rig.run(now=S + GRACE)
    assert result.unconfirmed == ["dev-a"]  # its step came: the memo did not hide it
    assert rig.state("dev-a", 1) == "unconfirmed"


def test_a_new_campaign_is_decided_for_every_device(rig: Rig) -> None:
    rig.reconciler.run(now=T0)
    rig.reconciler.run(now=T0 + timedelta(seconds=10))
    t1 = T0 + timedelta(seconds=20)
    rig.put_campaign(campaign(color="#c8102e"), t1)
    result = rig.reconciler.run(now=t1)
    assert result.skipped == 0
    assert result.new_versions == {"dev-a": 2, "dev-b": 2}


def test_a_window_entering_the_horizon_is_planned_though_nothing_else_moved(rig: Rig) -> None:
    later = (S + timedelta(days=3)).date().isoformat()
    rig.put_campaign(campaign(dates=("2025-06-10", later)), T0)
    rig.reconciler.run(now=T0)
    rig.reconciler.run(now=T0 + timedelta(seconds=10))
    after_first = E + timedelta(hours=1)
    rig.reconciler.run(now=after_first)  # the first window is over, the next is 2 days out
    assert rig.reconciler.run(now=after_first + timedelta(minutes=1)).new_versions == {}
    entered = S + timedelta(days=3) - HORIZON
    rig.reconciler.run(now=entered - timedelta(minutes=2))
    assert rig.reconciler.run(now=entered - timedelta(minutes=1)).skipped == 2
    result = rig.reconciler.run(now=entered)
    assert result.new_versions == {"dev-a": 2, "dev-b": 2}
    assert rig.plan("dev-a", 2).steps[-1] == step(S + timedelta(days=3), BLUE)


def test_unconfirmed_waits_for_the_intake_to_store_what_came_before_the_grace_ended(
    rig: Rig,
) -> None:
    stored_to: list[datetime | None] = [None]
    rig.reconciler.caught_up = lambda: stored_to[0]
    rig.run(now=T0)
    graced = T0 + GRACE
    waiting = rig.run(now=graced)
    assert waiting.unconfirmed == []
    assert graced + timedelta(seconds=1) in waiting.wake_at
    stored_to[0] = graced - timedelta(seconds=1)  # behind: an ack may still be queued
    assert rig.run(now=graced + timedelta(seconds=1)).unconfirmed == []
    stored_to[0] = graced + timedelta(seconds=1)
    assert rig.run(now=graced + timedelta(seconds=2)).unconfirmed == ["dev-a", "dev-b"]


def test_a_stuck_intake_delays_unconfirmed_by_one_grace_at_most(rig: Rig) -> None:
    rig.reconciler.caught_up = lambda: None
    rig.run(now=T0)
    assert rig.run(now=T0 + 2 * GRACE - timedelta(seconds=1)).unconfirmed == []
    assert rig.run(now=T0 + 2 * GRACE).unconfirmed == ["dev-a", "dev-b"]


def test_site_steps_due_is_the_next_change_or_the_next_one_to_enter_the_horizon() -> None:
    site = SiteSteps([seg(S, E)])
    assert site.due(T0, HORIZON) == S
    assert site.due(S, HORIZON) == E
    assert site.due(E, HORIZON) is None
    far = SiteSteps([seg(S + timedelta(days=3), E + timedelta(days=3))])
    assert far.due(T0, HORIZON) == S + timedelta(days=3) - HORIZON
    assert far.steps(T0, T0 + HORIZON) == [step(T0, OFF)]


def test_a_plan_the_broker_does_not_have_yet_is_not_unconfirmed(rig: Rig) -> None:
    """The controller's own delay is no device's fault: the grace starts when the plan
    reached the broker, and a plan still in the outbox is left to the dispatcher."""
    rig.reconciler.run(now=T0)  # stored, not published (the broker is away, say)
    assert rig.reconciler.run(now=T0 + 5 * GRACE).unconfirmed == []
    assert rig.state("dev-a", 1) == "pending"
    published = T0 + 5 * GRACE
    command = rig.command("dev-a", 1)
    assert command is not None
    rig.move(command.id, CommandState.PUBLISHED, published)
    waiting = rig.reconciler.run(now=published + GRACE - timedelta(seconds=1))
    assert waiting.unconfirmed == []
    assert published + GRACE in waiting.wake_at
    assert rig.reconciler.run(now=published + GRACE).unconfirmed == ["dev-a"]
