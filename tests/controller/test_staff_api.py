"""The staff API (/api/v1) over real HTTP: bearer tokens, roles, campaigns, body limit.

The app is `build_web(...)` served by uvicorn on a free port, with a real SQLite database
in tmp_path; no broker. `on_change` records each call instead of reconciling.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import controller.web.api as api_module
from controller.campaigns import CampaignRejected
from controller.metrics import Metrics
from controller.public_view import PublicView
from controller.registration import hash_chosen_secret
from controller.settings import load_settings
from controller.store.base import NewDevice, Stores
from controller.store.sql import database
from controller.store.tables import ApiTokenRow, UserRow
from controller.store.users import Users
from controller.timer import ManualWakeups
from controller.web.app import build_web
from controller.web.limits import MAX_BODY_BYTES, BodySizeLimit, BodyTooLarge
from devices.clock import FakeClock as TimeSourceClock
from schedules.model import Campaign, SiteCatalog

NOW = datetime(2026, 7, 30, 12, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [
            {"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"},
            {"id": "ypres", "name": {"en": "Ypres"}, "timezone": "Europe/Brussels"},
        ],
        "sites": [
            {
                "id": "atomium",
                "city": "brussels",
                "name": {"en": "Atomium"},
                "lat": 50.8949,
                "lon": 4.3415,
            },
            {
                "id": "menin-gate",
                "city": "ypres",
                "name": {"en": "Menin Gate"},
                "lat": 50.85212,
                "lon": 2.89134,
            },
        ],
    }
)


def campaign_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "blue-heart",
        "title": {"en": "Blue Heart", "fr": "Coeur bleu"},
        "color": "#009edb",
        "level": 80,
        "priority": 60,
        "windows": [
            {
                "targets": {"cities": ["brussels", "ypres"]},
                "dates": ["2026-07-30"],
                "start": {"at": "21:30"},
                "end": {"at": "23:59"},
            }
        ],
    }
    body.update(changes)
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[httpx.Client]:
    """Serve an app with uvicorn on a free port, for the duration of a `with` block."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return 0.0


def public_view(stores: Stores, clock: Any) -> PublicView:
    """The public status of `stores`, rendered once (these tests do not change it)."""
    view = PublicView(
        stores.snapshot,
        clock,
        grace=timedelta(seconds=30),
        upcoming=timedelta(hours=24),
    )
    view.rebuild()
    return view


@dataclass
class Served:
    http: httpx.Client
    stores: Stores
    users: Users
    sessions: sessionmaker[Session]
    db_path: Path
    clock: FakeClock
    changes: list[datetime] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    db_path = tmp_path / "illuminate.sqlite"
    with database(f"sqlite:///{db_path}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        users = Users(sessions)
        clock = FakeClock()
        changes: list[datetime] = []
        app = build_web(
            stores,
            clock,
            Metrics(),
            public=public_view(stores, clock),
            ready=lambda: {"database": True},
            users=users,
            on_change=lambda: changes.append(clock()),
        )
        tokens = {
            "admin": users.add("ada", "admin", [], NOW),
            "coordinator": users.add("cora", "coordinator", [], NOW),
            "technician": users.add("tom", "technician", ["brussels"], NOW),
        }
        with serve(app) as http:
            yield Served(http, stores, users, sessions, db_path, clock, changes, tokens)


CAMPAIGN_ROUTES = [
    ("GET", "/api/v1/campaigns"),
    ("GET", "/api/v1/campaigns/blue-heart"),
    ("PUT", "/api/v1/campaigns/blue-heart"),
]


# authentication ------------------------------------------------------------------


def test_me_needs_a_valid_bearer_token(served: Served) -> None:
    http = served.http
    missing = http.get("/api/v1/me")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")

    for header in (
        "Bearer ilm_not-a-real-token",
        "Bearer " + served.tokens["admin"] + "x",
        "Bearer",
        "Basic " + served.tokens["admin"],
        served.tokens["admin"],
    ):
        bad = http.get("/api/v1/me", headers={"Authorization": header})
        assert bad.status_code == 401, header
        assert bad.headers["www-authenticate"].startswith("Bearer")
        assert served.tokens["admin"] not in bad.text

    me = http.get("/api/v1/me", headers=served.auth("technician"))
    assert me.status_code == 200
    assert me.json() == {"name": "tom", "role": "technician", "cities": ["brussels"]}
    me = http.get("/api/v1/me", headers=served.auth("coordinator"))
    assert me.json() == {"name": "cora", "role": "coordinator", "cities": []}


def test_a_disabled_user_is_refused(served: Served) -> None:
    served.users.disable("cora")
    response = served.http.get("/api/v1/me", headers=served.auth("coordinator"))
    assert response.status_code == 401


def test_public_routes_need_no_token(served: Served) -> None:
    assert served.http.get("/api/v1/public/status").status_code == 200
    assert served.http.get("/healthz").status_code == 200
    assert served.http.get("/").status_code == 200


@pytest.mark.parametrize(("method", "path"), CAMPAIGN_ROUTES)
def test_campaign_routes_refuse_anonymous_and_technicians(
    served: Served, method: str, path: str
) -> None:
    body = campaign_body()
    anonymous = served.http.request(method, path, json=body)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    technician = served.http.request(method, path, json=body, headers=served.auth("technician"))
    assert technician.status_code == 403
    assert "technician" in technician.json()["detail"]
    assert served.stores.campaigns.all() == ()
    assert served.changes == []


# campaigns -----------------------------------------------------------------------


def test_put_creates_then_replaces_and_get_returns_what_was_stored(served: Served) -> None:
    http = served.http
    created = http.put(
        "/api/v1/campaigns/blue-heart", json=campaign_body(), headers=served.auth("coordinator")
    )
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/campaigns/blue-heart"
    stored = created.json()
    assert stored["id"] == "blue-heart"
    assert stored["color"] == "#009EDB"  # normalised, as the store keeps it
    assert stored["windows"][0]["start"]["at"] == "21:30:00"
    assert stored == Campaign.model_validate(campaign_body()).model_dump(mode="json")
    assert len(served.changes) == 1

    got = http.get("/api/v1/campaigns/blue-heart", headers=served.auth("coordinator"))
    assert got.status_code == 200
    assert got.json() == stored

    served.clock.now = NOW + timedelta(minutes=5)
    replaced = http.put(
        "/api/v1/campaigns/blue-heart",
        json=campaign_body(color="#ff0000", priority=700),
        headers=served.auth("admin"),
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["color"] == "#FF0000"
    assert len(served.changes) == 2
    assert served.changes[-1] == NOW + timedelta(minutes=5)
    got = http.get("/api/v1/campaigns/blue-heart", headers=served.auth("admin"))
    assert got.json() == replaced.json()
    (campaign,) = served.stores.campaigns.all()
    assert campaign.color == "#FF0000"

    listing = http.get("/api/v1/campaigns", headers=served.auth("coordinator"))
    assert listing.status_code == 200
    assert listing.json() == [
        {
            "id": "blue-heart",
            "title": {"en": "Blue Heart", "fr": "Coeur bleu"},
            "priority": 700,
            "created_at": "2026-07-30T12:00:00Z",
            "updated_at": "2026-07-30T12:05:00Z",
        }
    ]


def test_the_id_may_be_left_out_of_the_body(served: Served) -> None:
    body = campaign_body()
    del body["id"]
    response = served.http.put(
        "/api/v1/campaigns/pride-week", json=body, headers=served.auth("coordinator")
    )
    assert response.status_code == 201, response.text
    assert response.json()["id"] == "pride-week"
    assert [c.id for c in served.stores.campaigns.all()] == ["pride-week"]


def test_get_an_unknown_campaign_is_404(served: Served) -> None:
    response = served.http.get("/api/v1/campaigns/nothing", headers=served.auth("admin"))
    assert response.status_code == 404


def _broken_time() -> dict[str, Any]:
    body = campaign_body()
    body["windows"][0]["start"] = {"at": "25:00"}
    return body


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        (campaign_body(color="blue"), "color", "#RRGGBB"),
        (campaign_body(colour="#009edb"), "colour", "not permitted"),
        (campaign_body(id="other-campaign"), "id", "must equal the id in the URL"),
        (_broken_time(), "windows[0].start.at", "HH:MM"),
        (campaign_body(priority=-1), "priority", "greater than or equal"),
        (campaign_body(windows=[]), "windows", "at least 1"),
        ([campaign_body()], "(top)", "JSON object"),
    ],
    ids=["colour", "unknown-key", "id-mismatch", "time", "priority", "no-windows", "array"],
)
def test_invalid_campaigns_are_422_naming_the_path(
    served: Served, body: Any, path: str, words: str
) -> None:
    response = served.http.put(
        "/api/v1/campaigns/blue-heart", json=body, headers=served.auth("coordinator")
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(item["path"] == path and words in item["message"] for item in detail), detail
    assert all(set(item) == {"path", "message"} for item in detail)
    assert served.stores.campaigns.all() == ()
    assert served.changes == []


def test_broken_json_is_422_and_other_media_types_415(served: Served) -> None:
    headers = {**served.auth("coordinator"), "Content-Type": "application/json"}
    for raw in (b"{not json", b'{"level": NaN}', b"\xff\xfe", b"[" * 100_000):
        response = served.http.put("/api/v1/campaigns/blue-heart", content=raw, headers=headers)
        assert response.status_code == 422, (raw[:10], response.text)
        assert response.json()["detail"][0]["path"] == "(top)"
    text = {**served.auth("coordinator"), "Content-Type": "text/plain"}
    response = served.http.put("/api/v1/campaigns/blue-heart", content=b"{}", headers=text)
    assert response.status_code == 415
    assert served.changes == []


def test_a_rejected_campaign_is_422_with_its_message(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(stores: Stores, campaign: Any, now: datetime, *_limits: Any) -> bool:
        raise CampaignRejected("windows[0].targets.sites[0]: unknown site 'nowhere'")

    monkeypatch.setattr(api_module, "apply_campaign", refuse)
    response = served.http.put(
        "/api/v1/campaigns/blue-heart", json=campaign_body(), headers=served.auth("coordinator")
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"path": "windows[0].targets.sites[0]", "message": "unknown site 'nowhere'"}]
    }
    assert served.changes == []


def test_a_campaign_the_sites_cannot_run_is_422(served: Served) -> None:
    """apply_campaign's own check: no sunset in Longyearbyen at midsummer, no policy."""
    served.stores.registry.import_catalog(
        SiteCatalog.model_validate(
            {
                "cities": [
                    {
                        "id": "longyearbyen",
                        "name": {"en": "Longyearbyen"},
                        "timezone": "Arctic/Longyearbyen",
                    }
                ],
                "sites": [
                    {
                        "id": "svalbard-church",
                        "city": "longyearbyen",
                        "name": {"en": "Svalbard Church"},
                        "lat": 78.2213,
                        "lon": 15.6517,
                    }
                ],
            }
        )
    )
    window = {
        "targets": {"cities": ["longyearbyen"]},
        "dates": ["2027-06-21"],
        "start": {"sun": "sunset"},
        "end": {"at": "23:59"},
    }
    response = served.http.put(
        "/api/v1/campaigns/midsummer",
        json=campaign_body(id="midsummer", windows=[window]),
        headers=served.auth("coordinator"),
    )
    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    assert "no sunset at site svalbard-church" in item["message"]
    assert "polar" in item["message"]
    assert served.stores.campaigns.all() == ()
    assert served.changes == []


def test_on_change_runs_once_per_accepted_put_only(served: Served) -> None:
    coordinator = served.auth("coordinator")
    outcomes = []
    for body in (
        campaign_body(),
        campaign_body(color="nope"),
        campaign_body(level=50),
        campaign_body(id="x"),
        campaign_body(level=40),
    ):
        outcomes.append(
            served.http.put("/api/v1/campaigns/blue-heart", json=body, headers=coordinator)
        )
    served.http.put("/api/v1/campaigns/blue-heart", json=campaign_body())  # anonymous
    assert [r.status_code for r in outcomes] == [201, 422, 200, 422, 200]
    assert len(served.changes) == 3


def test_a_failing_on_change_does_not_lose_the_edit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with database(f"sqlite:///{tmp_path / 'db.sqlite'}") as (_, sessions, stores):
        users = Users(sessions)
        token = users.add("cora", "coordinator", [], NOW)

        def boom() -> None:
            raise RuntimeError("reconcile exploded")

        app = build_web(
            stores,
            lambda: NOW,
            Metrics(),
            public=public_view(stores, TimeSourceClock(NOW)),
            ready=dict,
            users=users,
            on_change=boom,
        )
        with serve(app) as http, caplog.at_level(logging.ERROR, logger="controller.web.api"):
            response = http.put(
                "/api/v1/campaigns/blue-heart",
                json=campaign_body(),
                headers={"Authorization": f"Bearer {token}"},
            )
        stored = stores.campaigns.all()
    assert response.status_code == 201
    assert [c.id for c in stored] == ["blue-heart"]  # the edit is kept
    assert "reconcile after it failed" in caplog.text


def test_the_controller_wires_users_and_reconciles_after_a_put(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through `Controller.web`: an accepted PUT asks the timer for a reconcile, which
    makes the new plan version (on the timer's thread, not the request's)."""
    from controller.app import Controller  # the whole runtime: only this test needs it

    for name in list(os.environ):
        if name.upper().startswith("ILLUMINATE_"):
            monkeypatch.delenv(name)
    wakeups = ManualWakeups()
    controller = Controller(
        load_settings(None, data_dir=tmp_path), clock=TimeSourceClock(NOW), wakeups=wakeups
    )
    try:
        registry = controller.stores.registry
        registry.import_catalog(CATALOG)
        secret = hash_chosen_secret("device-password")
        registry.add_devices([NewDevice("dev-atomium", "atomium", secret)], NOW)
        token = controller.users.add("cora", "coordinator", [], NOW)
        assert controller.timer.run_requested() is False  # nothing asked for one yet
        before = controller.timer.fired
        with serve(controller.web) as http:
            response = http.put(
                "/api/v1/campaigns/blue-heart",
                json=campaign_body(),
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 201, response.text
        assert controller.stores.outbox.latest() == {}
        # the PUT returned without reconciling; it asked the timer for one, which its
        # thread runs (here run by hand, without the timer's threads)
        assert controller.timer.run_requested() is True
        assert controller.timer.fired == before + 1
        issued = controller.stores.outbox.count_since({"dev-atomium": EPOCH})
        assert issued == {"dev-atomium": 1}
    finally:
        controller.engine.dispose()


# body size limit -----------------------------------------------------------------


def _oversized() -> bytes:
    body = campaign_body(padding="x" * (MAX_BODY_BYTES + 1024))
    return httpx.Request("PUT", "http://x", json=body).content


def test_an_oversized_body_with_content_length_is_413(served: Served) -> None:
    raw = _oversized()
    assert len(raw) > MAX_BODY_BYTES
    for headers in (served.auth("coordinator"), {}):
        response = served.http.put(
            "/api/v1/campaigns/blue-heart",
            content=raw,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert "limit" in response.json()["detail"]
        assert response.request.headers["content-length"] == str(len(raw))
    # the public side refuses it too, and the server is still fine afterwards
    assert served.http.post("/api/v1/public/status", content=raw).status_code == 413
    assert served.http.get("/healthz").status_code == 200
    assert served.stores.campaigns.all() == ()
    assert served.changes == []


def _chunks(raw: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


def test_an_oversized_chunked_body_is_413(served: Served) -> None:
    response = served.http.put(
        "/api/v1/campaigns/blue-heart",
        content=_chunks(_oversized()),
        headers={**served.auth("coordinator"), "Content-Type": "application/json"},
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert served.stores.campaigns.all() == ()
    assert served.changes == []
    assert served.http.get("/healthz").status_code == 200


def test_a_chunked_body_under_the_limit_is_accepted(served: Served) -> None:
    raw = httpx.Request("PUT", "http://x", json=campaign_body()).content
    response = served.http.put(
        "/api/v1/campaigns/blue-heart",
        content=_chunks(raw, size=64),
        headers={**served.auth("coordinator"), "Content-Type": "application/json"},
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 201, response.text
    assert len(served.changes) == 1


def test_the_limit_wins_even_when_the_app_swallows_it() -> None:
    """An app that catches BodyTooLarge and answers 400 is still answered with 413."""

    async def swallowing_app(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except BodyTooLarge:
            pass
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"bad"})

    sent = asyncio.run(_drive(BodySizeLimit(swallowing_app, max_bytes=10), [b"x" * 6] * 3))
    assert sent[0]["status"] == 413
    assert b"bad" not in b"".join(m.get("body", b"") for m in sent)

    sent = asyncio.run(
        _drive(BodySizeLimit(swallowing_app, max_bytes=10), [b"x"], content_length=b"1e3")
    )
    assert sent[0]["status"] == 400


async def _drive(
    app: Callable[..., Any], chunks: list[bytes], content_length: bytes | None = None
) -> list[dict[str, Any]]:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-length", content_length)] if content_length else []
    scope = {"type": "http", "method": "PUT", "path": "/", "headers": headers}
    await app(scope, receive, send)
    return sent


# secrets at rest -----------------------------------------------------------------


def test_tokens_are_not_stored_in_clear(served: Served) -> None:
    assert served.http.get("/api/v1/me", headers=served.auth("admin")).status_code == 200
    with served.sessions() as s:
        rows = list(s.scalars(select(ApiTokenRow)))
        users = list(s.scalars(select(UserRow)))
    stored = {row.token_hash for row in rows}
    for token in served.tokens.values():
        assert hashlib.sha256(token.encode()).hexdigest() in stored
        for row in rows:
            assert token not in repr(vars(row))
        for user in users:
            assert token not in repr(vars(user))
    files = [p for p in served.db_path.parent.iterdir() if p.name.startswith(served.db_path.name)]
    raw = b"".join(p.read_bytes() for p in files)
    assert raw
    for token in served.tokens.values():
        assert token.encode() not in raw
        assert token.removeprefix("ilm_").encode() not in raw


def test_the_openapi_document_shows_the_staff_api(served: Served) -> None:
    doc = served.http.get("/api/openapi.json").json()
    assert {"/api/v1/me", "/api/v1/campaigns", "/api/v1/campaigns/{campaign_id}"} <= set(
        doc["paths"]
    )
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    put = doc["paths"]["/api/v1/campaigns/{campaign_id}"]["put"]
    assert "application/json" in put["requestBody"]["content"]
