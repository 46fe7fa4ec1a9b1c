"""POST /api/v1/devices/import over real HTTP (uvicorn) on a real SQLite database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller.metrics import Metrics
from controller.registration import MAX_REQUEST_DEVICES, verify_secret
from controller.store.base import Stores
from controller.store.sql import database
from controller.store.tables import DeviceRow
from controller.store.users import Users
from controller.web.app import build_web
from controller.web.devices_api import IMPORT_PATH
from controller.web.limits import MAX_BODY_BYTES
from tests.controller.test_staff_api import CATALOG, FakeClock, public_view, serve


@dataclass
class Served:
    http: httpx.Client
    stores: Stores
    sessions: sessionmaker[Session]
    db_path: Path
    changes: list[datetime] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def post(self, body: Any, who: str | None = "admin", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.http.post(IMPORT_PATH, json=body, headers=headers, **kwargs)


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
            "admin": users.add("ada", "admin", [], clock()),
            "coordinator": users.add("cora", "coordinator", [], clock()),
            "technician": users.add("tom", "technician", ["brussels"], clock()),
        }
        with serve(app) as http:
            yield Served(http, stores, sessions, db_path, changes, tokens)


def devices(n: int, site: str = "atomium", prefix: str = "dev") -> dict[str, Any]:
    return {"devices": [{"id": f"{prefix}-{i:05d}", "site": site} for i in range(n)]}


def test_anonymous_and_non_admins_are_refused(served: Served) -> None:
    anonymous = served.post(devices(1), who=None)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    for who in ("coordinator", "technician"):
        refused = served.post(devices(1), who=who)
        assert refused.status_code == 403, who
        assert who in refused.json()["detail"]
    assert served.stores.registry.device_ids() == set()
    assert served.changes == []


def test_an_admin_registers_a_batch_and_gets_the_passwords_once(served: Served) -> None:
    body = {
        "devices": [
            {"id": "atomium-ctl", "site": "atomium"},
            {"id": "menin-gate-ctl", "site": "menin-gate"},
        ]
    }
    response = served.post(body)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    answer = response.json()
    assert answer["registered"] == 2
    credentials = {c["id"]: c["password"] for c in answer["credentials"]}
    assert list(credentials) == ["atomium-ctl", "menin-gate-ctl"]
    assert len(served.changes) == 1  # the hook ran once, after the commit
    with served.sessions() as s:
        rows = {r.id: r for r in s.scalars(select(DeviceRow))}
    assert {i: r.site_id for i, r in rows.items()} == {
        "atomium-ctl": "atomium",
        "menin-gate-ctl": "menin-gate",
    }
    for device_id, password in credentials.items():
        stored = rows[device_id].secret_hash
        assert stored is not None and password not in stored
        assert verify_secret(password, stored)


def test_ids_already_registered_are_409_and_nothing_changes(served: Served) -> None:
    assert served.post(devices(2)).status_code == 201
    body = {"devices": [{"id": "new-1", "site": "atomium"}, *devices(2)["devices"]]}
    conflict = served.post(body)
    assert conflict.status_code == 409, conflict.text
    assert conflict.json() == {
        "detail": [
            {
                "path": "devices[1]",
                "id": "dev-00000",
                "message": "device 'dev-00000' is already registered",
            },
            {
                "path": "devices[2]",
                "id": "dev-00001",
                "message": "device 'dev-00001' is already registered",
            },
        ]
    }
    assert served.stores.registry.device_ids() == {"dev-00000", "dev-00001"}
    assert len(served.changes) == 1


def test_bad_devices_are_422_with_every_problem(served: Served) -> None:
    body = {
        "devices": [
            {"id": "ok-1", "site": "atomium"},
            {"id": "Bad Id", "site": "atomium"},
            {"id": "illuminate-1", "site": "atomium"},
            {"id": "ok-4", "site": "nowhere"},
            {"id": "ok-1", "site": "menin-gate"},
            {"id": "ok-6"},
            {"id": "ok-7", "site": "atomium", "colour": "blue"},
            "not an object",
        ]
    }
    response = served.post(body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [(d["path"], d["id"]) for d in detail] == [
        ("devices[5].site", "ok-6"),
        ("devices[6].colour", "ok-7"),
        ("devices[7]", None),
        ("devices[1]", "Bad Id"),
        ("devices[2]", "illuminate-1"),
        ("devices[3]", "ok-4"),
        ("devices[4]", "ok-1"),
    ]
    messages = [d["message"] for d in detail]
    assert messages[0] == "Field required"
    assert messages[1] == "Extra inputs are not permitted"
    assert messages[3].startswith("invalid device id 'Bad Id'")
    assert "reserved" in messages[4]
    assert messages[5] == "unknown site 'nowhere'"
    assert messages[6] == "device 'ok-1' is repeated (first at devices[0])"
    assert served.stores.registry.device_ids() == set()
    assert served.changes == []


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        (b"{not json", "(top)", "not valid JSON"),
        (b"[]", "(top)", "Input should be a valid dictionary"),
        (b'{"devices": []}', "(top)", "no devices to register"),
        (b'{"devices": [], "more": 1}', "more", "Extra inputs are not permitted"),
    ],
)
def test_malformed_bodies_are_422(served: Served, raw: bytes, path: str, message: str) -> None:
    response = served.http.post(
        IMPORT_PATH,
        content=raw,
        headers={
            "Authorization": f"Bearer {served.tokens['admin']}",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 422, response.text
    [item] = response.json()["detail"]
    assert item["path"] == path
    assert message in item["message"]


def test_other_media_types_are_415(served: Served) -> None:
    response = served.http.post(
        IMPORT_PATH,
        content=b"id,site\na,atomium\n",
        headers={"Authorization": f"Bearer {served.tokens['admin']}", "Content-Type": "text/csv"},
    )
    assert response.status_code == 415


def test_ten_thousand_devices_fit_in_one_request(served: Served) -> None:
    body = devices(MAX_REQUEST_DEVICES, site="menin-gate", prefix="menin-gate-controller")
    assert len(json.dumps(body)) > MAX_BODY_BYTES  # this route has a larger limit
    response = served.post(body, timeout=120)
    assert response.status_code == 201, response.text[:500]
    assert response.json()["registered"] == MAX_REQUEST_DEVICES
    assert len(served.stores.registry.device_ids()) == MAX_REQUEST_DEVICES

    one_more = served.post(devices(MAX_REQUEST_DEVICES + 1, prefix="x"), timeout=120)
    assert one_more.status_code == 422
    assert one_more.json()["detail"] == [
        {
            "path": "devices",
            "id": None,
            "message": f"at most {MAX_REQUEST_DEVICES} devices per request, "
            f"not {MAX_REQUEST_DEVICES + 1}",
        }
    ]


def test_the_larger_limit_is_for_this_route_only(served: Served) -> None:
    raw = b'{"padding": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    headers = {
        "Authorization": f"Bearer {served.tokens['admin']}",
        "Content-Type": "application/json",
    }
    assert served.http.put("/api/v1/campaigns/x", content=raw, headers=headers).status_code == 413
    huge = b'{"padding": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    assert served.http.post(IMPORT_PATH, content=huge, headers=headers).status_code == 413


def test_the_route_is_in_the_openapi_document(served: Served) -> None:
    doc = served.http.get("/api/openapi.json").json()
    post = doc["paths"][IMPORT_PATH]["post"]
    assert {"201", "401", "403", "409", "422"} <= set(post["responses"])
    assert "example" in post["requestBody"]["content"]["application/json"]
