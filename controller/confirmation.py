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

How strong a confirmation is (`ConfirmedBy`, stored with the step as the device view's
`confirmed_by`): `echo` (the device repeats what it set: a native agent without a
sensor reports its fixture's output), `readback` (the device re-read its output), or
`sensor` (a light sensor at the monument measured it: `compare_reading`). The adapter
enum says `measured` for the last; `confirmed_by()` is the one place that maps it.
A light sensor that saw something else refutes the step: the device view keeps the
mismatch (`mismatch_version`, `mismatch_step_at`, `mismatch`), and that step is not
confirmed by the device's echo either (`device_confirmed_at`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from controller.store.base import DeviceView
from devices.adapters.base import Strength
from devices.colour import Tolerance, colour_matches, hex_to_rgb, hue_distance, rgb_to_hsv
from devices.protocol import LightState, PlanStep, Reading, format_instant
from devices.sensor import effective_level


class ConfirmedBy(StrEnum):
    """How a device confirmed a step, weakest first (the public word for each)."""

    ECHO = "echo"
    READBACK = "readback"
    SENSOR = "sensor"


_RANK = {ConfirmedBy.ECHO: 0, ConfirmedBy.READBACK: 1, ConfirmedBy.SENSOR: 2}
_FROM_STRENGTH = {
    Strength.ECHO: ConfirmedBy.ECHO,
    Strength.READBACK: ConfirmedBy.READBACK,
    Strength.MEASURED: ConfirmedBy.SENSOR,
}


def confirmed_by(strength: Strength | ConfirmedBy | str | None) -> ConfirmedBy:
    """The public word for a confirmation's strength: an adapter's `Strength` (where
    `measured` is `sensor`), a stored value, or None (stored before strengths were kept:
    every confirmation is at least an echo)."""
    if strength is None:
        return ConfirmedBy.ECHO
    if isinstance(strength, Strength):
        return _FROM_STRENGTH[strength]
    if isinstance(strength, ConfirmedBy):
        return strength
    try:
        return _FROM_STRENGTH[Strength(strength)]
    except ValueError:
        pass
    try:
        return ConfirmedBy(strength)
    except ValueError:
        return ConfirmedBy.ECHO  # an unknown stored word claims nothing stronger


def weakest(values: list[ConfirmedBy]) -> ConfirmedBy | None:
    """The weakest of several devices' confirmations (a site is as sure as its least)."""
    return min(values, key=_RANK.__getitem__) if values else None


def record_applied(
    view: DeviceView,
    version: int,
    step_at: datetime,
    state: dict[str, Any],
    applied_at: datetime,
    by: Strength | ConfirmedBy,
) -> DeviceView:
    """`view` holding this step as the newest one its device applied, confirmed `by`:
    the one place the applied fields and their strength are set together. A match from
    a sensor clears that step's mismatch."""
    strength = confirmed_by(by)
    view = replace(
        view,
        applied_version=version,
        applied_step_at=step_at,
        applied_state=dict(state),
        applied_at=applied_at,
        confirmed_by=strength.value,
    )
    if strength is ConfirmedBy.SENSOR and refuted(view, version, step_at):
        view = replace(view, mismatch_version=None, mismatch_step_at=None, mismatch=None)
    return view


def refuted(view: DeviceView, version: int, step_at: datetime) -> bool:
    """Did the device's light sensor see something else than this step?"""
    return (view.mismatch_version, view.mismatch_step_at) == (version, step_at)


# ---- a light sensor's reading against the step's target ----------------------------

SENSOR_TOLERANCE = Tolerance(hue=20.0, saturation=35.0, grey_below=15.0, level=15.0)
"""How far a light sensor's reading may be from the target and still confirm it. A sensor
sees the lit surface, with its own colour, some ambient light and the sensor's channel
crosstalk: hues within 20 degrees, saturation within 35 points, the level within 15
points. Campaign colours are further apart than that (blue and cyan are 60 degrees)."""
DARK_LEVEL = 5.0
"""A reading below this level (percent of full output) saw no light."""


def _figure(level: float) -> str:
    return f"{level:.1f}".rstrip("0").rstrip(".") + "%"


def compare_reading(
    target: LightState, reading: Reading, tolerance: Tolerance = SENSOR_TOLERANCE
) -> str | None:
    """None when the reading shows the target within the tolerance; otherwise why not,
    with the figures (for staff). Off matches a reading that saw no light; a colour is
    compared by hue and saturation (`devices/colour.py`'s HSV rule), the level as the
    effective output (level times the colour's own value). A target dimmer than
    `DARK_LEVEL` is compared by its level only (no sensor tells a colour that dim)."""
    want = effective_level(target)
    seen = f"the light sensor ({reading.sensor}) saw {reading.color} at {_figure(reading.level)}"
    wanted = f"the step is {target.color} at {_figure(want)}" if want > 0 else "the step is off"
    if want <= 0:
        if reading.level <= max(DARK_LEVEL, tolerance.level):
            return None
        return f"{seen}; {wanted}"
    if want < DARK_LEVEL:
        # so dim that a sensor cannot tell its colour: only the level is compared
        if abs(reading.level - want) <= tolerance.level:
            return None
        return f"{seen}, another level; {wanted}"
    if reading.level < DARK_LEVEL or max(hex_to_rgb(reading.color)) == 0:
        return f"{seen}, no light; {wanted}"
    target_rgb = hex_to_rgb(target.color)
    got = rgb_to_hsv(hex_to_rgb(reading.color))
    if not colour_matches(got, target_rgb, tolerance):
        off_by = hue_distance(got.h, rgb_to_hsv(target_rgb).h)
        return f"{seen}, another colour ({off_by:.0f} degrees of hue away); {wanted}"
    if abs(reading.level - want) > tolerance.level:
        return f"{seen}, another level; {wanted}"
    return None


def mismatch_record(
    target: LightState, reading: Reading, reason: str, step_at: datetime
) -> dict[str, Any]:
    """What staff see of a mismatch: the reason and the raw figures."""
    return {
        "reason": reason,
        "step_at": format_instant(step_at),
        "target": target.model_dump(mode="json"),
        "reading": reading.model_dump(mode="json", exclude_none=True),
    }


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
    """`confirmed_at` with what the device last reported about itself. A step its light
    sensor refuted is confirmed only by a later reading that matches (or a later step)."""
    if refuted(device, version, step.at) and (
        device.applied_version,
        device.applied_step_at,
    ) == (version, step.at):
        return None
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


def device_confirmation(
    device: DeviceView, version: int, step: PlanStep
) -> tuple[datetime, ConfirmedBy] | None:
    """When and how the device confirmed `step` of plan `version`, or None."""
    at = device_confirmed_at(device, version, step)
    if at is None:
        return None
    return at, confirmed_by(device.confirmed_by)
