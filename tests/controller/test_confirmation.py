"""The one confirmation rule, table-driven. The reconciler, the intake and the public view
all call it (see test_reconcile, test_intake and test_public for each caller)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.confirmation import confirmed_at
from devices.protocol import LightState, PlanStep

S = datetime(2026, 7, 30, 19, 30, tzinfo=UTC)
LATER = S + timedelta(hours=3)
BLUE = {"on": True, "color": "#009EDB", "level": 80}
RED = {"on": True, "color": "#C8102E", "level": 80}
OFF = {"on": False}
STEP = PlanStep(at=S, state=LightState.model_validate(BLUE))
APPLIED_AT = S + timedelta(seconds=1)

CASES = [
    # (why, applied version, applied step, applied state, reported state, reported at, yes?)
    ("applied the step with its output", 5, S, BLUE, None, None, True),
    ("an older version never confirms a newer one", 4, S, BLUE, None, None, False),
    ("a version beyond ours confirms nothing", 6, S, BLUE, None, None, False),
    ("no apply report at all", None, None, None, None, None, False),
    ("an earlier step of the version", 5, S - timedelta(hours=1), OFF, None, None, False),
    ("a later step: the device moved on", 5, LATER, OFF, None, None, True),
    ("applied with other output", 5, S, RED, None, None, False),
    (
        "a newer report of other output contradicts",
        5,
        S,
        BLUE,
        OFF,
        S + timedelta(minutes=5),
        False,
    ),
    ("a newer report of the same output holds", 5, S, BLUE, BLUE, S + timedelta(minutes=5), True),
    (
        "an older report of other output does not count",
        5,
        S,
        BLUE,
        OFF,
        S - timedelta(minutes=1),
        True,
    ),
    (
        "an unreadable newer report contradicts",
        5,
        S,
        BLUE,
        {"on": "yes"},
        S + timedelta(minutes=5),
        False,
    ),
]


@pytest.mark.parametrize(
    ("why", "version", "step_at", "state", "reported", "reported_at", "yes"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_rule(why, version, step_at, state, reported, reported_at, yes) -> None:
    got = confirmed_at(
        version=5,
        step=STEP,
        applied_version=version,
        applied_step_at=step_at,
        applied_state=state,
        applied_at=APPLIED_AT if version is not None else None,
        reported_state=reported,
        reported_at=reported_at,
    )
    assert got == (APPLIED_AT if yes else None), why
