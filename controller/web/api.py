"""The staff API under /api/v1, behind bearer tokens with roles.

`build_web` installs it: it puts a `StaffContext` in `app.state.staff` and includes the
router from `build_api()`. Route functions get what they need through the `Annotated`
dependencies below, so new routers (devices, for technicians) can reuse them:

- `CurrentPrincipal`: any authenticated user; 401 with `WWW-Authenticate: Bearer` when
  the token is missing, unknown, expired or revoked, or its user is disabled.
- `permit(action)`: the same, then the user's `Grant` for the action, from the policy
  table in `controller/access.py`; 403 when their role may not take it at all. A route
  on an object of one city calls `in_scope(grant, city, ...)`, which answers 404 for an
  object outside the grant's cities, as for one that does not exist.

Every staff route takes exactly one `permit(...)`: tests/controller/test_access_matrix.py
walks `app.routes` and holds each route to its declared row.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from controller.access import Action, AuditKind, Grant, grant
from controller.auth import Principal
from controller.campaigns import EVALUATION_S, TOP, CampaignRejected, apply_campaign
from controller.registrar import Registrar
from controller.store.audit import AuditLog, AuditRecord
from controller.store.base import Stores
from controller.store.users import Users
from controller.web.body_schemas import CAMPAIGN_BODY_SCHEMA, body_ref
from devices.clock import Clock
from schedules.budget import Budget
from schedules.cost import Limits
from schedules.files import ScheduleFileError, parse_document
from schedules.model import ID_PATTERN, Campaign, is_id

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_REPORTED_ERRORS = 50
MAX_JSON_DEPTH = 32
"""Arrays and objects nested deeper than this are refused before they are parsed."""
BODY_SOURCE = "body"
_PATH_RE = re.compile(r"\(top\)|(?:[^\s\[\].:]+|\[\d+\])(?:\[\d+\]|\.[^\s\[\].:]+)*")


@dataclass(frozen=True)
class StaffContext:
    stores: Stores
    users: Users
    audit: AuditLog
    clock: Clock
    on_change: Callable[[], None]
    monotonic: Callable[[], float] = time.monotonic
    """The clock of evaluation deadlines (a seam: tests pass a fake)."""
    limits: Limits = field(default_factory=Limits)
    evaluation_s: float = EVALUATION_S
    """How long checking one campaign may take before it is refused."""
    registrar: Registrar | None = None
    """Registers, rotates and decommissions devices (registry and broker accounts)."""


def staff_context(request: Request) -> StaffContext:
    context = getattr(request.app.state, "staff", None)
    if not isinstance(context, StaffContext):
        raise RuntimeError("the staff API is not installed: set app.state.staff")
    return context


Staff = Annotated[StaffContext, Depends(staff_context)]

bearer = HTTPBearer(
    auto_error=False,
    description="A staff token from `illuminate users add` (or `users token`).",
)


def current_principal(
    staff: Staff,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = staff.users.authenticate(credentials.credentials, staff.clock())
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def permit(action: Action) -> Callable[[Principal], Grant]:
    """A dependency: the authenticated principal's grant for `action`, or 403."""

    def check(principal: CurrentPrincipal) -> Grant:
        found = grant(principal, action)
        if found is None:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"the {principal.role.value} role may not do this",
            )
        return found

    check.__name__ = f"permit_{action.name.lower()}"
    return check


def in_scope(allowed: Grant, found: T | None, city: Callable[[T], str | None], missing: str) -> T:
    """`found`, if it exists and the grant covers its city; else 404 with `missing`: an
    object of another city is answered as if it did not exist."""
    if found is None or not allowed.covers(city(found)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=missing)
    return found


def audit(staff: StaffContext, *records: AuditRecord) -> None:
    """Append to the audit log. Called after the change is stored; a failure here is
    not swallowed, so the caller learns that the change went unrecorded."""
    staff.audit.append(records)


WhoAmI = Annotated[Grant, Depends(permit(Action.WHO_AM_I))]
CampaignReader = Annotated[Grant, Depends(permit(Action.READ_CAMPAIGNS))]
CampaignEditor = Annotated[Grant, Depends(permit(Action.EDIT_CAMPAIGNS))]


class ErrorItem(BaseModel):
    path: str
    message: str


class ValidationProblem(BaseModel):
    detail: list[ErrorItem]


class Problem(BaseModel):
    detail: str


class CampaignSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    title: dict[str, str]
    priority: int
    created_at: datetime
    updated_at: datetime


def _invalid(items: list[ErrorItem]) -> JSONResponse:
    if len(items) > MAX_REPORTED_ERRORS:
        more = len(items) - MAX_REPORTED_ERRORS
        items = [*items[:MAX_REPORTED_ERRORS], ErrorItem(path=TOP, message=f"and {more} more")]
    body = ValidationProblem(detail=items).model_dump()
    return JSONResponse(body, status_code=422)


def _error_items(text: str) -> list[ErrorItem]:
    """`body: windows[0].start.at: message` lines, as {path, message} items.

    A line that does not start with a path (after the optional source) is kept whole,
    with the path "(top)".
    """
    items = []
    for line in text.splitlines():
        rest = line.removeprefix(f"{BODY_SOURCE}: ")
        path, sep, message = rest.partition(": ")
        if sep and _PATH_RE.fullmatch(path):
            items.append(ErrorItem(path=path, message=message))
        elif rest.strip():
            items.append(ErrorItem(path=TOP, message=rest))
    return items or [ErrorItem(path=TOP, message=text or "invalid")]


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth_over(raw: bytes, limit: int) -> bool:
    """Does the JSON text nest arrays and objects deeper than `limit`? One linear scan,
    strings skipped, so a hostile body is refused before the parser recurses into it."""
    depth = 0
    for match in _JSON_TOKEN.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def _parse_json(raw: bytes) -> Any:
    if json_depth_over(raw, MAX_JSON_DEPTH):
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in {"", "application/json"} or (
        media.startswith("application/") and media.endswith("+json")
    )


def _notify(on_change: Callable[[], None]) -> None:
    try:
        on_change()
    except Exception:
        log.exception("the change was stored, but the reconcile after it failed")


CAMPAIGN_BODY = {
    "requestBody": {
        "required": True,
        "description": "The campaign, in the same schema as a campaign YAML file. "
        "`id` may be left out; when present it must equal the id in the path.",
        "content": {"application/json": {"schema": body_ref(CAMPAIGN_BODY_SCHEMA)}},
    }
}


def _bad_id(name: str, value: str) -> JSONResponse:
    return _invalid(
        [
            ErrorItem(
                path=name,
                message=f"{value!r} is not a valid id: use 1-48 lower-case letters, digits "
                "and '-', starting with a letter or digit",
            )
        ]
    )


def store_campaign(
    staff: StaffContext, principal: Principal, campaign: Campaign
) -> tuple[bool, dict[str, Any]]:
    """Check and store a campaign, with its audit entry: (created?, the stored body).
    CampaignRejected when it cannot be applied (nothing changed). The caller then
    notifies `staff.on_change`. The API's PUT and the console both come through here."""
    budget = Budget(staff.monotonic, seconds=staff.evaluation_s)
    now = staff.clock()
    created = apply_campaign(staff.stores, campaign, now, staff.limits, budget)
    audit(
        staff,
        AuditRecord(
            at=now,
            actor=principal.name,
            kind=AuditKind.CAMPAIGN,
            action="created" if created else "replaced",
            subject=campaign.id,
        ),
    )
    record = staff.stores.campaigns.record(campaign.id)
    body = record.body if record else campaign.model_dump(mode="json")
    return created, body


def campaign_summaries(staff: StaffContext) -> list[CampaignSummary]:
    """Every stored campaign, as `GET /api/v1/campaigns` lists them."""
    summaries = []
    for record in staff.stores.campaigns.records():
        campaign = Campaign.model_validate(record.body)
        summaries.append(
            CampaignSummary(
                id=record.id,
                title=dict(campaign.title),
                priority=campaign.priority,
                created_at=record.created_at,
                updated_at=record.updated_at,
            )
        )
    return summaries


IdParam = Annotated[
    str,
    PathParam(
        description="1-48 lower-case letters, digits and '-', starting with a letter or digit",
        examples=["blue-heart"],
        json_schema_extra={"pattern": ID_PATTERN},
    ),
]
"""An id in a path. Checked in the route (`is_id`), so every refusal has the same 422
body; the pattern is documented, not enforced by the router."""
CampaignId = IdParam

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing, unknown, expired or revoked bearer token"},
    403: {"model": Problem, "description": "the role may not do this"},
}


def build_api() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["staff"], responses=AUTH_RESPONSES)

    @router.get("/me", response_model=Principal)
    def me(allowed: WhoAmI) -> Principal:
        """The authenticated user: name, role and (for technicians) cities."""
        return allowed.principal

    @router.get("/campaigns", response_model=list[CampaignSummary])
    def list_campaigns(staff: Staff, _allowed: CampaignReader) -> list[CampaignSummary]:
        return campaign_summaries(staff)

    @router.get(
        "/campaigns/{campaign_id}",
        responses={404: {"model": Problem, "description": "no such campaign"}},
    )
    def get_campaign(
        campaign_id: CampaignId, staff: Staff, _allowed: CampaignReader
    ) -> JSONResponse:
        """The campaign as stored (same schema as the YAML file, defaults filled in)."""
        if not is_id(campaign_id):
            return _bad_id("campaign_id", campaign_id)
        record = staff.stores.campaigns.record(campaign_id)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no campaign {campaign_id!r}")
        return JSONResponse(record.body)

    @router.put(
        "/campaigns/{campaign_id}",
        openapi_extra=CAMPAIGN_BODY,
        responses={
            200: {"description": "replaced; the stored campaign"},
            201: {"description": "created; the stored campaign"},
            413: {"model": Problem, "description": "body over the size limit"},
            415: {"model": Problem, "description": "body is not JSON"},
            422: {"model": ValidationProblem, "description": "not a valid campaign"},
        },
    )
    async def put_campaign(
        campaign_id: CampaignId, request: Request, staff: Staff, allowed: CampaignEditor
    ) -> JSONResponse:
        """Create or replace a campaign; the devices get new plans at once."""
        if not is_id(campaign_id):
            return _bad_id("campaign_id", campaign_id)
        if not _is_json(request.headers.get("content-type", "")):
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail="send the campaign as JSON"
            )
        try:
            data = _parse_json(await request.body())
        except ValueError as exc:
            return _invalid([ErrorItem(path=TOP, message=str(exc))])
        if not isinstance(data, dict):
            return _invalid([ErrorItem(path=TOP, message="the campaign must be a JSON object")])
        if "id" not in data:
            data["id"] = campaign_id
        elif data["id"] != campaign_id:
            return _invalid(
                [
                    ErrorItem(
                        path="id",
                        message=f"must equal the id in the URL ({campaign_id!r}), "
                        f"not {data['id']!r}",
                    )
                ]
            )
        try:
            campaign = parse_document(Campaign, data, BODY_SOURCE)
        except ScheduleFileError as exc:
            return _invalid(_error_items(str(exc)))

        try:
            created, body = await run_in_threadpool(
                store_campaign, staff, allowed.principal, campaign
            )
        except CampaignRejected as exc:
            if exc.path != TOP:
                return _invalid([ErrorItem(path=exc.path, message=exc.message)])
            return _invalid(_error_items(str(exc)))
        log.info(
            "campaign %s %s by %s",
            campaign.id,
            "created" if created else "replaced",
            allowed.principal.name,
        )
        await run_in_threadpool(_notify, staff.on_change)
        if created:
            location = str(request.url_for("get_campaign", campaign_id=campaign.id).path)
            return JSONResponse(body, status_code=201, headers={"Location": location})
        return JSONResponse(body, status_code=200)

    return router
