"""The staged rollout's pure parts: the state machine, the pause rule and the gate, on a
fake clock (every instant is an input)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.lifecycle import CommandState
from controller.rollout import (
    ALLOWED,
    CANARY,
    Candidate,
    IllegalRolloutMove,
    Release,
    RolloutState,
    can_move,
    check_move,
    gate,
    over_threshold,
    tally,
    wave_order,
)
from devices.clock import FakeClock
from schedules.rollout import PauseRule, RolloutConfig

T0 = datetime(2026, 7, 30, 20, 0, tzinfo=UTC)
R = RolloutState
C = CommandState


def config(**changes: object) -> RolloutConfig:
    fields: dict[str, object] = {
        "canary_sites": ["atomium"],
        "maximum_per_minute": 2,
        "pause": {"threshold_percentage": 20, "min_results": 5},
    }
    fields.update(changes)
    return RolloutConfig.model_validate(fields)


# state machine ------------------------------------------------------------------------

MOVES = [
    (R.RUNNING, R.PAUSED, True),
    (R.RUNNING, R.ABORTED, True),
    (R.RUNNING, R.DONE, True),
    (R.RUNNING, R.SUPERSEDED, True),
    (R.RUNNING, R.RUNNING, False),
    (R.PAUSED, R.RUNNING, True),
    (R.PAUSED, R.ABORTED, True),
    (R.PAUSED, R.SUPERSEDED, True),
    (R.PAUSED, R.DONE, False),
    (R.PAUSED, R.PAUSED, False),
    *[(final, target, False) for final in (R.ABORTED, R.DONE, R.SUPERSEDED) for target in R],
]


@pytest.mark.parametrize(("current", "target", "allowed"), MOVES)
def test_the_state_machine(current: RolloutState, target: RolloutState, allowed: bool) -> None:
    assert can_move(current, target) is allowed
    if allowed:
        check_move(current, target)
    else:
        with pytest.raises(IllegalRolloutMove, match=f"{current.value} rollout cannot"):
            check_move(current, target)


def test_every_pair_of_states_is_in_the_table() -> None:
    assert {(c, t) for c, t, _ in MOVES} == {(c, t) for c in R for t in R}
    assert set(ALLOWED) == set(R)


# pause rule ---------------------------------------------------------------------------

PAUSES = [
    # threshold %, min results, results, paused?
    (20, 5, [C.APPLIED] * 4 + [C.FAILED], False),  # 20 % is not over 20 %
    (20, 5, [C.APPLIED] * 3 + [C.FAILED, C.REJECTED], True),  # 40 %
    (20, 5, [C.FAILED, C.REJECTED, C.FAILED, C.REJECTED], False),  # 4 results < N = 5
    (20, 5, [C.FAILED] * 4 + [C.PUBLISHED, C.ARMED, C.UNCONFIRMED], False),  # open ones don't count
    (20, 5, [C.APPLIED] * 7 + [C.FAILED, C.REJECTED], True),  # 2 of 9 = 22 %
    (20, 5, [C.APPLIED] * 8 + [C.FAILED, C.REJECTED], False),  # 2 of 10 = 20 %
    (0, 1, [C.REJECTED], True),  # 0 %: the first failure pauses
    (0, 1, [C.APPLIED], False),
    (50, 2, [C.EXPIRED, C.SUPERSEDED, C.FAILED, C.APPLIED], False),  # 1 of 2 = 50 %
    (50, 2, [C.REJECTED, C.FAILED, C.APPLIED], True),
]


@pytest.mark.parametrize(("threshold", "minimum", "states", "paused"), PAUSES)
def test_the_pause_rule(
    threshold: float, minimum: int, states: list[CommandState], paused: bool
) -> None:
    rule = PauseRule(threshold_percentage=threshold, min_results=minimum)
    assert over_threshold(rule, tally(states)) is paused


def test_tally_counts_results_and_failures() -> None:
    found = tally([C.APPLIED, C.FAILED, C.REJECTED, C.PENDING, C.APPLIED])
    assert (found.results, found.failures) == (4, 2)
    assert found.percentage() == 50.0
    assert tally([]).percentage() == 0.0


# gate ---------------------------------------------------------------------------------


def fleet(*specs: str) -> list[Candidate]:
    """`site@city` -> a candidate `site-ctl`."""
    out = []
    for spec in specs:
        site, city = spec.split("@")
        out.append(Candidate(f"{site}-ctl", site, city))
    return out


FLEET = fleet(
    "atomium@brussels",
    "grand-place@brussels",
    "manneken@brussels",
    "menin-gate@ypres",
    "cloth-hall@ypres",
    "belfry@bruges",
)


def sent(decision_release: tuple[Candidate, ...]) -> list[str]:
    return [c.device_id for c in decision_release]


def test_wave_order_canaries_then_city_order_then_the_rest_by_id() -> None:
    cfg = config(city_order=["ypres"])
    waves = {"city:brussels", "city:bruges", "city:ypres", CANARY}
    assert wave_order(cfg, waves) == [CANARY, "city:ypres", "city:bruges", "city:brussels"]
    assert wave_order(config(canary_sites=[]), {"city:ypres", "city:bruges"}) == [
        "city:bruges",
        "city:ypres",
    ]


def run_gate(
    cfg: RolloutConfig, clock: FakeClock, candidates: list[Candidate], steps: int, every: float
) -> list[tuple[float, list[str]]]:
    """Call the gate `steps` times, `every` seconds apart, sending what it lets through
    (as the reconciler does); what each call sent, by seconds since T0."""
    released: list[Release] = []
    waiting = list(candidates)
    out = []
    for _ in range(steps):
        now = clock()
        decision = gate(cfg, R.RUNNING, released, waiting, now)
        for c in decision.release:
            wave = CANARY if c.site_id in cfg.canary_sites else f"city:{c.city_id}"
            released.append(Release(c.device_id, 2, now, wave))
        waiting = list(decision.held)
        if decision.release:
            out.append(((now - T0).total_seconds(), sent(decision.release)))
        clock.advance(every)
    return out


GATES = [
    # name, config changes, calls, seconds between them, expected (second, devices sent)
    (
        "two a minute, canary first, then city by city",
        {},
        8,
        30.0,
        [
            (0, ["atomium-ctl", "belfry-ctl"]),
            (60, ["grand-place-ctl", "manneken-ctl"]),
            (120, ["cloth-hall-ctl", "menin-gate-ctl"]),
        ],
    ),
    (
        "one a minute",
        {"maximum_per_minute": 1},
        12,
        30.0,
        [
            (0, ["atomium-ctl"]),
            (60, ["belfry-ctl"]),
            (120, ["grand-place-ctl"]),
            (180, ["manneken-ctl"]),
            (240, ["cloth-hall-ctl"]),
            (300, ["menin-gate-ctl"]),
        ],
    ),
    (
        "a wave waits five minutes after the previous one started",
        {"maximum_per_minute": 10, "wave_interval": "5m"},
        30,
        60.0,
        [
            (0, ["atomium-ctl"]),
            (300, ["belfry-ctl"]),
            (600, ["grand-place-ctl", "manneken-ctl"]),
            (900, ["cloth-hall-ctl", "menin-gate-ctl"]),
        ],
    ),
    (
        "the city order comes before the others",
        {"maximum_per_minute": 10, "city_order": ["ypres"], "canary_sites": []},
        1,
        60.0,
        [
            (
                0,
                [
                    "cloth-hall-ctl",
                    "menin-gate-ctl",
                    "belfry-ctl",
                    "atomium-ctl",
                    "grand-place-ctl",
                    "manneken-ctl",
                ],
            )
        ],
    ),
]


@pytest.mark.parametrize(
    ("changes", "calls", "every", "expected"),
    [g[1:] for g in GATES],
    ids=[g[0] for g in GATES],
)
def test_the_gate_sends_in_waves_at_the_rate(
    changes: dict[str, object],
    calls: int,
    every: float,
    expected: list[tuple[float, list[str]]],
) -> None:
    got = run_gate(config(**changes), FakeClock(T0), FLEET, calls, every)
    assert got == expected


def test_the_rate_is_a_sliding_minute() -> None:
    cfg = config(maximum_per_minute=3, canary_sites=[])
    earlier = [
        Release("a", 2, T0 - timedelta(seconds=50), "city:x"),
        Release("b", 2, T0 - timedelta(seconds=10), "city:x"),
    ]
    candidates = fleet("c@x", "d@x", "e@x")
    decision = gate(cfg, R.RUNNING, earlier, candidates, T0)
    assert sent(decision.release) == ["c-ctl"]  # 2 in the last minute: one more
    assert decision.wake_at == T0 + timedelta(seconds=10)  # when "a" leaves the minute
    a_minute_ago = T0 - timedelta(seconds=60)
    older = [Release("a", 2, a_minute_ago, "city:x")]  # exactly a minute ago: outside
    assert len(gate(cfg, R.RUNNING, older, candidates, T0).release) == 3


def test_the_gate_tells_when_the_next_wave_opens() -> None:
    cfg = config(maximum_per_minute=10, wave_interval="10m")
    canary = [Release("atomium-ctl", 2, T0, CANARY)]
    later = T0 + timedelta(minutes=3)
    decision = gate(cfg, R.RUNNING, canary, fleet("belfry@bruges"), later)
    assert decision.release == ()
    assert decision.wake_at == T0 + timedelta(minutes=10)


@pytest.mark.parametrize("state", [R.PAUSED, R.ABORTED, R.DONE, R.SUPERSEDED])
def test_only_a_running_rollout_sends(state: RolloutState) -> None:
    decision = gate(config(), state, [], FLEET, T0)
    assert decision.release == ()
    assert decision.held == tuple(FLEET)
    assert decision.wake_at is None


def test_nothing_to_send_asks_for_no_wakeup() -> None:
    decision = gate(config(), R.RUNNING, [], [], T0)
    assert decision == gate(config(), R.RUNNING, [], [], T0 + timedelta(hours=1))
    assert decision.release == decision.held == ()
    assert decision.wake_at is None
