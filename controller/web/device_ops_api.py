"""Technicians' device routes of the staff API: a test flash, and the device's health.

- `POST /api/v1/devices/{device_id}/test` (EDIT_DEVICES: admins, and technicians in
  their own cities) sends a short test plan and answers with the round trip to
  `applied`, or `timeout` (controller/flash.py). Rate-limited per device and per user:
  429 with Retry-After. Each test is an audit entry (kind `device`, action `tested`).
- `GET /api/v1/devices/{device_id}/health` (READ_DEVICES) answers online or offline,
  last seen, firmware, clock offset, and the current plan version and state
  (controller/device_health.py).

A device of another city is answered 404, as one that does not exist. The services
come from `app.state.device_ops` (a `DeviceOps`, set by `controller.app.Controller`);
without one, the route makes its own on the staff context, with no dispatcher to wake.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.access import Action, AuditKind, Grant
from controller.campaigns import TOP
from controller.clockwatch import ClockWatch
from controller.device_health import DeviceHealth, HealthTracker, device_health
from controller.flash import (
    DEFAULT_SECONDS,
    FLASH,
    MAX_SECONDS,
    MIN_SECONDS,
    Flash,
    FlashResult,
    FlashTester,
    Outcome,
    RateLimited,
    TestRunning,
)
from controller.store.audit import AuditRecord
from controller.store.base import DeviceView
from controller.web.api import (
    AUTH_RESPONSES,
    ErrorItem,
    IdParam,
    Problem,
    Staff,
    StaffContext,
    ValidationProblem,
    _bad_id,
    _invalid,
    _is_json,
    _parse_json,
    audit,
    in_scope,
    permit,
)
from devices.protocol import Instant, LightState, is_device_id

log = logging.getLogger(__name__)

Tester = Annotated[Grant, Depends(permit(Action.EDIT_DEVICES))]
Reader = Annotated[Grant, Depends(permit(Action.READ_DEVICES))]


@dataclass(frozen=True)
class DeviceOps:
    flash: FlashTester
    health: HealthTracker
    clock_watch: ClockWatch | None = None
    """Which devices' clocks are beyond the tolerance (health's `clock.flagged`)."""


def device_ops(request: Request) -> DeviceOps:
    ops = getattr(request.app.state, "device_ops", None)
    if isinstance(ops, DeviceOps):
        return ops
    staff: StaffContext = request.app.state.staff
    ops = DeviceOps(FlashTester(staff.stores, staff.clock, staff.monotonic), HealthTracker())
    request.app.state.device_ops = ops
    return ops


Ops = Annotated[DeviceOps, Depends(device_ops)]


class FlashRequest(BaseModel):
    """The body of a test (optional: every field has a default)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    seconds: float = Field(default=DEFAULT_SECONDS, ge=MIN_SECONDS, le=MAX_SECONDS)
    """How long the flash lasts, and how long the answer waits for the device."""
    color: str = FLASH.color
    level: int = Field(default=FLASH.level, ge=1, le=100)


class FlashAnswer(BaseModel):
    device: str
    version: int
    """The test plan's version (the real plan comes back above it)."""
    result: FlashResult
    round_trip_ms: float | None
    """From sending the test to the device's apply report, on the monotonic clock."""
    stage: str | None
    """The test plan's lifecycle state when the answer was given."""
    reason: str | None = None
    seconds: float
    issued_at: Instant
    back_at: Instant
    """When the device goes back to its real plan (the controller then sends it anew)."""


RATE_LIMITED = {
    "model": Problem,
    "description": "too many tests of this device or by this user; see Retry-After",
}


def _city(staff: StaffContext, view: DeviceView) -> str | None:
    sites = {s.id: s.city for s in staff.stores.registry.catalog().sites}
    return sites.get(view.site_id)


def _device(staff: StaffContext, allowed: Grant, device_id: str) -> tuple[DeviceView, str | None]:
    """The device and its city, or 404 when it does not exist or is another city's."""
    view = staff.stores.reports.views([device_id]).get(device_id)
    city = _city(staff, view) if view is not None else None
    in_scope(allowed, view, lambda _v: city, f"no device {device_id!r}")
    assert view is not None
    return view, city


def _answer(outcome: Outcome, seconds: float) -> FlashAnswer:
    flash = outcome.flash
    rt = outcome.round_trip_s
    return FlashAnswer(
        device=flash.device_id,
        version=flash.version,
        result=outcome.result,
        round_trip_ms=round(rt * 1000, 1) if rt is not None else None,
        stage=outcome.stage.value if outcome.stage is not None else None,
        reason=outcome.reason,
        seconds=seconds,
        issued_at=flash.issued_at,
        back_at=flash.back_at,
    )


def _body(raw: bytes, content_type: str) -> FlashRequest | JSONResponse:
    if not raw.strip():
        return FlashRequest()
    if not _is_json(content_type):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail="send the test as JSON")
    try:
        data: Any = _parse_json(raw)
    except ValueError as exc:
        return _invalid([ErrorItem(path=TOP, message=str(exc))])
    if not isinstance(data, dict):
        return _invalid([ErrorItem(path=TOP, message="the body must be a JSON object")])
    try:
        body = FlashRequest.model_validate(data)
        LightState(on=True, color=body.color, level=body.level)
    except ValidationError as exc:
        return _invalid(
            [
                ErrorItem(path=".".join(str(p) for p in e["loc"]) or TOP, message=e["msg"])
                for e in exc.errors()
            ]
        )
    return body


def run_test(
    staff: StaffContext,
    ops: DeviceOps,
    allowed: Grant,
    device_id: str,
    seconds: float,
    light: LightState,
) -> FlashAnswer:
    """Flash one device of the grant's cities (404 HTTPException when not, or unknown),
    wait for its answer and record the test in the audit log. RateLimited and
    TestRunning as the tester raises them. Blocking: the API and the console call it
    on a worker thread."""
    _view, city = _device(staff, allowed, device_id)
    who = allowed.principal.name
    flash: Flash = ops.flash.start(device_id, who, seconds, light)
    log.info("device %s: test flash v%d by %s", device_id, flash.version, who)
    outcome = ops.flash.wait(flash)
    answer = _answer(outcome, seconds)
    audit(
        staff,
        AuditRecord(
            at=flash.issued_at,
            actor=who,
            kind=AuditKind.DEVICE,
            action="tested",
            subject=device_id,
            city=city,
            detail={
                "version": flash.version,
                "result": answer.result.value,
                "round_trip_ms": answer.round_trip_ms,
                "seconds": seconds,
            },
        ),
    )
    return answer


def health_of(staff: StaffContext, ops: DeviceOps, allowed: Grant, device_id: str) -> DeviceHealth:
    """The health of one device of the grant's cities (404 HTTPException when not)."""
    view, city = _device(staff, allowed, device_id)
    command = staff.stores.outbox.latest([device_id]).get(device_id)
    flagged = ops.clock_watch.off() if ops.clock_watch is not None else None
    return device_health(
        view,
        city,
        command,
        ops.health.get(device_id),
        None if flagged is None else device_id in flagged,
    )


def build_device_ops_api() -> APIRouter:
    router = APIRouter(prefix="/api/v1/devices", tags=["devices"], responses=AUTH_RESPONSES)

    @router.post(
        "/{device_id}/test",
        response_model=FlashAnswer,
        responses={
            200: {"description": "the outcome: applied (with the round trip), or timeout"},
            404: {"model": Problem, "description": "no such device (in the caller's cities)"},
            409: {"model": Problem, "description": "a test of this device is under way"},
            415: {"model": Problem, "description": "body is not JSON"},
            422: {"model": ValidationProblem, "description": "bad id or body"},
            429: RATE_LIMITED,
        },
    )
    async def test_device(
        device_id: IdParam, request: Request, staff: Staff, ops: Ops, allowed: Tester
    ) -> JSONResponse:
        """Flash the device for a few seconds and time its apply report.

        The body is optional: `{"seconds": 10, "color": "#FFFFFF", "level": 100}`. The
        answer comes when the device reports the flash applied, or after `seconds`.
        A test never shows on the public page.
        """
        if not is_device_id(device_id):
            return _bad_id("device_id", device_id)
        body = _body(await request.body(), request.headers.get("content-type", ""))
        if isinstance(body, JSONResponse):
            return body
        light = LightState(on=True, color=body.color, level=body.level)
        try:
            answer = await run_in_threadpool(
                run_test, staff, ops, allowed, device_id, body.seconds, light
            )
        except RateLimited as exc:
            return JSONResponse(
                {"detail": exc.message},
                status_code=429,
                headers={"Retry-After": str(exc.retry_after)},
            )
        except TestRunning as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
        return JSONResponse(answer.model_dump(mode="json"), headers={"Cache-Control": "no-store"})

    @router.get(
        "/{device_id}/health",
        response_model=DeviceHealth,
        responses={
            404: {"model": Problem, "description": "no such device (in the caller's cities)"},
            422: {"model": ValidationProblem, "description": "bad id"},
        },
    )
    def device_health_route(
        device_id: IdParam, staff: Staff, ops: Ops, allowed: Reader
    ) -> JSONResponse:
        """Online or offline, last seen, firmware, clock offset, current plan and state."""
        if not is_device_id(device_id):
            return _bad_id("device_id", device_id)
        health = health_of(staff, ops, allowed, device_id)
        return JSONResponse(health.model_dump(mode="json"), headers={"Cache-Control": "no-store"})

    return router
