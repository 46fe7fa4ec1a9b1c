"""`Store.add_devices` on real databases: SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import controller.store.repo as repo
from controller.registration import BatchRejected, ProblemKind, hash_generated_secret
from controller.store.base import NewDevice, RegistryError
from controller.store.db import make_engine, migrate, session_factory
from controller.store.repo import Store
from controller.store.tables import DeviceRow
from tests.controller.test_store_databases import CATALOG, postgres_url  # noqa: F401

NOW = datetime(2026, 7, 30, 19, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (
        f"sqlite:///{tmp_path}/illuminate.sqlite"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    migrate(engine)
    store = Store(session_factory(engine))
    store.import_catalog(CATALOG)
    yield store
    engine.dispose()


def count(store: Store) -> int:
    with store.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(DeviceRow)) or 0)


def test_a_large_batch_in_one_transaction(store: Store) -> None:
    batch = [
        NewDevice(f"gate-{i:05d}", "menin-gate", hash_generated_secret(f"pw-{i}"))
        for i in range(5000)
    ]
    generation = store.registry_generation
    store.add_devices(batch, NOW)
    assert count(store) == 5000
    assert store.registry_generation == generation + 1
    with store.sessions() as s:
        row = s.get(DeviceRow, "gate-04999")
        assert row is not None
        assert (row.site_id, row.kind, row.version_floor, row.created_at) == (
            "menin-gate",
            "native",
            0,
            NOW,
        )
        assert row.secret_hash == batch[-1].secret_hash
    store.add_devices([], NOW)  # nothing to do
    assert count(store) == 5000


def test_every_problem_is_named_and_nothing_is_stored(store: Store) -> None:
    store.add_devices([NewDevice("taken", "menin-gate")], NOW)
    batch = [
        NewDevice("fine", "menin-gate"),
        NewDevice("taken", "menin-gate"),
        NewDevice("Not/Valid", "menin-gate"),
        NewDevice("illuminate-bridge", "menin-gate"),
        NewDevice("lost", "nowhere"),
        NewDevice("fine", "menin-gate"),
    ]
    with pytest.raises(RegistryError) as caught:
        store.add_devices(batch, NOW)
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
    assert store.device_ids() == {"taken"}


def test_a_race_lost_at_insert_is_reported_as_already_registered(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process registers an id between the check and the insert: the primary
    key catches it, and the error says which id, as if the check had seen it."""
    store.add_devices([NewDevice("taken", "menin-gate")], NOW)
    real = repo._present
    stale = iter([True])

    def present_once_stale(s: Any, column: Any, values: set[str]) -> set[str]:
        found = real(s, column, values)
        return set() if column is DeviceRow.id and next(stale, False) else found

    monkeypatch.setattr(repo, "_present", present_once_stale)
    with pytest.raises(BatchRejected) as caught:
        store.add_devices([NewDevice("new", "menin-gate"), NewDevice("taken", "menin-gate")], NOW)
    assert [(p.index, p.kind) for p in caught.value.problems] == [(1, ProblemKind.REGISTERED)]
    assert store.device_ids() == {"taken"}


def test_add_device_is_a_batch_of_one(store: Store) -> None:
    store.add_device("menin-gate-ctl", "menin-gate", "s3cret", NOW)
    with pytest.raises(RegistryError, match=r"^device 'menin-gate-ctl' is already registered$"):
        store.add_device("menin-gate-ctl", "menin-gate", None, NOW)
    with pytest.raises(RegistryError, match=r"^unknown site 'nowhere'$"):
        store.add_device("other", "nowhere", None, NOW)
    assert store.device_ids() == {"menin-gate-ctl"}
