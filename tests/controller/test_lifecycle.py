"""The command lifecycle state machine (DESIGN.md, "Command lifecycle")."""

from __future__ import annotations

from itertools import combinations

import pytest

from controller.lifecycle import (
    FINAL,
    CommandState,
    IllegalTransition,
    can_move,
    check_move,
)

S = CommandState
HAPPY_PATH = [S.PENDING, S.PUBLISHED, S.RECEIVED, S.ARMED, S.APPLIED]
FINALS = [S.REJECTED, S.FAILED, S.SUPERSEDED, S.EXPIRED]
NON_FINAL = [s for s in S if s not in FINALS]


def test_the_final_states_are_exactly_the_four_of_the_design() -> None:
    assert set(FINALS) == {S.REJECTED, S.FAILED, S.SUPERSEDED, S.EXPIRED}
    assert frozenset(FINALS) == FINAL
    assert S.UNCONFIRMED not in FINAL
    assert S.APPLIED not in FINAL
    assert S.DRIFTED not in FINAL


@pytest.mark.parametrize(
    ("current", "target"),
    list(combinations(HAPPY_PATH, 2)),
    ids=lambda s: s.value,
)
def test_forward_along_the_happy_path_is_allowed_even_skipping(
    current: CommandState, target: CommandState
) -> None:
    # acks can overtake each other: PENDING -> APPLIED must work when the PUBACK is late
    assert can_move(current, target)
    check_move(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(later, earlier) for earlier, later in combinations(HAPPY_PATH, 2)]
    # APPLIED -> APPLIED is the confirmation of a later step: see the test below
    + [(s, s) for s in HAPPY_PATH if s is not S.APPLIED],
    ids=lambda s: s.value,
)
def test_never_steps_back_or_repeats_along_the_happy_path(
    current: CommandState, target: CommandState
) -> None:
    assert not can_move(current, target)
    with pytest.raises(IllegalTransition, match=f"^{current.value} -> {target.value} is not"):
        check_move(current, target)


@pytest.mark.parametrize("final", FINALS, ids=lambda s: s.value)
def test_finals_have_no_way_out(final: CommandState) -> None:
    for target in S:
        assert not can_move(final, target), f"{final} -> {target}"
        with pytest.raises(IllegalTransition):
            check_move(final, target)


def test_illegal_transition_is_a_value_error_with_both_states_named() -> None:
    with pytest.raises(ValueError, match=r"^superseded -> applied is not allowed$"):
        check_move(S.SUPERSEDED, S.APPLIED)


@pytest.mark.parametrize("current", NON_FINAL, ids=lambda s: s.value)
def test_any_open_command_can_be_superseded_or_fail(current: CommandState) -> None:
    # Store.add_command supersedes every open version of a device, whatever its state
    assert can_move(current, S.SUPERSEDED)
    assert can_move(current, S.FAILED)


@pytest.mark.parametrize("current", list(S), ids=lambda s: s.value)
def test_nothing_goes_back_to_pending(current: CommandState) -> None:
    assert not can_move(current, S.PENDING)


@pytest.mark.parametrize("before", [S.PENDING, S.PUBLISHED, S.RECEIVED, S.ARMED])
def test_no_apply_report_in_time_makes_an_open_command_unconfirmed(before: CommandState) -> None:
    assert can_move(before, S.UNCONFIRMED)


@pytest.mark.parametrize("late", [S.RECEIVED, S.ARMED, S.APPLIED], ids=lambda s: s.value)
def test_unconfirmed_is_resolved_by_a_late_ack(late: CommandState) -> None:
    assert can_move(S.UNCONFIRMED, late)
    check_move(S.UNCONFIRMED, late)


def test_unconfirmed_can_still_end_in_a_device_outcome() -> None:
    for outcome in (S.REJECTED, S.FAILED, S.SUPERSEDED, S.EXPIRED):
        assert can_move(S.UNCONFIRMED, outcome)


def test_applied_turns_unconfirmed_when_a_later_step_falls_due_unconfirmed() -> None:
    assert can_move(S.APPLIED, S.UNCONFIRMED)
    # ... and the late apply report of that step resolves it again
    assert can_move(S.UNCONFIRMED, S.APPLIED)


def test_applied_can_drift_and_drifted_can_be_applied_again() -> None:
    assert can_move(S.APPLIED, S.DRIFTED)
    assert can_move(S.DRIFTED, S.APPLIED)
    assert can_move(S.DRIFTED, S.UNCONFIRMED)


@pytest.mark.parametrize("target", [S.PUBLISHED, S.RECEIVED, S.ARMED, S.REJECTED, S.EXPIRED])
def test_applied_does_not_fall_back_to_transport_or_early_outcomes(target: CommandState) -> None:
    assert not can_move(S.APPLIED, target)


def test_a_later_step_confirmed_is_a_transition_of_its_own() -> None:
    assert can_move(S.APPLIED, S.APPLIED)
    assert not can_move(S.ARMED, S.ARMED)
    assert not can_move(S.UNCONFIRMED, S.UNCONFIRMED)
