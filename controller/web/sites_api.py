"""Site routes of the staff API: reading sites, within the caller's cities.

Technicians see the sites of their own cities (another city's site answers 404);
coordinators and admins see every site (the policy in `controller/access.py`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from controller.access import Action, Grant
from controller.web.api import AUTH_RESPONSES, IdParam, Problem, Staff, _bad_id, in_scope, permit
from schedules.model import Site, is_id

SiteReader = Annotated[Grant, Depends(permit(Action.READ_SITES))]


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

    return router
