"""Device routes of the staff API: registering devices in bulk (admins only, by the
policy in `controller/access.py`); each device registered is an audit entry.

`build_devices_api()` is included under /api/v1 by `build_web`. The checks, passwords
and hashes are those of `illuminate devices import` (controller/registration.py).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from controller.access import Action, AuditKind, Grant
from controller.registration import (
    MAX_REPORTED_PROBLEMS,
    MAX_REQUEST_DEVICES,
    TOP,
    ImportRejected,
    Prepared,
    Problem,
    parse_request,
    register,
)
from controller.store.audit import AuditRecord
from controller.web.api import (
    AUTH_RESPONSES,
    Staff,
    _is_json,
    _notify,
    _parse_json,
    audit,
    permit,
)
from controller.web.api import Problem as ProblemBody

log = logging.getLogger(__name__)

IMPORT_PATH = "/api/v1/devices/import"
MAX_IMPORT_BYTES = 2 * 1024 * 1024
"""The body limit of IMPORT_PATH: 10,000 devices with long ids and site ids fit."""

Importer = Annotated[Grant, Depends(permit(Action.IMPORT_DEVICES))]


class DeviceProblem(BaseModel):
    path: str
    """`devices[3]`, `devices[3].site`, or `(top)` for the body as a whole."""
    id: str | None = None
    message: str


class ImportProblems(BaseModel):
    detail: list[DeviceProblem]


class DeviceCredential(BaseModel):
    id: str
    password: str


class ImportResult(BaseModel):
    registered: int
    credentials: list[DeviceCredential]


IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "description": f"Up to {MAX_REQUEST_DEVICES} devices, registered all together or "
        "not at all. Each site must exist; ids are 1-48 lower-case letters, digits and "
        "'-', and may not start with 'illuminate'.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["devices"],
                    "additionalProperties": False,
                    "properties": {
                        "devices": {
                            "type": "array",
                            "maxItems": MAX_REQUEST_DEVICES,
                            "items": {
                                "type": "object",
                                "required": ["id", "site"],
                                "additionalProperties": False,
                                "properties": {
                                    "id": {"type": "string"},
                                    "site": {"type": "string"},
                                },
                            },
                        }
                    },
                },
                "example": {
                    "devices": [
                        {"id": "menin-gate-ctl", "site": "menin-gate"},
                        {"id": "atomium-ctl", "site": "atomium"},
                    ]
                },
            }
        },
    }
}


def _path(problem: Problem) -> str:
    return f"{problem.where}.{problem.field}" if problem.field else problem.where


def _answer(problems: tuple[Problem, ...], status_code: int) -> JSONResponse:
    items = [
        DeviceProblem(path=_path(p), id=p.device_id, message=p.message)
        for p in problems[:MAX_REPORTED_PROBLEMS]
    ]
    if len(problems) > MAX_REPORTED_PROBLEMS:
        more = len(problems) - MAX_REPORTED_PROBLEMS
        items.append(DeviceProblem(path=TOP, message=f"and {more} more"))
    return JSONResponse(ImportProblems(detail=items).model_dump(), status_code=status_code)


def build_devices_api() -> APIRouter:
    router = APIRouter(prefix="/api/v1/devices", tags=["devices"], responses=AUTH_RESPONSES)

    @router.post(
        "/import",
        status_code=201,
        response_model=ImportResult,
        openapi_extra=IMPORT_BODY,
        responses={
            201: {"description": "registered; the passwords, shown only here"},
            409: {"model": ImportProblems, "description": "ids already registered"},
            413: {"model": ProblemBody, "description": "body over the size limit"},
            415: {"model": ProblemBody, "description": "body is not JSON"},
            422: {"model": ImportProblems, "description": "bad devices, every one listed"},
        },
    )
    async def import_devices(request: Request, staff: Staff, allowed: Importer) -> JSONResponse:
        """Register a batch of devices, each with a new random password.

        Nothing is registered unless every device can be. The passwords are in this
        response only (the registry keeps their hashes): keep them safe.
        """
        if not _is_json(request.headers.get("content-type", "")):
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail="send the devices as JSON"
            )
        try:
            data: Any = _parse_json(await request.body())
        except ValueError as exc:
            return _answer((Problem(TOP, str(exc)),), 422)
        batch = parse_request(data)
        who = allowed.principal.name

        def register_them() -> Prepared:
            now = staff.clock()
            done = register(staff.stores.registry, batch, now)
            cities = {s.id: s.city for s in staff.stores.registry.catalog().sites}
            audit(
                staff,
                *(
                    AuditRecord(
                        at=now,
                        actor=who,
                        kind=AuditKind.DEVICE,
                        action="registered",
                        subject=d.id,
                        city=cities.get(d.site_id),
                        detail={"site": d.site_id, "via": "import"},
                    )
                    for d in done.devices
                ),
            )
            return done

        try:
            done = await run_in_threadpool(register_them)
        except ImportRejected as exc:
            return _answer(exc.problems, 409 if exc.only_registered else 422)
        log.info("%d devices registered at %d sites by %s", len(done.devices), done.sites, who)
        await run_in_threadpool(_notify, staff.on_change)
        body = ImportResult(
            registered=len(done.devices),
            credentials=[DeviceCredential(id=c.id, password=c.password) for c in done.credentials],
        )
        return JSONResponse(
            body.model_dump(), status_code=201, headers={"Cache-Control": "no-store"}
        )

    return router
