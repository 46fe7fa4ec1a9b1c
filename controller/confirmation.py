"""The one rule for "this device confirmed this step". Pure: no I/O, no clock.

The reconciler (is the step in force confirmed, or does it turn UNCONFIRMED?), the intake
(does this report confirm the plan, so the command turns APPLIED?) and the public view
(is the monument lit?) all ask `confirmed_at`, so they can never disagree.

A device confirmed step `step` of plan version `version` when:
1. it reported applying exactly that version and that step (an ack `applied`, or a
   state report naming the version and the step in force);
2. the output it reported with that apply matches the step's target; and
3. no later state report contradicts it: a newer report of other output takes the
   confirmation away (the monument went dark, or changed colour, after all).
Or when it reported applying a later step of the same version: its clock is a little
ahead of ours and it has moved on (so a step boundary never turns a device that keeps
up into an UNCONFIRMED one and a needless retry).

An apply report of an older version never confirms a newer one: a new version exists
because the older one was not enough (a retry, drift, a changed window), so the device
must confirm the new one itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from controller.store.base import DeviceView
from devices.protocol import LightState, PlanStep


def _light(value: dict[str, Any] | LightState | None) -> LightState | None:
    if value is None or isinstance(value, LightState):
        return value
    try:
        return LightState.model_validate(value)
    except ValidationError:
        return None


def confirmed_at(
    *,
    version: int,
    step: PlanStep,
    applied_version: int | None,
    applied_step_at: datetime | None,
    applied_state: dict[str, Any] | LightState | None,
    applied_at: datetime | None,
    reported_state: dict[str, Any] | LightState | None = None,
    reported_at: datetime | None = None,
) -> datetime | None:
    """When the device confirmed `step` of plan `version` (its own applied time), or None."""
    if applied_version != version or applied_step_at is None or applied_at is None:
        return None
    if applied_step_at > step.at:
        return applied_at
    if applied_step_at != step.at:
        return None
    applied = _light(applied_state)
    if applied is None or not applied.matches(step.state):
        return None
    if reported_at is not None and reported_at > applied_at:
        reported = _light(reported_state)
        if reported is None or not reported.matches(step.state):
            return None
    return applied_at


def device_confirmed_at(device: DeviceView, version: int, step: PlanStep) -> datetime | None:
    """`confirmed_at` with what the device last reported about itself."""
    return confirmed_at(
        version=version,
        step=step,
        applied_version=device.applied_version,
        applied_step_at=device.applied_step_at,
        applied_state=device.applied_state,
        applied_at=device.applied_at,
        reported_state=device.reported_state,
        reported_at=device.reported_at,
    )
