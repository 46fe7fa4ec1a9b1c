"""The web app: the public page and JSON, the staff API, health, readiness and metrics."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from controller.campaigns import EVALUATION_S
from controller.metrics import Metrics
from controller.public import DEFAULT_LANGUAGE, PublicStatus
from controller.public_view import PublicView
from controller.registrar import Registrar
from controller.settings import PublicSettings
from controller.store.audit import AuditLog, SqlAuditLog
from controller.store.base import Stores
from controller.store.history import HistoryStore
from controller.store.history_sql import sql_history
from controller.store.users import Users
from controller.web.api import StaffContext, build_api
from controller.web.audit_api import build_audit_api
from controller.web.body_schemas import with_body_schemas
from controller.web.campaigns_api import build_campaigns_api
from controller.web.console import install_console
from controller.web.device_ops_api import build_device_ops_api
from controller.web.devices_api import IMPORT_PATH, MAX_IMPORT_BYTES, build_devices_api
from controller.web.feeds_api import install_public_feeds
from controller.web.headers import (
    DOCS_POLICY,
    SecurityHeaders,
    embed_policy,
    page_policy,
    tile_source,
)
from controller.web.history_api import build_history_api
from controller.web.limits import MAX_BODY_BYTES, BodySizeLimit
from controller.web.monuments import install_monuments
from controller.web.page import PageSource, PublicPage, install_public_page
from controller.web.rollouts_api import build_rollouts_api
from controller.web.sites_api import build_sites_api
from controller.web.status_route import (
    STATUS_PATH,
    PublicStatusRoute,
    accepts_gzip,
    etag_matches,
    status_headers,
)
from devices.clock import Clock
from devices.connection import BrokerAddress
from devices.protocol import Topics
from schedules.cost import Limits

STATIC = Path(__file__).parent / "static"
STARTING_RETRY_S = 1
DOCS_PATH = "/api/docs"
OPENAPI_PATH = "/api/openapi.json"
"""The only documentation routes (docs/staff-api.md)."""


class WebApp(FastAPI):
    """The FastAPI app, with an optional `front`: an ASGI app that sees every request
    first and hands on what it does not answer (the public status's lookup, which then
    costs no framework layer at all: error handling, telemetry, body limits)."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is not None:
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def build_web(
    stores: Stores,
    clock: Clock,
    metrics: Metrics,
    public: PublicView,
    ready: Callable[[], dict[str, bool]],
    users: Users,
    on_change: Callable[[], None] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    limits: Limits | None = None,
    evaluation_s: float = EVALUATION_S,
    monotonic: Callable[[], float] | None = None,
    status_lookup: bool = True,
    audit: AuditLog | None = None,
    history: HistoryStore | None = None,
    registrar: Registrar | None = None,
    public_settings: PublicSettings | None = None,
) -> FastAPI:
    """The app. `public` serves the public status as rendered; `on_change` runs after
    each accepted edit (the Controller reconciles). `limits` and `evaluation_s` bound
    what checking a campaign may cost, timed on `monotonic` (the clock's own, if it
    has one). `status_lookup` answers the public status before the framework does
    (`PublicStatusRoute`); off, the documented route answers it alike (tests compare).
    `audit` records the staff API's changes; by default, the stores' own log (which
    the registry's edits write to in their transactions), else the users' database,
    where `history` (the record of what was lit) is read from by default too.
    `registrar` registers, rotates and decommissions devices; by default one that
    changes the registry only (no broker accounts), for a broker on 127.0.0.1:1883.
    `public_settings` gives the page's map tiles, who may frame the widget, and the
    public address for shared links."""
    app = WebApp(
        title="Illuminate",
        summary="Monument illumination, confirmed by the devices themselves.",
        version="1",
        docs_url=DOCS_PATH,
        openapi_url=OPENAPI_PATH,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )

    import_limit = max(max_body_bytes, MAX_IMPORT_BYTES)
    app.add_middleware(
        BodySizeLimit, max_bytes=max_body_bytes, path_limits={IMPORT_PATH: import_limit}
    )
    app.add_middleware(SecurityHeaders, path_policies={DOCS_PATH: DOCS_POLICY})
    if status_lookup:
        # in front of everything, FastAPI's and Starlette's own layers too: a lookup
        app.front = PublicStatusRoute(functools.partial(FastAPI.__call__, app), public=public)
    app.state.staff = StaffContext(
        stores=stores,
        users=users,
        audit=audit if audit is not None else _audit_of(stores, users),
        clock=clock,
        on_change=on_change if on_change is not None else _nothing,
        monotonic=monotonic if monotonic is not None else _monotonic_of(clock),
        limits=limits or Limits(),
        evaluation_s=evaluation_s,
        registrar=registrar
        if registrar is not None
        else Registrar(stores, Topics(), BrokerAddress("127.0.0.1", 1883)),
    )
    with_body_schemas(app)
    app.include_router(build_api())
    app.include_router(build_campaigns_api())
    app.include_router(build_devices_api())
    app.include_router(build_device_ops_api())
    app.include_router(build_sites_api())
    app.include_router(build_audit_api())
    app.include_router(build_rollouts_api())
    app.state.history = history if history is not None else sql_history(users.sessions)
    app.include_router(build_history_api())
    install_public_feeds(app, public, stores, app.state.history, clock, metrics)
    install_console(app, public)

    @app.get(
        STATUS_PATH,
        response_model=PublicStatus,
        response_model_exclude_none=True,
        responses={
            304: {"description": "Not modified (If-None-Match names the current ETag)"},
            503: {"description": "Starting: the first status is not rendered yet"},
        },
        tags=["public"],
    )
    async def status(request: Request, lang: str = DEFAULT_LANGUAGE) -> Response:
        rendering = public.get(lang)
        if rendering is None:
            return JSONResponse(
                {"detail": "starting: the public status is not ready yet"},
                status_code=503,
                headers={"Retry-After": str(STARTING_RETRY_S), "Cache-Control": "no-store"},
            )
        headers = status_headers(rendering)
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and etag_matches(if_none_match, rendering.etag):
            return Response(status_code=304, headers=headers)
        body = rendering.body
        if accepts_gzip(request.headers.get("accept-encoding", "")):
            body = rendering.gzip
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type="application/json", headers=headers)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> JSONResponse:
        checks = ready()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics_text() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    shown = public_settings if public_settings is not None else PublicSettings()
    page = PublicPage(
        public,
        PageSource(stores, app.state.history, _monotonic_of(clock)),
        clock,
        map_tiles=shown.map_tiles,
        map_attribution=shown.map_attribution,
        policy=page_policy(tile_source(shown.map_tiles)),
        monotonic=_monotonic_of(clock),
    )
    install_monuments(app, page, embed_policy(shown.embed_ancestors), shown.base_url)
    install_public_page(app, page)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _monotonic_of(clock: Clock) -> Callable[[], float]:
    """The clock's own monotonic reading (a TimeSource has one), else the machine's."""
    reading = getattr(clock, "monotonic", None)
    return reading if callable(reading) else time.monotonic


def _nothing() -> None:
    pass


def _audit_of(stores: Stores, users: Users) -> AuditLog:
    return stores.audit if stores.audit is not None else SqlAuditLog(users.sessions)
