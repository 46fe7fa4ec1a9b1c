"""Test flashes on a fake clock: the rate rules, the timeout rule, the test plan, and how
the reconciler and the public status treat a test (held, then replaced; never lit)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.device_health import HealthTracker, device_health
from controller.flash import (
    FLASH,
    SETTLE,
    Flash,
    FlashLimiter,
    FlashLimits,
    FlashResult,
    FlashTester,
    RateLimited,
    TestRunning,
    flash_plan,
)
from controller.lifecycle import CommandState
from controller.public import public_status
from controller.reconcile import Reconciler
from controller.store.base import Command, Move, NewDevice, Stores
from controller.store.memory import memory_stores
from devices.clock import FakeClock
from devices.protocol import Ack, DeviceState, LightState, Plan, PlanStep, Stage
from tests.controller.test_reconcile import BLUE, CATALOG, GRACE, HORIZON, OFF, E, S, campaign

RED = LightState(on=True, color="#FF0000", level=50)
NOW = S + timedelta(minutes=10)  # inside the Blue Heart window, its grace long past


# rate rules ---------------------------------------------------------------------


def test_one_test_per_device_per_interval_with_the_wait_to_retry() -> None:
    clock = FakeClock(NOW)
    limiter = FlashLimiter(FlashLimits(device_interval_s=30), clock.monotonic)
    limiter.take("dev-a", "tom")
    with pytest.raises(RateLimited) as refused:
        limiter.take("dev-a", "ada")  # another user: the device's limit still holds
    assert refused.value.scope == "device"
    assert refused.value.retry_after == 30
    clock.advance(29.2)
    with pytest.raises(RateLimited) as refused:
        limiter.take("dev-a", "tom")
    assert refused.value.retry_after == 1  # 0.8 s, rounded up: never "retry after 0"
    limiter.take("dev-b", "tom")  # other devices are not held back
    clock.advance(0.8)
    limiter.take("dev-a", "tom")


def test_a_user_has_so_many_tests_in_a_sliding_window() -> None:
    clock = FakeClock(NOW)
    limiter = FlashLimiter(FlashLimits(user_tests=3, user_window_s=60), clock.monotonic)
    for n in range(3):
        limiter.take(f"dev-{n}", "tom")
        clock.advance(10)
    with pytest.raises(RateLimited) as refused:
        limiter.take("dev-9", "tom")
    assert refused.value.scope == "user"
    assert refused.value.retry_after == 30  # the first of the three is 30 s from leaving
    limiter.take("dev-9", "ada")  # another user has her own allowance
    clock.advance(29.5)
    with pytest.raises(RateLimited):
        limiter.take("dev-9", "tom")
    clock.advance(0.5)
    limiter.take("dev-9", "tom")


def test_a_refused_test_is_not_counted() -> None:
    clock = FakeClock(NOW)
    limiter = FlashLimiter(FlashLimits(device_interval_s=30, user_tests=2), clock.monotonic)
    limiter.take("dev-a", "tom")
    for _ in range(5):
        with pytest.raises(RateLimited):
            limiter.take("dev-a", "tom")
    limiter.take("dev-b", "tom")  # the refusals used none of tom's two


# timeout rule ---------------------------------------------------------------------


def _flash(started: float = 1000.0, seconds: float = 10.0) -> Flash:
    return Flash("dev-a", 7, 2, NOW, NOW + timedelta(seconds=seconds), started, started + seconds)


def _command(state: CommandState, reason: str | None = None) -> Command:
    return Command(7, "dev-a", 2, "{}", state, NOW, NOW, reason=reason)


def test_applied_answers_with_the_round_trip_on_the_monotonic_clock() -> None:
    outcome = _flash().verdict(_command(CommandState.APPLIED), 1000.25)
    assert outcome is not None
    assert outcome.result is FlashResult.APPLIED
    assert outcome.round_trip_s == pytest.approx(0.25)


def test_no_answer_before_the_deadline_and_a_timeout_at_it() -> None:
    flash = _flash()
    for state in (CommandState.PUBLISHED, CommandState.RECEIVED, CommandState.ARMED):
        assert flash.verdict(_command(state), 1009.999) is None
    outcome = flash.verdict(_command(CommandState.ARMED), 1010.0)
    assert outcome is not None
    assert outcome.result is FlashResult.TIMEOUT
    assert outcome.stage is CommandState.ARMED
    assert outcome.round_trip_s is None
    late = flash.verdict(_command(CommandState.APPLIED), 1010.5)
    assert late is not None and late.result is FlashResult.APPLIED  # seen before answering


def test_what_the_device_said_instead_is_the_answer() -> None:
    outcome = _flash().verdict(_command(CommandState.REJECTED, "busy"), 1001.0)
    assert outcome is not None
    assert (outcome.result, outcome.reason) == (FlashResult.REJECTED, "busy")
    expired = _flash().verdict(_command(CommandState.EXPIRED), 1001.0)
    assert expired is not None and expired.result is FlashResult.EXPIRED


# the test plan ----------------------------------------------------------------------


def test_the_test_plan_flashes_then_goes_back_to_the_real_plan() -> None:
    real = Plan(
        version=4,
        issued_at=S - timedelta(hours=1),
        steps=[
            PlanStep(at=S - timedelta(hours=1), state=OFF),
            PlanStep(at=S, state=BLUE),
            PlanStep(at=E, state=OFF),
        ],
    )
    at = S - timedelta(seconds=5)
    plan = flash_plan(5, at, 10, RED, real)
    assert plan.test is True
    assert plan.version == 5
    assert plan.not_after == at + timedelta(seconds=10)
    # the flash, then what the real plan shows at the flash's end (the window, which
    # opened meanwhile), then the real plan's later steps
    assert [(s.at, s.state) for s in plan.steps] == [
        (at, RED),
        (at + timedelta(seconds=10), BLUE),
        (E, OFF),
    ]
    bare = flash_plan(1, at, 3, FLASH, None)
    assert [(s.at, s.state) for s in bare.steps] == [(at, FLASH), (at + timedelta(seconds=3), OFF)]


# with the stores, the reconciler and the public status ---------------------------


class World:
    def __init__(self, start: datetime = NOW) -> None:
        self.clock = FakeClock(start)
        self.stores: Stores = memory_stores()
        self.stores.registry.import_catalog(CATALOG)
        self.stores.registry.add_devices(
            [NewDevice("dev-a", "atomium"), NewDevice("dev-b", "grand-place")], NOW
        )
        self.stores.campaigns.put(campaign(), NOW)
        self.reconciler = Reconciler(self.stores, self.clock, HORIZON, GRACE)
        self.woken = 0
        self.tester = FlashTester(self.stores, self.clock, self.clock.monotonic, wake=self._wake)
        for device in ("dev-a", "dev-b"):
            self.report(device, online=True)

    def _wake(self) -> None:
        self.woken += 1

    def report(self, device_id: str, **values: object) -> None:
        view = self.stores.reports.views([device_id])[device_id]
        self.stores.reports.save([replace(view, **values)])  # type: ignore[arg-type]

    def latest(self, device_id: str = "dev-a") -> Command:
        return self.stores.outbox.latest([device_id])[device_id]

    def confirm(self, device_id: str = "dev-a") -> None:
        """The device takes its newest plan and applies the step in force now."""
        command = self.latest(device_id)
        step = command.plan.step_at(self.clock())
        assert step is not None
        now = self.clock()
        self.stores.outbox.move([Move(command.id, CommandState.APPLIED, now)])
        self.report(
            device_id,
            applied_version=command.version,
            applied_step_at=step.at,
            applied_state=step.state.model_dump(mode="json"),
            applied_at=now,
        )

    def site(self, site_id: str = "atomium") -> str:
        status = public_status(self.stores.snapshot(), self.clock(), GRACE, timedelta(hours=24))
        return next(s for s in status.sites if s.id == site_id).state.value

    def lit_json(self) -> list[dict[str, object]]:
        status = public_status(self.stores.snapshot(), self.clock(), GRACE, timedelta(hours=24))
        return [s.model_dump(mode="json") for s in status.sites]


@pytest.fixture
def world() -> World:
    w = World()
    w.reconciler.run(NOW)
    w.confirm("dev-a")
    w.confirm("dev-b")
    assert w.site() == "lit"
    return w


def test_a_test_is_the_next_version_held_by_the_reconciler_then_replaced(world: World) -> None:
    real = world.latest()
    flash = world.tester.start("dev-a", "tom", 10, RED)
    assert world.woken == 1
    test = world.latest()
    assert (test.version, test.state, test.plan.test) == (real.version + 1, "pending", True)
    assert flash.version == test.version
    assert world.stores.outbox.get([("dev-a", real.version)])[("dev-a", real.version)].state == (
        CommandState.SUPERSEDED
    )

    # while the test runs, the reconciler leaves it alone (its plan is not the site's)
    # and asks to be woken at its end
    world.clock.advance(2)
    result = world.reconciler.run(world.clock())
    assert result.new_versions == {}
    assert result.unconfirmed == []
    assert flash.back_at + SETTLE in result.wake_at
    world.confirm("dev-a")  # the device applies the flash
    world.clock.set(flash.back_at)  # the test's end: its answer is due, on its own outcome
    assert world.reconciler.run(world.clock()).new_versions == {}

    # a moment later the real plan goes out again, above the test's version
    world.clock.set(flash.back_at + SETTLE)
    result = world.reconciler.run(world.clock())
    assert result.new_versions == {"dev-a": test.version + 1}
    back = world.latest()
    assert back.plan.test is False
    assert [(s.at, s.state) for s in back.plan.steps] == [(S, BLUE), (E, OFF)]
    assert world.stores.outbox.get([("dev-a", test.version)])[("dev-a", test.version)].state == (
        CommandState.SUPERSEDED
    )


def test_the_public_status_never_shows_a_test(world: World) -> None:
    before = world.lit_json()
    flash = world.tester.start("dev-a", "tom", 10, RED)
    assert world.site() == "pending"  # not lit: the device shows the flash now
    world.clock.advance(1)
    world.confirm("dev-a")  # the flash confirmed: still not lit
    assert world.site() == "pending"  # and not unconfirmed (the window's grace is long past)
    shown = {s["id"]: s for s in world.lit_json()}
    assert shown["atomium"].get("color") is None
    assert world.site("grand-place") == "lit"
    world.clock.set(flash.back_at + SETTLE)
    world.reconciler.run(world.clock())
    assert world.site() == "pending"  # sent mid-window: a grace of its own
    world.confirm("dev-a")  # the real plan confirmed again
    assert world.site() == "lit"
    after = {s["id"]: s for s in world.lit_json()}
    assert after["atomium"]["color"] == before[0]["color"] == "#009EDB"


def test_a_test_that_matches_the_window_is_still_not_lit() -> None:
    # a flash in the campaign's own colour, from the window's very start: the device's
    # report is exactly what the window asks, but of a test plan
    world = World(S - timedelta(minutes=1))
    world.reconciler.run(world.clock())
    world.confirm("dev-a")
    world.confirm("dev-b")
    world.clock.set(S)
    world.confirm("dev-b")  # the window opens
    world.tester.start("dev-a", "tom", 10, BLUE)
    world.confirm("dev-a")
    assert world.latest().plan.steps[0] == PlanStep(at=S, state=BLUE)
    assert world.site() == "pending"
    world.clock.advance(GRACE.total_seconds())
    assert world.site() == "pending"
    assert world.site("grand-place") == "lit"


def test_the_device_limit_then_one_test_at_a_time(world: World) -> None:
    world.tester.start("dev-a", "tom", 10)
    world.clock.advance(5)
    with pytest.raises(RateLimited) as refused:
        world.tester.start("dev-a", "ada", 10)
    assert refused.value.retry_after == 25
    world.tester.start("dev-b", "tom", 10)
    # with a shorter interval than the test, the running test refuses the next
    world.tester.limiter.limits = FlashLimits(device_interval_s=1)
    with pytest.raises(TestRunning):
        world.tester.start("dev-a", "ada", 10)
    world.clock.advance(5)  # over (the reconciler has not replaced it yet)
    world.tester.start("dev-a", "ada", 10)


def test_the_test_version_goes_past_a_version_the_device_holds(world: World) -> None:
    world.report("dev-a", version_floor=40)
    flash = world.tester.start("dev-a", "tom", 10)
    assert flash.version == 41


def test_seconds_out_of_range_are_refused(world: World) -> None:
    for seconds in (0.5, 31):
        with pytest.raises(ValueError):
            world.tester.start("dev-a", "tom", seconds)


# health ------------------------------------------------------------------------


def test_health_takes_live_messages_only_and_measures_the_clock() -> None:
    tracker = HealthTracker()
    at = datetime(2026, 7, 30, 20, 0, tzinfo=UTC)
    state = DeviceState(state=OFF, reported_at=at - timedelta(minutes=5), clock_synced=False)
    tracker.observe("dev-a", state, True, at)  # retained: said five minutes ago
    seen = tracker.get("dev-a")
    assert seen is not None
    assert (seen.last_seen, seen.clock_offset_ms, seen.clock_synced) == (None, None, False)
    state = state.model_copy(update={"clock_synced": True})
    tracker.observe(
        "dev-a", state.model_copy(update={"reported_at": at + timedelta(seconds=2)}), False, at
    )
    seen = tracker.get("dev-a")
    assert seen is not None
    # reported 2 s ahead of the controller: the controller's clock minus its is -2 s
    assert (seen.last_seen, seen.clock_offset_ms, seen.clock_source) == (at, -2000, "state")
    assert seen.clock_synced is True
    later = at + timedelta(seconds=30)
    tracker.observe("dev-a", Ack(version=3, stage=Stage.RECEIVED), False, later)
    seen = tracker.get("dev-a")
    assert seen is not None
    assert (seen.last_seen, seen.clock_offset_ms, seen.clock_measured_at) == (later, -2000, at)
    tracker.observe("dev-a", Ack(version=3, stage=Stage.ARMED, clock_offset_ms=-15), False, later)
    seen = tracker.get("dev-a")
    assert seen is not None and (seen.clock_offset_ms, seen.clock_source) == (-15, "device")
    applied = Ack(
        version=3,
        stage=Stage.APPLIED,
        step_at=at,
        applied_at=later - timedelta(milliseconds=40),
        state=OFF,
    )
    tracker.observe("dev-a", applied, False, later)
    seen = tracker.get("dev-a")
    # its own figure is not measured over
    assert seen is not None and (seen.clock_offset_ms, seen.clock_source) == (-15, "device")
    other = HealthTracker()
    other.observe("dev-b", applied, False, later)
    seen = other.get("dev-b")
    assert seen is not None and (seen.clock_offset_ms, seen.clock_source) == (40, "ack")
    # a retained state report's own figure counts only while nothing is known
    other.observe("dev-c", state.model_copy(update={"clock_offset_ms": 7}), True, later)
    seen = other.get("dev-c")
    assert seen is not None and (seen.clock_offset_ms, seen.clock_source) == (7, "device")
    assert seen.last_seen is None


def test_health_shows_the_plan_version_and_state(world: World) -> None:
    world.tester.start("dev-a", "tom", 10)
    view = world.stores.reports.views(["dev-a"])["dev-a"]
    health = device_health(view, "brussels", world.latest(), None)
    assert health.plan is not None
    assert (health.plan.version, health.plan.state, health.plan.test) == (2, "pending", True)
    assert health.online is True
    assert health.applied is not None and health.applied.version == 1
    assert health.last_seen is None and health.clock is None


def test_a_plan_sent_mid_window_has_a_grace_of_its_own(world: World) -> None:
    # an edit mid-window (a new colour): the new plan is pending for its own grace,
    # then unconfirmed; and the status is due again when that grace ends
    from controller.public import assess, site_runs

    world.stores.campaigns.put(campaign(color="#c8102e"), world.clock())
    issued = world.clock()
    world.reconciler.run(issued)
    assert world.site() == "pending"
    snap = world.stores.snapshot()

    def runs_of(site, city):
        return site_runs(snap.campaigns, site, city, S - timedelta(days=1), E + timedelta(days=1))

    assessment = assess(snap, issued, GRACE, timedelta(hours=24), runs_of)
    assert assessment.next_change == issued + GRACE
    world.clock.advance(GRACE.total_seconds())
    assert world.site() == "unconfirmed"
