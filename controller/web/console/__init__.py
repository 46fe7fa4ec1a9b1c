"""The staff console at /console: server-rendered pages over the staff API's services.

`install_console(app, public)` adds the pages (`pages.build_console`), their static
files at /console/static, and an error handler that answers the console's refusals
as HTML pages (the API's stay JSON). Sessions and CSRF: `session.py`. The console
calls the same service functions as the API routes and the same access policy
(`controller/access.py`); docs/console.md describes it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from controller.web.console.pages import STATIC, build_console, page
from controller.web.console.session import PREFIX, current

STATIC_PATH = f"{PREFIX}/static"


def install_console(app: FastAPI, public: Any = None) -> None:
    """Add the console to `app` (after `app.state.staff` is set). `public` (the
    PublicView) gives the grace and upcoming horizon its public preview uses."""
    app.state.console_public = public
    app.include_router(build_console())
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC), name="console-static")

    @app.exception_handler(StarletteHTTPException)
    async def console_errors(request: Request, exc: StarletteHTTPException) -> Response:
        path = request.url.path
        ours = path == PREFIX or path.startswith(f"{PREFIX}/")
        if not ours or path.startswith(STATIC_PATH) or exc.status_code < 400:
            return await http_exception_handler(request, exc)
        found = current(request, request.app.state.staff)
        return page(
            request,
            "error.html",
            found,
            status_code=exc.status_code,
            code=exc.status_code,
            detail=exc.detail,
        )
