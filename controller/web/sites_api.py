"""Site routes of the staff API: reading, creating or replacing, and deleting sites,
within the caller's cities.

Technicians see and edit the sites of their own cities (another city's site answers
404); coordinators see every site; admins see and edit every site (the policy in
`controller/access.py`). Each edit and its audit entry go in one transaction.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from controller.access import Action, AuditKind, Grant
from controller.store.audit import AuditRecord
from controller.store.base import InUse, UnknownObject
from controller.web.api import (
    AUTH_RESPONSES,
    ErrorItem,
    IdParam,
    Problem,
    Staff,
    ValidationProblem,
    _bad_id,
    _invalid,
    _is_json,
    _notify,
    _parse_json,
    in_scope,
    permit,
)
from schedules.model import Site, is_id

log = logging.getLogger(__name__)

SiteReader = Annotated[Grant, Depends(permit(Action.READ_SITES))]
SiteEditor = Annotated[Grant, Depends(permit(Action.EDIT_SITES))]


class InUseProblem(BaseModel):
    detail: str
    devices: list[str]


SITE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The site: `city` (an existing city), `name` (text per language), "
        "`lat`, `lon` and optional `tags`. `id` may be left out; when present it must "
        "equal the id in the path.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["city", "name", "lat", "lon"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "city": {"type": "string"},
                        "name": {"type": "object", "additionalProperties": {"type": "string"}},
                        "lat": {"type": "number", "minimum": -90, "maximum": 90},
                        "lon": {"type": "number", "minimum": -180, "maximum": 180},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "example": {
                    "city": "brussels",
                    "name": {"en": "Atomium", "fr": "Atomium", "nl": "Atomium"},
                    "lat": 50.8949,
                    "lon": 4.3415,
                    "tags": ["landmark"],
                },
            }
        },
    }
}


def validation_items(exc: ValidationError) -> list[ErrorItem]:
    """A pydantic error as {path, message} items (the staff API's 422 body)."""
    items = []
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"]) or "(top)"
        items.append(ErrorItem(path=path, message=err["msg"].removeprefix("Value error, ")))
    return items


class SiteSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    city: str
    name: dict[str, str]
    lat: float
    lon: float
    tags: list[str]


def _summary(site: Site) -> SiteSummary:
    return SiteSummary(
        id=site.id,
        city=site.city,
        name=dict(site.name),
        lat=site.lat,
        lon=site.lon,
        tags=list(site.tags),
    )


def _city(site: Site) -> str:
    return site.city


def build_sites_api() -> APIRouter:
    router = APIRouter(prefix="/api/v1/sites", tags=["sites"], responses=AUTH_RESPONSES)

    @router.get("", response_model=list[SiteSummary])
    def list_sites(staff: Staff, allowed: SiteReader) -> list[SiteSummary]:
        """The sites the caller may see, by id."""
        sites = staff.stores.registry.catalog().sites
        return [_summary(s) for s in sorted(sites, key=lambda s: s.id) if allowed.covers(s.city)]

    @router.get(
        "/{site_id}",
        response_model=SiteSummary,
        responses={404: {"model": Problem, "description": "no such site (in the caller's cities)"}},
    )
    def get_site(site_id: IdParam, staff: Staff, allowed: SiteReader) -> SiteSummary | JSONResponse:
        """One site, if it is in the caller's cities."""
        if not is_id(site_id):
            return _bad_id("site_id", site_id)
        found = {s.id: s for s in staff.stores.registry.catalog().sites}.get(site_id)
        return _summary(in_scope(allowed, found, _city, f"no site {site_id!r}"))

    @router.put(
        "/{site_id}",
        response_model=SiteSummary,
        openapi_extra=SITE_BODY,
        responses={
            200: {"description": "replaced; the stored site"},
            201: {"description": "created; the stored site"},
            403: {"model": Problem, "description": "the role may not place sites in that city"},
            404: {"model": Problem, "description": "the site is in another city"},
            413: {"model": Problem, "description": "body over the size limit"},
            415: {"model": Problem, "description": "body is not JSON"},
            422: {"model": ValidationProblem, "description": "not a valid site"},
        },
    )
    async def put_site(
        site_id: IdParam, request: Request, staff: Staff, allowed: SiteEditor
    ) -> JSONResponse:
        """Create or replace a site. The public page and the plans follow at once."""
        if not is_id(site_id):
            return _bad_id("site_id", site_id)
        if not _is_json(request.headers.get("content-type", "")):
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail="send the site as JSON"
            )
        try:
            data: Any = _parse_json(await request.body())
        except ValueError as exc:
            return _invalid([ErrorItem(path="(top)", message=str(exc))])
        if not isinstance(data, dict):
            return _invalid([ErrorItem(path="(top)", message="the site must be a JSON object")])
        if data.setdefault("id", site_id) != site_id:
            return _invalid(
                [
                    ErrorItem(
                        path="id",
                        message=f"must equal the id in the URL ({site_id!r}), not {data['id']!r}",
                    )
                ]
            )
        try:
            site = Site.model_validate(data)
        except ValidationError as exc:
            return _invalid(validation_items(exc))
        who = allowed.principal.name

        def store_it() -> bool:
            catalog = staff.stores.registry.catalog()
            old = {s.id: s for s in catalog.sites}.get(site_id)
            if old is not None:
                in_scope(allowed, old, _city, f"no site {site_id!r}")
            if not allowed.covers(site.city):
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    detail=f"you may not place sites in city {site.city!r}",
                )
            now = staff.clock()
            detail = {"from_city": old.city} if old is not None and old.city != site.city else None
            record = AuditRecord(
                at=now,
                actor=who,
                kind=AuditKind.SITE,
                action="created" if old is None else "replaced",
                subject=site.id,
                city=site.city,
                detail=detail,
            )
            return staff.stores.registry.put_site(site, now, [record])

        try:
            created = await run_in_threadpool(store_it)
        except UnknownObject as exc:
            return _invalid([ErrorItem(path="city", message=str(exc))])
        log.info("site %s %s by %s", site.id, "created" if created else "replaced", who)
        await run_in_threadpool(_notify, staff.on_change)
        body = _summary(site).model_dump(mode="json")
        if created:
            location = str(request.url_for("get_site", site_id=site.id).path)
            return JSONResponse(body, status_code=201, headers={"Location": location})
        return JSONResponse(body)

    @router.delete(
        "/{site_id}",
        status_code=204,
        response_class=Response,
        responses={
            204: {"description": "deleted"},
            404: {"model": Problem, "description": "no such site (in the caller's cities)"},
            409: {"model": InUseProblem, "description": "devices in service are on it"},
        },
    )
    async def delete_site(site_id: IdParam, staff: Staff, allowed: SiteEditor) -> Response:
        """Delete a site: it leaves the public page and the plans. Refused (409) while
        devices in service are on it: decommission them first. Its history stays."""
        if not is_id(site_id):
            return _bad_id("site_id", site_id)

        def remove() -> None:
            found = {s.id: s for s in staff.stores.registry.catalog().sites}.get(site_id)
            site = in_scope(allowed, found, _city, f"no site {site_id!r}")
            now = staff.clock()
            record = AuditRecord(
                at=now,
                actor=allowed.principal.name,
                kind=AuditKind.SITE,
                action="deleted",
                subject=site_id,
                city=site.city,
            )
            staff.stores.registry.remove_site(site_id, now, [record])

        try:
            await run_in_threadpool(remove)
        except UnknownObject:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no site {site_id!r}") from None
        except InUse as exc:
            body = InUseProblem(detail=str(exc), devices=list(exc.devices))
            return JSONResponse(body.model_dump(), status_code=409)
        log.info("site %s deleted by %s", site_id, allowed.principal.name)
        await run_in_threadpool(_notify, staff.on_change)
        return Response(status_code=204)

    return router
