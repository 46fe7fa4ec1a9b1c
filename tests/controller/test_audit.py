"""The audit log: one contract on memory, SQLite and PostgreSQL, the database's refusal
to change a stored entry, and GET /api/v1/audit for each role."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from controller.access import AuditKind
from controller.metrics import Metrics
from controller.store.audit import MAX_PAGE, AuditLog, AuditRecord, MemoryAuditLog, SqlAuditLog
from controller.store.users import Users
from controller.web.app import build_web
from tests.controller.test_staff_api import CATALOG, FakeClock, campaign_body, public_view, serve
from tests.support.stores import SQL_KINDS, Database, sql_database

NOW = datetime(2026, 7, 30, 19, 30, tzinfo=UTC)


@pytest.fixture(params=["memory", *SQL_KINDS])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditLog]:
    if request.param == "memory":
        yield MemoryAuditLog()
        return
    with sql_database(request.param, tmp_path) as (_, sessions, _stores):
        yield SqlAuditLog(sessions)


@pytest.fixture(params=SQL_KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with sql_database(request.param, tmp_path) as found:
        yield found


def record(n: int, kind: AuditKind = AuditKind.CAMPAIGN, **changes: object) -> AuditRecord:
    fields: dict[str, object] = {
        "at": NOW + timedelta(minutes=n),
        "actor": "cora",
        "kind": kind,
        "action": "replaced",
        "subject": f"campaign-{n}",
    }
    fields.update(changes)
    return AuditRecord(**fields)  # type: ignore[arg-type]


def test_the_contract(log: AuditLog) -> None:
    assert log.entries() == []
    assert log.append([]) == []
    brussels = timezone(timedelta(hours=2))
    first = log.append(
        [record(1, at=datetime(2026, 7, 30, 21, 31, tzinfo=brussels), detail={"n": [1, 2]})]
    )
    more = log.append(
        [
            record(2, AuditKind.DEVICE, actor="ada", subject="dev-1", city="ypres"),
            record(3),
            record(4, AuditKind.DEVICE, subject="dev-2", action="registered"),
        ]
    )
    stored = [*first, *more]
    ids = [e.id for e in stored]
    assert ids == sorted(ids) and len(set(ids)) == 4
    # stored in UTC, read back as appended, newest first
    assert stored[0].record.at == NOW + timedelta(minutes=1)
    assert stored[0].record.at.utcoffset() == timedelta(0)
    assert log.entries() == stored[::-1]
    assert log.entries()[-1].record.detail == {"n": [1, 2]}
    assert log.entries()[-2].record.city == "ypres"

    assert [e.id for e in log.entries({AuditKind.CAMPAIGN})] == [ids[2], ids[0]]
    assert [e.id for e in log.entries({AuditKind.OVERRIDE})] == []
    assert [e.id for e in log.entries(set())] == []
    assert [e.id for e in log.entries(limit=2)] == [ids[3], ids[2]]
    assert [e.id for e in log.entries(before=ids[2])] == [ids[1], ids[0]]
    assert [e.id for e in log.entries({AuditKind.DEVICE}, before=ids[3], limit=5)] == [ids[1]]
    with pytest.raises(ValueError, match="limit must be at least 1"):
        log.entries(limit=0)


def test_a_page_is_at_most_max_page(log: AuditLog) -> None:
    log.append([record(n) for n in range(MAX_PAGE + 5)])
    assert len(log.entries(limit=MAX_PAGE + 5)) == MAX_PAGE


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="aware instant"):
        record(1, at=datetime(2026, 7, 30, 19, 30))


def test_the_database_refuses_to_change_or_delete_an_entry(db: Database) -> None:
    engine, sessions, _ = db
    SqlAuditLog(sessions).append([record(1)])
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    (entry,) = SqlAuditLog(sessions).entries()
    assert entry.record.actor == "cora"


# GET /api/v1/audit ---------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    with sql_database("sqlite", tmp_path) as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        users = Users(sessions)
        clock = FakeClock()
        app = build_web(
            stores, clock, Metrics(), public=public_view(stores, clock), ready=dict, users=users
        )
        tokens = {
            "admin": users.add("ada", "admin", [], clock()),
            "coordinator": users.add("cora", "coordinator", [], clock()),
            "technician": users.add("tom", "technician", ["brussels"], clock()),
        }
        with serve(app) as http:
            yield http, tokens


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_writes_are_audited_and_each_role_sees_its_share(
    client: tuple[httpx.Client, dict[str, str]],
) -> None:
    http, tokens = client
    put = http.put(
        "/api/v1/campaigns/blue-heart", json=campaign_body(), headers=as_(tokens["coordinator"])
    )
    assert put.status_code == 201
    again = http.put(
        "/api/v1/campaigns/blue-heart", json=campaign_body(level=50), headers=as_(tokens["admin"])
    )
    assert again.status_code == 200
    imported = http.post(
        "/api/v1/devices/import",
        json={"devices": [{"id": "atomium-ctl", "site": "atomium"}]},
        headers=as_(tokens["admin"]),
    )
    assert imported.status_code == 201
    refused = http.put(
        "/api/v1/campaigns/blue-heart", json={"title": 3}, headers=as_(tokens["admin"])
    )
    assert refused.status_code == 422  # not done, so not audited

    everything = http.get("/api/v1/audit", headers=as_(tokens["admin"]))
    assert everything.status_code == 200
    entries = everything.json()["entries"]
    assert [(e["actor"], e["kind"], e["action"], e["subject"]) for e in entries] == [
        ("ada", "device", "registered", "atomium-ctl"),
        ("ada", "campaign", "replaced", "blue-heart"),
        ("cora", "campaign", "created", "blue-heart"),
    ]
    assert entries[0]["city"] == "brussels" and entries[0]["detail"]["site"] == "atomium"
    assert all(e["at"].endswith("Z") or e["at"].endswith("+00:00") for e in entries)
    assert everything.json()["next_before"] is None

    paged = http.get("/api/v1/audit?limit=2", headers=as_(tokens["admin"])).json()
    assert len(paged["entries"]) == 2 and paged["next_before"] == paged["entries"][-1]["id"]
    rest = http.get(f"/api/v1/audit?before={paged['next_before']}", headers=as_(tokens["admin"]))
    assert [e["action"] for e in rest.json()["entries"]] == ["created"]

    coordinator = http.get("/api/v1/audit", headers=as_(tokens["coordinator"])).json()
    assert {e["kind"] for e in coordinator["entries"]} == {"campaign"}
    assert len(coordinator["entries"]) == 2
    devices = http.get("/api/v1/audit?kind=device", headers=as_(tokens["coordinator"]))
    assert devices.status_code == 200 and devices.json()["entries"] == []

    assert http.get("/api/v1/audit", headers=as_(tokens["technician"])).status_code == 403
    assert http.get("/api/v1/audit").status_code == 401
    assert http.get("/api/v1/audit?kind=nonsense", headers=as_(tokens["admin"])).status_code == 422
    assert http.get("/api/v1/audit?limit=0", headers=as_(tokens["admin"])).status_code == 422
