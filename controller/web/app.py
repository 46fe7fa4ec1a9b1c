"""The web app: the public page and JSON, the staff API, health, readiness and metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.metrics import Metrics
from controller.public import PublicStatus, public_status
from controller.store.repo import Store
from controller.store.users import Users
from controller.web.api import StaffContext, build_api
from controller.web.devices_api import IMPORT_PATH, MAX_IMPORT_BYTES, build_devices_api
from controller.web.limits import MAX_BODY_BYTES, BodySizeLimit
from devices.clock import Clock

STATIC = Path(__file__).parent / "static"
PUBLIC_CACHE = "public, max-age=5, s-maxage=10, stale-while-revalidate=30"
LANGUAGES = frozenset({"en", "fr", "nl", "de"})
PUBLIC_TTL_S = 1.0


class PublicCache:
    """The public status, computed at most once a second per language: a crowd on the
    page costs one computation, not one per visitor."""

    def __init__(self, ttl_s: float = PUBLIC_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, PublicStatus]] = {}

    def get(self, lang: str, compute: Callable[[], PublicStatus]) -> PublicStatus:
        with self._lock:
            hit = self._entries.get(lang)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]
            body = compute()
            self._entries[lang] = (time.monotonic(), body)
            return body


def build_web(
    store: Store,
    clock: Clock,
    metrics: Metrics,
    grace: timedelta,
    upcoming: timedelta,
    ready: Callable[[], dict[str, bool]],
    users: Users | None = None,
    on_change: Callable[[], None] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The app. `on_change` runs after each accepted edit (the Controller reconciles)."""
    app = FastAPI(
        title="Illuminate",
        summary="Monument illumination, confirmed by the devices themselves.",
        version="1",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
    )

    import_limit = max(max_body_bytes, MAX_IMPORT_BYTES)
    app.add_middleware(
        BodySizeLimit, max_bytes=max_body_bytes, path_limits={IMPORT_PATH: import_limit}
    )
    app.state.staff = StaffContext(
        store=store,
        users=users if users is not None else Users(store.sessions),
        clock=clock,
        on_change=on_change if on_change is not None else _nothing,
    )
    app.include_router(build_api())
    app.include_router(build_devices_api())

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    cache = PublicCache()

    @app.get(
        "/api/v1/public/status",
        response_model=PublicStatus,
        response_model_exclude_none=True,
        tags=["public"],
    )
    def status(request: Request, lang: str = "en") -> Response:
        lang = lang if lang in LANGUAGES else "en"
        body = cache.get(
            lang, lambda: public_status(store.snapshot(), clock(), grace, upcoming, lang=lang)
        )
        etag = body.etag()
        headers = {"ETag": etag, "Cache-Control": PUBLIC_CACHE, "Vary": "Accept-Encoding"}
        if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers=headers)
        return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=headers)

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

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _nothing() -> None:
    pass
