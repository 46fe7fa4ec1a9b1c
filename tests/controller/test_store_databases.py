"""The store contract on real databases: SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import text

from controller.lifecycle import CommandState
from controller.store.db import make_engine, migrate, session_factory
from controller.store.repo import RegistryError, Store, verify_secret
from controller.store.tables import DeviceRow
from schedules.model import SiteCatalog

PG_ADMIN = os.environ.get(
    "ILLUMINATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)

CATALOG = SiteCatalog.model_validate(
    {
        "cities": [
            {"id": "ypres", "name": {"en": "Ypres", "nl": "Ieper"}, "timezone": "Europe/Brussels"}
        ],
        "sites": [
            {
                "id": "menin-gate",
                "city": "ypres",
                "name": {"en": "Menin Gate"},
                "lat": 50.85212,
                "lon": 2.89134,
                "tags": ["monument"],
            }
        ],
    }
)
NOW = datetime(2026, 7, 30, 19, 30, tzinfo=UTC)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"illuminate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            + f"/{name}"
        )
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[Store]:
    url = (
        f"sqlite:///{tmp_path}/illuminate.sqlite"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    migrate(engine)
    migrate(engine)  # a second run is a no-op
    yield Store(session_factory(engine))
    engine.dispose()


def test_registry_commands_and_audit(store: Store):
    assert store.import_catalog(CATALOG) == (1, 1)
    assert store.import_catalog(CATALOG) == (1, 1)  # idempotent
    store.add_device("menin-gate-ctl", "menin-gate", "s3cret", NOW)
    with pytest.raises(RegistryError, match="already registered"):
        store.add_device("menin-gate-ctl", "menin-gate", None, NOW)
    with pytest.raises(RegistryError, match="unknown site"):
        store.add_device("other", "nowhere", None, NOW)
    with pytest.raises(RegistryError, match="reserved"):
        store.add_device("illuminate-controller", "menin-gate", None, NOW)
    with pytest.raises(RegistryError, match="invalid device id"):
        store.add_device("Bad/Id", "menin-gate", None, NOW)
    with store.sessions() as s:
        stored = s.get(DeviceRow, "menin-gate-ctl")
        assert stored is not None and stored.secret_hash is not None
        assert "s3cret" not in stored.secret_hash
        assert verify_secret("s3cret", stored.secret_hash)
        assert not verify_secret("wrong", stored.secret_hash)

    store.add_command("menin-gate-ctl", 1, '{"v":1}', NOW)
    row = store.latest_commands()["menin-gate-ctl"]
    assert (row.version, row.state) == (1, "pending")
    later = NOW + timedelta(seconds=1)
    assert store.move(row.id, CommandState.PUBLISHED, later)
    assert not store.move(row.id, CommandState.PENDING, later)  # illegal: refused, not stored
    store.add_command("menin-gate-ctl", 2, '{"v":1}', later)
    assert store.command("menin-gate-ctl", 1).state == "superseded"
    events = [(e.version, e.from_state, e.to_state, e.at) for e in store.events("menin-gate-ctl")]
    assert events == [
        (1, None, "pending", NOW),
        (1, "pending", "published", later),
        (1, "published", "superseded", later),
        (2, None, "pending", later),
    ]
    assert all(e.at.tzinfo is not None for e in store.events())

    store.record_applied("menin-gate-ctl", 2, NOW, {"on": True}, later)
    store.record_applied("menin-gate-ctl", 1, NOW - timedelta(hours=1), {"on": False}, later)
    device = store.devices()[0]
    assert (device.applied_version, device.applied_step_at) == (2, NOW)  # older step ignored


def test_sqlite_runs_in_wal_mode(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/wal.sqlite")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()
