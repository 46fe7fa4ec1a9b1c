"""Device routes of the staff API, by the policy in `controller/access.py`:

- registering one device, listing, reading, rotating its credentials and
  decommissioning it: technicians for their own cities' sites (a device of another
  city answers 404), admins everywhere; coordinators read;
- registering devices in bulk: admins only.

Every change goes through the `Registrar` (controller/registrar.py): the registry and
the broker's accounts change together, and each change is an audit entry written in
the registry's transaction. `build_devices_api()` is included by `build_web`. The
checks, passwords and hashes are those of `illuminate devices import|add`
(controller/registration.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.access import Action, Grant
from controller.registrar import ADAPTERS, BrokerUnavailable, Issued, Registrar
from controller.registration import (
    MAX_REPORTED_PROBLEMS,
    MAX_REQUEST_DEVICES,
    TOP,
    BatchRejected,
    ImportRejected,
    Prepared,
    Problem,
    ProblemKind,
    parse_request,
    prepare,
)
from controller.store.base import DeviceRecord, DeviceView, Retired, UnknownObject
from controller.web.api import (
    AUTH_RESPONSES,
    ErrorItem,
    IdParam,
    Staff,
    StaffContext,
    ValidationProblem,
    _invalid,
    _is_json,
    _notify,
    _parse_json,
    in_scope,
    permit,
)
from controller.web.api import Problem as ProblemBody
from controller.web.sites_api import validation_items
from devices.adapters import AdapterConfigError
from devices.protocol import check_device_id

log = logging.getLogger(__name__)

T = TypeVar("T")

IMPORT_PATH = "/api/v1/devices/import"
MAX_IMPORT_BYTES = 2 * 1024 * 1024
"""The body limit of IMPORT_PATH: 10,000 devices with long ids and site ids fit."""

Importer = Annotated[Grant, Depends(permit(Action.IMPORT_DEVICES))]
DeviceReader = Annotated[Grant, Depends(permit(Action.READ_DEVICES))]
DeviceEditor = Annotated[Grant, Depends(permit(Action.EDIT_DEVICES))]


class NewDeviceBody(BaseModel):
    """`POST /api/v1/devices`: one device to register."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="device id, also its MQTT username and client id")
    site: str = Field(min_length=1, description="the id of the site it lights")
    adapter: str = Field(default="native", description="how the controller speaks to it")
    config: dict[str, Any] = Field(
        default_factory=dict, description="the adapter's settings (none for native)"
    )


class MqttBody(BaseModel):
    host: str
    port: int
    tls: bool
    username: str
    password: str | None
    """None: a bridge's account that already has its password (see `shared_with`)."""
    client_id: str
    topics: dict[str, str | list[str]]
    """A native device's topics by name; a third-party device's `reports` (it
    publishes) and `commands` (it subscribes), each a list of exact topics."""
    shared_with: list[str] = []
    """The other devices that log in with this account: lights behind the same
    Zigbee2MQTT bridge, whose account it is."""


class IssuedBody(BaseModel):
    """A device's MQTT settings with its new password: shown in this answer only."""

    id: str
    mqtt: MqttBody


class DeviceBody(BaseModel):
    """A device as the registry holds it, with what it last said about itself."""

    id: str
    site: str
    city: str
    adapter: str
    config: dict[str, Any]
    registered_at: datetime
    credentials_rotated_at: datetime | None
    decommissioned_at: datetime | None
    online: bool | None
    """None: never seen; false also right after a rotation or a decommission."""
    status_at: datetime | None
    firmware: str | None
    applied_version: int | None


def _device_body(record: DeviceRecord, view: DeviceView | None) -> DeviceBody:
    return DeviceBody(
        id=record.id,
        site=record.site_id,
        city=record.city,
        adapter=record.adapter,
        config=record.config,
        registered_at=record.created_at,
        credentials_rotated_at=record.credentials_at,
        decommissioned_at=record.decommissioned_at,
        online=view.online if view else False if record.decommissioned_at else None,
        status_at=view.status_at if view else None,
        firmware=view.firmware if view else None,
        applied_version=view.applied_version if view else None,
    )


def _issued(issued: Issued, status_code: int, location: str | None = None) -> JSONResponse:
    body = IssuedBody(id=issued.record.id, mqtt=MqttBody(**issued.mqtt.as_json()))
    headers = {"Cache-Control": "no-store"}
    if location:
        headers["Location"] = location
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def _registrar(staff: StaffContext) -> Registrar:
    if staff.registrar is None:
        raise RuntimeError("the staff API has no registrar")
    return staff.registrar


def _unavailable(exc: BrokerUnavailable) -> JSONResponse:
    log.error("%s", exc)
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "10"})


async def _change_device(
    staff: StaffContext,
    allowed: Grant,
    device_id: str,
    change: Callable[[Registrar, str, datetime], T],
) -> T | JSONResponse:
    """Rotate or decommission: the device must be in the caller's cities (404 when not
    or unknown), 409 when it is already decommissioned, 503 when the broker refused
    (nothing changed)."""
    bad = _bad_device_id(device_id)
    if bad is not None:
        return bad

    try:
        result = await run_in_threadpool(change_device, staff, allowed, device_id, change)
    except Retired as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)
    except UnknownObject:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}") from None
    except BrokerUnavailable as exc:
        return _unavailable(exc)
    await run_in_threadpool(_notify, staff.on_change)
    return result


def change_device(
    staff: StaffContext,
    allowed: Grant,
    device_id: str,
    change: Callable[[Registrar, str, datetime], T],
) -> T:
    """Rotate or decommission one device of the grant's cities (404 HTTPException when
    not, or unknown): Retired, UnknownObject, BrokerUnavailable as the registrar raises
    them. The caller then notifies `staff.on_change`. The API and the console both
    come through here."""
    registrar = _registrar(staff)
    found = staff.stores.registry.devices([device_id]).get(device_id)
    in_scope(allowed, found, _city, f"no device {device_id!r}")
    return change(registrar, allowed.principal.name, staff.clock())


def register_one(
    staff: StaffContext,
    allowed: Grant,
    device_id: str,
    site_id: str,
    adapter: str = "native",
    config: dict[str, Any] | None = None,
) -> Issued:
    """Register one device at a site of the grant's cities: a site of another city is
    refused as an unknown one (BatchRejected with no problems). BatchRejected,
    BrokerUnavailable as the registrar raises them. The caller then notifies
    `staff.on_change`. The API and the console both come through here."""
    registrar = _registrar(staff)
    sites = {s.id: s for s in staff.stores.registry.catalog().sites}
    site = sites.get(site_id)
    if site is None or not allowed.covers(site.city):
        raise BatchRejected([])  # answered as an unknown site
    return registrar.register(
        device_id,
        site_id,
        allowed.principal.name,
        staff.clock(),
        adapter=adapter,
        config=config or {},
    )


def _bad_device_id(value: str) -> JSONResponse | None:
    try:
        check_device_id(value)
    except ValueError as exc:
        return _invalid([ErrorItem(path="device_id", message=str(exc))])
    return None


def _city(record: DeviceRecord) -> str:
    return record.city


DEVICE_BODY = {
    "requestBody": {
        "required": True,
        "description": "One device: `id` (1-48 lower-case letters, digits and '-', not "
        "starting with 'illuminate'; also its MQTT username and client id), `site` (an "
        "existing site of the caller's cities), `adapter` (`native`, the default, or a "
        "third-party controller's: `wled`, `tasmota`, `zigbee2mqtt`, `ha-json`, "
        "`shelly-gen2`, `shelly-gen1`) and `config` (the adapter's settings, checked by "
        "it; none for native; see docs/devices.md).",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["id", "site"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "site": {"type": "string"},
                        "adapter": {"type": "string", "enum": list(ADAPTERS)},
                        "config": {"type": "object"},
                    },
                },
                "example": {"id": "atomium-ctl", "site": "atomium", "adapter": "native"},
            }
        },
    }
}


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
        registrar = _registrar(staff)

        def register_them() -> Prepared:
            done = prepare(staff.stores.registry, batch)
            registrar.register_batch(done, who, staff.clock(), via="import")
            return done

        try:
            done = await run_in_threadpool(register_them)
        except ImportRejected as exc:
            return _answer(exc.problems, 409 if exc.only_registered else 422)
        except BrokerUnavailable as exc:
            return _unavailable(exc)
        log.info("%d devices registered at %d sites by %s", len(done.devices), done.sites, who)
        await run_in_threadpool(_notify, staff.on_change)
        body = ImportResult(
            registered=len(done.devices),
            credentials=[DeviceCredential(id=c.id, password=c.password) for c in done.credentials],
        )
        return JSONResponse(
            body.model_dump(), status_code=201, headers={"Cache-Control": "no-store"}
        )

    @router.post(
        "",
        status_code=201,
        response_model=IssuedBody,
        openapi_extra=DEVICE_BODY,
        responses={
            201: {"description": "registered; its MQTT settings and password, shown only here"},
            409: {"model": ValidationProblem, "description": "the id is already registered"},
            413: {"model": ProblemBody, "description": "body over the size limit"},
            415: {"model": ProblemBody, "description": "body is not JSON"},
            422: {"model": ValidationProblem, "description": "bad device, or unknown site"},
            503: {"model": ProblemBody, "description": "the broker refused the account"},
        },
    )
    async def register_device(
        request: Request, staff: Staff, allowed: DeviceEditor
    ) -> JSONResponse:
        """Register one device at a site, with a new random password.

        The broker account (username and client id = device id) is created with it
        when the controller provisions accounts. The password is in this answer only.
        """
        if not _is_json(request.headers.get("content-type", "")):
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail="send the device as JSON"
            )
        try:
            data: Any = _parse_json(await request.body())
            entry = NewDeviceBody.model_validate(data)
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                return _invalid(validation_items(exc))
            return _invalid([ErrorItem(path=TOP, message=str(exc))])
        if entry.adapter not in ADAPTERS:
            return _invalid(
                [ErrorItem(path="adapter", message=f"use one of: {', '.join(ADAPTERS)}")]
            )
        if entry.adapter == "native" and entry.config:
            return _invalid([ErrorItem(path="config", message="native devices take no config")])
        try:
            issued = await run_in_threadpool(
                register_one, staff, allowed, entry.id, entry.site, entry.adapter, entry.config
            )
        except BatchRejected as exc:
            return _refused(exc, entry.site)
        except AdapterConfigError as exc:
            return _invalid([ErrorItem(path="config", message=str(exc))])
        except BrokerUnavailable as exc:
            return _unavailable(exc)
        log.info("device %s registered at %s by %s", entry.id, entry.site, allowed.principal.name)
        await run_in_threadpool(_notify, staff.on_change)
        location = str(request.url_for("get_device", device_id=entry.id).path)
        return _issued(issued, 201, location)

    @router.get("", response_model=list[DeviceBody])
    def list_devices(
        staff: Staff, allowed: DeviceReader, decommissioned: bool = False
    ) -> list[DeviceBody]:
        """The devices of the caller's cities, by id; decommissioned ones too with
        `?decommissioned=true`."""
        records = staff.stores.registry.devices()
        views = staff.stores.reports.views()
        return [
            _device_body(r, views.get(r.id))
            for r in records.values()
            if allowed.covers(r.city) and (decommissioned or r.active)
        ]

    @router.get(
        "/{device_id}",
        response_model=DeviceBody,
        responses={
            404: {"model": ProblemBody, "description": "no such device (in the caller's cities)"}
        },
    )
    def get_device(
        device_id: IdParam, staff: Staff, allowed: DeviceReader
    ) -> DeviceBody | JSONResponse:
        """One device (a decommissioned one too: its record stays)."""
        bad = _bad_device_id(device_id)
        if bad is not None:
            return bad
        found = staff.stores.registry.devices([device_id]).get(device_id)
        record = in_scope(allowed, found, _city, f"no device {device_id!r}")
        return _device_body(record, staff.stores.reports.views([device_id]).get(device_id))

    @router.post(
        "/{device_id}/credentials",
        response_model=IssuedBody,
        responses={
            200: {"description": "the new password, shown only here; the old one is dead"},
            404: {"model": ProblemBody, "description": "no such device (in the caller's cities)"},
            409: {"model": ProblemBody, "description": "the device is decommissioned"},
            503: {"model": ProblemBody, "description": "the broker refused; nothing changed"},
        },
    )
    async def rotate_credentials(
        device_id: IdParam, staff: Staff, allowed: DeviceEditor
    ) -> JSONResponse:
        """Issue a new password. The old one stops working at once: the broker closes
        the device's connections, and the device shows offline until it connects with
        the new one."""
        issued = await _change_device(
            staff, allowed, device_id, lambda r, who, now: r.rotate(device_id, who, now)
        )
        if isinstance(issued, JSONResponse):
            return issued
        log.info("device %s: credentials rotated by %s", device_id, allowed.principal.name)
        return _issued(issued, 200)

    @router.delete(
        "/{device_id}",
        response_model=DeviceBody,
        responses={
            200: {"description": "decommissioned; the device as kept"},
            404: {"model": ProblemBody, "description": "no such device (in the caller's cities)"},
            409: {"model": ProblemBody, "description": "already decommissioned"},
            503: {"model": ProblemBody, "description": "the broker refused; nothing changed"},
        },
    )
    async def decommission_device(
        device_id: IdParam, staff: Staff, allowed: DeviceEditor
    ) -> JSONResponse:
        """Decommission a device: its credentials are revoked (the broker closes its
        connections and refuses its logins), it leaves its site's status and gets no
        more plans. Its record and history stay; its id is not reused."""
        record = await _change_device(
            staff, allowed, device_id, lambda r, who, now: r.decommission(device_id, who, now)
        )
        if isinstance(record, JSONResponse):
            return record
        log.info("device %s decommissioned by %s", device_id, allowed.principal.name)
        return JSONResponse(_device_body(record, None).model_dump(mode="json"))

    return router


def refusal_items(exc: BatchRejected, site: str) -> tuple[bool, list[ErrorItem]]:
    """A single registration refused: (only an id already registered?, the items)."""
    if not exc.problems:
        return False, [ErrorItem(path="site", message=f"unknown site {site!r}")]
    paths = {
        ProblemKind.UNKNOWN_SITE: "site",
        ProblemKind.INVALID: "id",
        ProblemKind.RESERVED: "id",
        ProblemKind.REGISTERED: "id",
        ProblemKind.REPEATED: "id",
    }
    items = [ErrorItem(path=paths[p.kind], message=p.message) for p in exc.problems]
    return all(p.kind is ProblemKind.REGISTERED for p in exc.problems), items


def _refused(exc: BatchRejected, site: str) -> JSONResponse:
    """A single registration refused: 409 for an id already registered, else 422."""
    registered, items = refusal_items(exc, site)
    answer = _invalid(items)
    if registered:
        answer.status_code = 409
    return answer
