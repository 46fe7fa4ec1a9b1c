"""`RegistryStore.add_devices` on real databases: SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

import controller.store.sql as sql
from controller.registration import (
    BatchRejected,
    ProblemKind,
    hash_chosen_secret,
    hash_generated_secret,
    verify_secret,
)
from controller.store.base import NewDevice, RegistryError, Stores
from controller.store.tables import DeviceRow
from schedules.model import SiteCatalog
from tests.support.stores import SQL_KINDS, device_count, secret_hash, sql_database

NOW = datetime(2026, 7, 30, 19, 30, tzinfo=UTC)
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [{"id": "ypres", "name": {"en": "Ypres"}, "timezone": "Europe/Brussels"}],
        "sites": [
            {
                "id": "menin-gate",
                "city": "ypres",
                "name": {"en": "Menin Gate"},
                "lat": 50.85212,
                "lon": 2.89134,
            }
        ],
    }
)

Registry = tuple[sessionmaker[Session], Stores]


@pytest.fixture(params=SQL_KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    with sql_database(request.param, tmp_path) as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        yield sessions, stores


def test_a_large_batch_in_one_transaction(db: Registry) -> None:
    sessions, stores = db
    batch = [
        NewDevice(f"gate-{i:05d}", "menin-gate", hash_generated_secret(f"pw-{i}"))
        for i in range(5000)
    ]
    revision = stores.registry.revision()
    stores.registry.add_devices(batch, NOW)
    assert device_count(sessions) == 5000
    assert stores.registry.revision() == revision + 1
    with sessions() as s:
        row = s.get(DeviceRow, "gate-04999")
        assert row is not None
        assert (row.site_id, row.kind, row.version_floor, row.created_at) == (
            "menin-gate",
            "native",
            0,
            NOW,
        )
        assert row.secret_hash == batch[-1].secret_hash
    stores.registry.add_devices([], NOW)  # nothing to do
    assert device_count(sessions) == 5000


def test_every_problem_is_named_and_nothing_is_stored(db: Registry) -> None:
    _, stores = db
    stores.registry.add_devices([NewDevice("taken", "menin-gate")], NOW)
    batch = [
        NewDevice("fine", "menin-gate"),
        NewDevice("taken", "menin-gate"),
        NewDevice("Not/Valid", "menin-gate"),
        NewDevice("illuminate-bridge", "menin-gate"),
        NewDevice("lost", "nowhere"),
        NewDevice("fine", "menin-gate"),
    ]
    with pytest.raises(RegistryError) as caught:
        stores.registry.add_devices(batch, NOW)
    assert isinstance(caught.value, BatchRejected)
    assert [(p.index, p.device_id, p.kind) for p in caught.value.problems] == [
        (1, "taken", ProblemKind.REGISTERED),
        (2, "Not/Valid", ProblemKind.INVALID),
        (3, "illuminate-bridge", ProblemKind.RESERVED),
        (4, "lost", ProblemKind.UNKNOWN_SITE),
        (5, "fine", ProblemKind.REPEATED),
    ]
    assert caught.value.problems[-1].first == 0
    text = str(caught.value)
    assert text.startswith("5 problems:\n#1: device 'taken' is already registered\n")
    assert stores.registry.device_ids() == {"taken"}


def _check_without_seeing(monkeypatch: pytest.MonkeyPatch, hidden: set[str]) -> None:
    """The store's check does not see `hidden` (as if another process registered them
    between the check and the insert): only the primary key can catch them."""
    real = sql.check_new_devices

    def stale(
        devices: Sequence[NewDevice], site_ids: Collection[str], existing: Collection[str]
    ) -> None:
        real(devices, site_ids, set(existing) - hidden)

    monkeypatch.setattr(sql, "check_new_devices", stale)


def test_a_race_lost_at_insert_stores_nothing(
    db: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, stores = db
    stores.registry.add_devices([NewDevice("taken", "menin-gate")], NOW)
    revision = stores.registry.revision()
    _check_without_seeing(monkeypatch, {"taken"})
    with pytest.raises(RegistryError):
        stores.registry.add_devices(
            [NewDevice("new", "menin-gate"), NewDevice("taken", "menin-gate")], NOW
        )
    assert stores.registry.device_ids() == {"taken"}
    assert stores.registry.revision() == revision


def test_a_race_lost_at_insert_is_reported_as_already_registered(
    db: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process registers an id between the check and the insert: the primary
    key catches it, and the error says which id, as if the check had seen it."""
    _, stores = db
    stores.registry.add_devices([NewDevice("taken", "menin-gate")], NOW)
    _check_without_seeing(monkeypatch, {"taken"})
    with pytest.raises(BatchRejected) as caught:
        stores.registry.add_devices(
            [NewDevice("new", "menin-gate"), NewDevice("taken", "menin-gate")], NOW
        )
    assert [(p.index, p.kind) for p in caught.value.problems] == [(1, ProblemKind.REGISTERED)]
    assert stores.registry.device_ids() == {"taken"}


def test_a_batch_of_one(db: Registry) -> None:
    sessions, stores = db
    add = stores.registry.add_devices
    add([NewDevice("menin-gate-ctl", "menin-gate", hash_chosen_secret("s3cret"))], NOW)
    with pytest.raises(RegistryError, match=r"^device 'menin-gate-ctl' is already registered$"):
        add([NewDevice("menin-gate-ctl", "menin-gate")], NOW)
    with pytest.raises(RegistryError, match=r"^unknown site 'nowhere'$"):
        add([NewDevice("other", "nowhere")], NOW)
    assert stores.registry.device_ids() == {"menin-gate-ctl"}
    stored = secret_hash(sessions, "menin-gate-ctl")
    assert stored is not None and verify_secret("s3cret", stored)
