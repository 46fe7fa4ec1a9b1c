"""The staff console at /console: server-rendered pages over the staff API's services.

`install_console(app, public)` adds the pages (`pages.build_console`) and their static
files at /console/static. The console's refusals are HTML pages (its routes render
them themselves, `pages.ConsoleRoute`), while the API's stay JSON. Sessions and CSRF:
`session.py`. The console calls the same service functions as the API routes and the
same access policy (`controller/access.py`); docs/console.md describes it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from controller.web.console.pages import STATIC, build_console
from controller.web.console.session import PREFIX

STATIC_PATH = f"{PREFIX}/static"


def install_console(app: FastAPI, public: Any = None) -> None:
    """Add the console to `app` (after `app.state.staff` is set). `public` (the
    PublicView) gives the grace and upcoming horizon its public preview uses."""
    app.state.console_public = public
    app.include_router(build_console())
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC), name="console-static")
