"""The shared plan cache: one decode per command, lights shared, pruned on request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.lifecycle import CommandState
from controller.plans import PlanCache
from controller.store.base import Command
from devices.protocol import LightState, Plan, PlanStep, ProtocolError, encode

T0 = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)
BLUE = LightState(on=True, color="#009EDB", level=80)


def command(cid: int, device: str, payload: str | None = None, version: int = 1) -> Command:
    plan = Plan(
        version=version,
        issued_at=T0,
        steps=[
            PlanStep(at=T0, state=LightState(on=False)),
            PlanStep(at=T0 + timedelta(hours=1), state=BLUE),
        ],
    )
    body = payload if payload is not None else encode(plan).decode()
    return Command(cid, device, version, body, CommandState.PENDING, T0, T0)


def test_each_command_is_decoded_once_and_equals_its_payload() -> None:
    plans = PlanCache()
    a = command(1, "d1")
    first = plans(a)
    assert plans(a) is first
    assert plans.decoded == 1
    assert first == a.plan  # the same plan as a plain decode


def test_plans_share_their_lights() -> None:
    plans = PlanCache()
    one, two = plans(command(1, "d1")), plans(command(2, "d2"))
    assert one.steps[1].state is two.steps[1].state
    assert one.steps[1].state == BLUE


def test_devices_sent_the_same_body_share_one_decoded_plan() -> None:
    plans = PlanCache()
    one, two = plans(command(1, "d1")), plans(command(2, "d2"))
    assert one is two
    assert plans.decoded == 1
    assert plans(command(3, "d3", version=2)) is not one
    assert plans.decoded == 2


def test_keep_forgets_the_others() -> None:
    plans = PlanCache()
    plans(command(1, "d1", version=1))
    plans(command(2, "d2", version=2))
    plans.keep({2})
    assert len(plans) == 1
    plans(command(1, "d1", version=1))
    assert plans.decoded == 3
    plans.keep({2})
    plans(command(2, "d2", version=2))  # kept: not decoded again
    assert plans.decoded == 3


def test_a_payload_that_does_not_decode_raises() -> None:
    with pytest.raises(ProtocolError):
        PlanCache()(command(1, "d1", payload="{not json"))
