"""The authorization matrix: every route of the app, asked by each kind of caller.

The test walks `app.routes`; a route that is not declared in `MATRIX` (or a row for a
route that no longer exists) fails it, so a new route must say who may call it. Each
route is called over real HTTP (uvicorn) on a real SQLite database by: nobody, a
technician of the city of the object in the path (Brussels), a technician of another
city (Ypres), a coordinator and an admin, and must answer exactly its row. The staff
console's routes (/console) are called with the caller's token in the session cookie,
and their POSTs with the session's CSRF token (`call_console`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from controller.device_health import HealthTracker
from controller.flash import FlashTester
from controller.i18n import catalogue_languages
from controller.metrics import Metrics
from controller.store.base import NewDevice
from controller.store.rollouts import NewRollout
from controller.store.sql import database
from controller.store.users import Users
from controller.web.app import build_web
from controller.web.console.session import SESSION_COOKIE, csrf_for
from controller.web.device_ops_api import DeviceOps
from schedules.model import Campaign, Site
from schedules.rollout import RolloutConfig
from tests.controller.test_staff_api import (
    CATALOG,
    NOW,
    FakeClock,
    campaign_body,
    public_view,
    serve,
)

CALLERS = ("anonymous", "tech_here", "tech_away", "coordinator", "admin")


@dataclass(frozen=True)
class Row:
    anonymous: int
    tech_here: int
    tech_away: int
    coordinator: int
    admin: int

    def expected(self, caller: str) -> int:
        return int(getattr(self, caller))


def everyone(code: int) -> Row:
    return Row(code, code, code, code, code)


def staff_only(
    code: int, *, coordinator: int, technician: int, tech_away: int | None = None
) -> Row:
    """401 for nobody; `code` for admins; the others as given."""
    away = technician if tech_away is None else tech_away
    return Row(401, technician, away, coordinator, code)


def console_only(
    code: int, *, coordinator: int, technician: int, tech_away: int | None = None
) -> Row:
    """A console page: 303 (to the sign-in page) for nobody; the others as given."""
    away = technician if tech_away is None else tech_away
    return Row(303, technician, away, coordinator, code)


MATRIX: dict[tuple[str, str], Row] = {
    # public
    ("GET", "/"): everyone(200),
    # the page in each language with a catalogue; without its slash, moved there
    **{("GET", f"/{lang}/"): everyone(200) for lang in catalogue_languages()},
    **{("GET", f"/{lang}"): everyone(308) for lang in catalogue_languages()},
    ("GET", "/api/v1/public/status"): everyone(200),
    ("GET", "/api/v1/public/campaigns/{campaign_id}.ics"): everyone(200),
    ("GET", "/api/v1/public/cities/{city_id}/feed.atom"): everyone(200),
    ("GET", "/api/v1/public/feed.atom"): everyone(200),
    # a page per monument in each language, its share image, a city's widget
    **{("GET", f"/{lang}/monuments/{{site_id}}"): everyone(200) for lang in catalogue_languages()},
    ("GET", "/api/v1/public/monuments/{site_id}.png"): everyone(200),
    ("GET", "/embed/{city}"): everyone(200),
    ("GET", "/api/v1/public/events"): everyone(503),  # closed here: a stream never ends
    ("GET", "/healthz"): everyone(200),
    ("GET", "/readyz"): everyone(200),
    ("GET", "/metrics"): everyone(200),
    ("GET", "/static"): everyone(200),
    ("GET", "/api/docs"): everyone(200),
    ("GET", "/api/openapi.json"): everyone(200),
    # staff: anyone signed in
    ("GET", "/api/v1/me"): staff_only(200, coordinator=200, technician=200),
    # campaigns: coordinators and admins
    ("GET", "/api/v1/campaigns"): staff_only(200, coordinator=200, technician=403),
    ("GET", "/api/v1/campaigns/{campaign_id}"): staff_only(200, coordinator=200, technician=403),
    ("PUT", "/api/v1/campaigns/{campaign_id}"): staff_only(200, coordinator=200, technician=403),
    ("GET", "/api/v1/campaigns/{campaign_id}/outcome"): staff_only(
        200, coordinator=200, technician=403
    ),
    # sites: technicians their own city's, coordinators and admins all
    ("GET", "/api/v1/sites"): staff_only(200, coordinator=200, technician=200),
    ("GET", "/api/v1/sites/{site_id}"): staff_only(
        200, coordinator=200, technician=200, tech_away=404
    ),
    ("DELETE", "/api/v1/campaigns/{campaign_id}"): staff_only(204, coordinator=204, technician=403),
    # sites: technicians their own city's, coordinators read them, admins all
    ("PUT", "/api/v1/sites/{site_id}"): staff_only(
        200, coordinator=403, technician=200, tech_away=404
    ),
    ("DELETE", "/api/v1/sites/{site_id}"): staff_only(
        204, coordinator=403, technician=204, tech_away=404
    ),
    # devices: technicians their own city's, coordinators read them, admins all; bulk
    # registration is for admins. A site of another city is answered as unknown (422).
    ("POST", "/api/v1/devices"): staff_only(201, coordinator=403, technician=201, tech_away=422),
    ("GET", "/api/v1/devices"): staff_only(200, coordinator=200, technician=200),
    ("GET", "/api/v1/devices/{device_id}"): staff_only(
        200, coordinator=200, technician=200, tech_away=404
    ),
    ("POST", "/api/v1/devices/{device_id}/credentials"): staff_only(
        200, coordinator=403, technician=200, tech_away=404
    ),
    ("DELETE", "/api/v1/devices/{device_id}"): staff_only(
        200, coordinator=403, technician=200, tech_away=404
    ),
    ("POST", "/api/v1/devices/import"): staff_only(201, coordinator=403, technician=403),
    # the record: a device's history, by the devices policy
    ("GET", "/api/v1/devices/{device_id}/history"): staff_only(
        200, coordinator=200, technician=200, tech_away=404
    ),
    # device tests and health: technicians their own city's devices, admins all
    ("POST", "/api/v1/devices/{device_id}/test"): staff_only(
        200, coordinator=403, technician=200, tech_away=404
    ),
    ("GET", "/api/v1/devices/{device_id}/health"): staff_only(
        200, coordinator=200, technician=200, tech_away=404
    ),
    # audit: admins everything, coordinators the campaign entries
    ("GET", "/api/v1/audit"): staff_only(200, coordinator=200, technician=403),
    # rollouts: coordinators and admins read, resume and abort them (no such one: 404)
    ("GET", "/api/v1/rollouts"): staff_only(200, coordinator=200, technician=403),
    ("GET", "/api/v1/rollouts/{rollout_id}"): staff_only(200, coordinator=200, technician=403),
    ("POST", "/api/v1/rollouts/{rollout_id}/resume"): staff_only(
        404, coordinator=404, technician=403
    ),
    ("POST", "/api/v1/rollouts/{rollout_id}/abort"): staff_only(
        404, coordinator=404, technician=403
    ),
    # the staff console: the session cookie instead of the bearer header (see `call`);
    # nobody signed in is sent to the sign-in page (303)
    ("GET", "/console/static"): everyone(200),
    ("GET", "/console/sign-in"): Row(200, 303, 303, 303, 303),
    ("POST", "/console/sign-in"): everyone(403),  # no sign-in form token
    ("POST", "/console/sign-out"): everyone(303),
    ("GET", "/console"): console_only(200, coordinator=200, technician=200),
    ("GET", "/console/devices"): console_only(200, coordinator=200, technician=200),
    ("POST", "/console/devices"): console_only(201, coordinator=403, technician=201, tech_away=422),
    ("GET", "/console/devices/{device_id}"): console_only(
        200, coordinator=200, technician=200, tech_away=404
    ),
    ("POST", "/console/devices/{device_id}/test"): console_only(
        200, coordinator=403, technician=200, tech_away=404
    ),
    ("POST", "/console/devices/{device_id}/rotate"): console_only(
        200, coordinator=403, technician=200, tech_away=404
    ),
    ("POST", "/console/devices/{device_id}/decommission"): console_only(
        303, coordinator=403, technician=303, tech_away=404
    ),
    ("GET", "/console/campaigns"): console_only(200, coordinator=200, technician=403),
    ("POST", "/console/campaigns"): console_only(200, coordinator=200, technician=403),
    ("POST", "/console/campaigns/{campaign_id}/delete"): console_only(
        200, coordinator=200, technician=403
    ),
    ("GET", "/console/timeline"): console_only(200, coordinator=200, technician=403),
    ("GET", "/console/overrides"): console_only(200, coordinator=200, technician=403),
    ("POST", "/console/overrides"): console_only(200, coordinator=200, technician=403),
    ("GET", "/console/audit"): console_only(200, coordinator=200, technician=403),
    ("GET", "/console/rollouts"): console_only(200, coordinator=200, technician=403),
    # resume, asked of a rollout that is running: refused, nothing changes
    ("POST", "/console/rollouts/{rollout_id}/{verb}"): console_only(
        409, coordinator=409, technician=403
    ),
}

PATH_VALUES = {
    "campaign_id": "blue-heart",
    "site_id": "atomium",
    "device_id": "atomium-ctl",
    "rollout_id": "1",
    "city_id": "brussels",
    "city": "brussels",
    "verb": "resume",
}
"""The objects in paths: the campaign exists, the site and the device are in Brussels,
the rollout exists (resume and abort are asked of one that does not: they would change
it)."""


def own(caller: str) -> str:
    """A caller's own object id (each removes its own, so the others still exist)."""
    return caller.replace("_", "-")


ATOMIUM = {
    "city": "brussels",
    "name": {"en": "Atomium"},
    "lat": 50.8949,
    "lon": 4.3415,
}
TESTED = {"admin": "atomium-spare-ctl"}
"""The device each caller tests, when not atomium-ctl: the first test's plan is still
running on this clock, which does not move."""

Call = Callable[[str], dict[str, Any]]
"""For one caller, the extra arguments of the request (body, or a different url)."""

CALLS: dict[tuple[str, str], Call] = {
    ("GET", "/static"): lambda _caller: {"url": "/static/style.css"},
    ("PUT", "/api/v1/campaigns/{campaign_id}"): lambda _caller: {"json": campaign_body()},
    ("POST", "/api/v1/rollouts/{rollout_id}/resume"): lambda _caller: {
        "url": "/api/v1/rollouts/999/resume"
    },
    ("POST", "/api/v1/rollouts/{rollout_id}/abort"): lambda _caller: {
        "url": "/api/v1/rollouts/999/abort"
    },
    ("POST", "/api/v1/devices/import"): lambda caller: {
        "json": {"devices": [{"id": f"{own(caller)}-ctl", "site": "atomium"}]}
    },
    ("POST", "/api/v1/devices"): lambda caller: {
        "json": {"id": f"{own(caller)}-one", "site": "atomium"}
    },
    ("DELETE", "/api/v1/devices/{device_id}"): lambda caller: {
        "url": f"/api/v1/devices/{own(caller)}-old"
    },
    ("PUT", "/api/v1/sites/{site_id}"): lambda _caller: {"json": ATOMIUM},
    ("DELETE", "/api/v1/sites/{site_id}"): lambda caller: {
        "url": f"/api/v1/sites/{own(caller)}-site"
    },
    ("DELETE", "/api/v1/campaigns/{campaign_id}"): lambda caller: {
        "url": f"/api/v1/campaigns/{own(caller)}-campaign"
    },
    ("POST", "/api/v1/devices/{device_id}/test"): lambda caller: {
        "url": f"/api/v1/devices/{TESTED.get(caller, 'atomium-ctl')}/test",
        "json": {"seconds": 1},
    },
}


CONSOLE_TESTED = {"tech_here": "atomium-console-ctl", "admin": "atomium-console-spare-ctl"}
"""The devices the console tests (the API's tests hold theirs for 30 s)."""
CONSOLE_OVERRIDE = {
    "reason": "Matrix check",
    "date": "2026-07-30",
    "start": "22:00",
    "end": "23:00",
    "targets": "cities",
    "cities": "brussels",
    "on": "off",
}

CONSOLE_CALLS: dict[tuple[str, str], Call] = {
    ("GET", "/console/static"): lambda _caller: {"url": "/console/static/console.css"},
    ("POST", "/console/devices"): lambda caller: {
        "data": {"id": f"{own(caller)}-console", "site": "atomium"}
    },
    ("POST", "/console/devices/{device_id}/test"): lambda caller: {
        "url": f"/console/devices/{CONSOLE_TESTED.get(caller, 'atomium-console-ctl')}/test",
        "data": {"seconds": "1"},
    },
    ("POST", "/console/devices/{device_id}/decommission"): lambda caller: {
        "url": f"/console/devices/{own(caller)}-retire/decommission"
    },
    ("POST", "/console/campaigns"): lambda _caller: {
        "data": {"yaml": json.dumps(campaign_body())}  # JSON is YAML
    },
    ("POST", "/console/campaigns/{campaign_id}/delete"): lambda caller: {
        "url": f"/console/campaigns/{own(caller)}-console-campaign/delete"
    },
    ("POST", "/console/overrides"): lambda _caller: {"data": dict(CONSOLE_OVERRIDE)},
}


def rollout_of(body: dict[str, Any]) -> NewRollout:
    config = RolloutConfig.model_validate(
        {"maximum_per_minute": 5, "pause": {"threshold_percentage": 10, "min_results": 3}}
    )
    return NewRollout("blue-heart", config, body, body, ("atomium",), NOW)


def declared_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route of `app.routes`, the included routers' expanded
    (`iter_route_contexts`); a mount counts as its GET."""
    found = set()
    for context in iter_route_contexts(app.routes):
        path = context.path
        assert path is not None, f"a route without a path: {context.original_route!r}"
        if isinstance(context.original_route, Mount):
            found.add(("GET", path))
            continue
        methods = context.methods
        assert methods, f"a route without methods: {context.original_route!r}"
        found.update((m, path) for m in methods if m != "HEAD")
    return found


@dataclass
class World:
    app: FastAPI
    http: httpx.Client
    tokens: dict[str, str]
    users: Users


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("matrix")
    with database(f"sqlite:///{folder / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        stores.campaigns.put(Campaign.model_validate(campaign_body()), NOW)
        assert stores.rollouts is not None
        stores.rollouts.start(rollout_of(campaign_body()))
        stores.registry.add_devices(
            [NewDevice("atomium-ctl", "atomium"), NewDevice("atomium-spare-ctl", "atomium")], NOW
        )
        for caller in CALLERS:
            stores.registry.put_site(
                Site.model_validate({**ATOMIUM, "id": f"{own(caller)}-site"}), NOW
            )
            stores.registry.add_devices(
                [
                    NewDevice(f"{own(caller)}-old", "atomium"),
                    NewDevice(f"{own(caller)}-retire", "atomium"),
                ],
                NOW,
            )
            for name in ("campaign", "console-campaign"):
                stores.campaigns.put(
                    Campaign.model_validate(campaign_body(id=f"{own(caller)}-{name}")), NOW
                )
        stores.registry.add_devices(
            [NewDevice(d, "atomium") for d in sorted(set(CONSOLE_TESTED.values()))], NOW
        )
        users = Users(sessions)
        clock = FakeClock()
        app = build_web(
            stores,
            clock,
            Metrics(),
            public=public_view(stores, clock),
            ready=lambda: {"database": True},
            users=users,
        )
        # the event stream answers at once when closed (its own tests stream it)
        app.state.public_events.close()
        # tests time out on the real monotonic clock (this fake one does not move)
        app.state.device_ops = DeviceOps(
            FlashTester(stores, clock, time.monotonic), HealthTracker()
        )
        tokens = {
            "tech_here": users.add("tom", "technician", ["brussels"], NOW),
            "tech_away": users.add("yves", "technician", ["ypres"], NOW),
            "coordinator": users.add("cora", "coordinator", [], NOW),
            "admin": users.add("ada", "admin", [], NOW),
        }
        with serve(app) as http:
            yield World(app, http, tokens, users)


def call(world: World, key: tuple[str, str], caller: str, token: str | None) -> httpx.Response:
    method, path = key
    arguments: dict[str, Any] = {"url": path.format(**PATH_VALUES)}
    if path.startswith("/console"):
        return call_console(world, key, caller, token, arguments)
    arguments.update(CALLS.get(key, lambda _caller: {})(caller))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return world.http.request(method, headers=headers, **arguments)


def call_console(
    world: World, key: tuple[str, str], caller: str, token: str | None, arguments: dict[str, Any]
) -> httpx.Response:
    """A console route, signed in as the caller: the token in the session cookie, and
    on a POST the session's CSRF token (and the confirmation its forms ask for)."""
    method, path = key
    arguments.update(CONSOLE_CALLS.get(key, lambda _caller: {})(caller))
    if path == "/console/sign-out" and token:  # it revokes the session's token: one of its own
        principal = world.users.authenticate(token, NOW)
        assert principal is not None
        token = world.users.issue_token(principal.name, NOW)
    headers = {"Cookie": f"{SESSION_COOKIE}={token}"} if token else {}
    if method == "POST":
        form = {"confirm": "yes", **arguments.pop("data", {})}
        if token:
            form["csrf"] = csrf_for(token)
        arguments["data"] = form
    return world.http.request(method, headers=headers, **arguments)


def test_every_route_is_declared_in_the_matrix(world: World) -> None:
    routes = declared_routes(world.app)
    undeclared = sorted(routes - MATRIX.keys())
    assert undeclared == [], f"declare who may call these routes in MATRIX: {undeclared}"
    stale = sorted(MATRIX.keys() - routes)
    assert stale == [], f"MATRIX rows for routes that do not exist: {stale}"


def test_every_route_answers_each_caller_as_declared(world: World) -> None:
    wrong = []
    for key, row in sorted(MATRIX.items()):
        for caller in CALLERS:
            answer = call(world, key, caller, world.tokens.get(caller))
            if answer.status_code != row.expected(caller):
                wrong.append(
                    f"{key[0]} {key[1]} as {caller}: {answer.status_code}, "
                    f"declared {row.expected(caller)} ({answer.text[:120]})"
                )
    assert wrong == []


def test_expired_and_revoked_tokens_get_401_on_every_staff_route(world: World) -> None:
    expired = world.users.add(
        "old", "admin", [], NOW - timedelta(hours=1), expires_at=NOW - timedelta(minutes=1)
    )
    revoked = world.users.add("gone", "admin", [], NOW)
    world.users.revoke("gone", None, NOW)
    staff_routes = [key for key, row in MATRIX.items() if row.anonymous == 401]
    assert len(staff_routes) >= 8
    for key in staff_routes:
        for token in (expired, revoked):
            answer = call(world, key, "admin", token)
            assert answer.status_code == 401, key
            assert "invalid_token" in answer.headers["www-authenticate"]


def test_technicians_list_only_their_own_cities_sites(world: World) -> None:
    def site_ids(caller: str) -> list[str]:
        answer = call(world, ("GET", "/api/v1/sites"), caller, world.tokens[caller])
        return [site["id"] for site in answer.json()]

    # the callers' own sites (in Brussels) are there, unless the matrix deleted them
    ours = {f"{own(caller)}-site" for caller in CALLERS}
    everything = site_ids("admin")
    assert set(everything) - ours == {"atomium", "menin-gate"}
    assert site_ids("coordinator") == everything
    assert site_ids("tech_here") == [s for s in everything if s != "menin-gate"]
    assert site_ids("tech_away") == ["menin-gate"]


def test_another_citys_object_looks_like_a_missing_one(world: World) -> None:
    token = world.tokens["tech_away"]
    other = world.http.get("/api/v1/sites/atomium", headers={"Authorization": f"Bearer {token}"})
    missing = world.http.get("/api/v1/sites/nowhere", headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == missing.status_code == 404
    assert other.json() == {"detail": "no site 'atomium'"}
    assert missing.json() == {"detail": "no site 'nowhere'"}
