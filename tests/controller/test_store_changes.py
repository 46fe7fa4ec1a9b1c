"""Watched stores and DeviceReads: a reader's copy re-reads only what was written since,
and is always what a full read would give. On memory and SQLite stores."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.lifecycle import CommandState
from controller.store.base import Move, NewDevice, NewVersion, Stores
from controller.store.changes import Catalogs, DeviceReads, Snapshots, watched
from controller.store.memory import memory_stores
from controller.store.sql import database
from devices.clock import FakeClock
from devices.protocol import LightState, Plan, PlanStep, encode
from schedules.model import SiteCatalog

T0 = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)
IDS = [f"d{i}" for i in range(6)]
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [{"id": "bxl", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"}],
        "sites": [
            {"id": f"s{i}", "city": "bxl", "name": {"en": f"S{i}"}, "lat": 50.8, "lon": 4.3}
            for i in range(7)
        ],
    }
)


def payload(version: int) -> str:
    plan = Plan(version=version, issued_at=T0, steps=[PlanStep(at=T0, state=LightState(on=False))])
    return encode(plan).decode()


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    def prepare(raw: Stores) -> Stores:
        raw.registry.import_catalog(CATALOG)
        raw.registry.add_devices([NewDevice(d, f"s{i}") for i, d in enumerate(IDS)], T0)
        raw.outbox.add_versions([NewVersion(d, 1, payload(1), T0, None) for d in IDS])
        return watched(raw)

    if request.param == "memory":
        yield prepare(memory_stores())
        return
    with database(f"sqlite:///{tmp_path}/db.sqlite") as (_, _, raw):
        yield prepare(raw)


def full(stores: Stores) -> tuple[dict, dict]:
    return stores.reports.views(), stores.outbox.latest()


def test_a_report_a_move_and_a_new_version_are_read_without_a_full_read(stores: Stores) -> None:
    clock = FakeClock(T0)
    reads = DeviceReads(stores, clock.monotonic)
    assert reads.read() == full(stores)
    assert (reads.full_reads, reads.partial_reads) == (1, 0)

    view = stores.reports.views({"d0"})["d0"]
    stores.reports.save([replace(view, online=True, status_at=T0)])
    assert reads.read() == full(stores)
    command = stores.outbox.latest({"d1"})["d1"]
    stores.outbox.move([Move(command.id, CommandState.PUBLISHED, T0)])
    assert reads.read() == full(stores)
    old = stores.outbox.latest({"d2"})["d2"]
    stores.outbox.add_versions([NewVersion("d2", 2, payload(2), T0, (old.id, old.state))])
    got = reads.read()
    assert got == full(stores)
    assert got[1]["d2"].version == 2
    assert (reads.full_reads, reads.partial_reads) == (1, 3)

    # the new version's own move is heard by its command id
    stores.outbox.move([Move(got[1]["d2"].id, CommandState.PUBLISHED, T0)])
    assert reads.read()[1]["d2"].state is CommandState.PUBLISHED
    assert reads.partial_reads == 4


def test_nothing_written_reads_nothing(stores: Stores) -> None:
    reads = DeviceReads(stores, FakeClock(T0).monotonic)
    reads.read()
    reads.read()
    assert (reads.full_reads, reads.partial_reads) == (1, 0)


def test_a_registry_change_many_changes_or_time_make_a_full_read(stores: Stores) -> None:
    clock = FakeClock(T0)
    reads = DeviceReads(stores, clock.monotonic, full_every_s=60)
    reads.read()
    stores.registry.add_devices([NewDevice("d6", "s6")], T0)  # another process may do this
    assert "d6" in reads.read()[0]
    assert reads.full_reads == 2
    views = stores.reports.views()
    stores.reports.save([replace(views[d], online=True) for d in IDS[:4]])  # most of them
    assert reads.read() == full(stores)
    assert reads.full_reads == 3
    clock.advance(timedelta(seconds=60))
    reads.read()
    assert reads.full_reads == 4


def test_unwatched_stores_are_read_in_full_every_time(tmp_path: Path) -> None:
    raw = memory_stores()
    raw.registry.import_catalog(CATALOG)
    reads = DeviceReads(raw, FakeClock(T0).monotonic)
    reads.read()
    reads.read()
    assert reads.full_reads == 2


def test_one_catalog_copy_serves_every_reader_until_the_registry_moves(stores: Stores) -> None:
    catalogs = Catalogs(stores.registry)
    snapshots = Snapshots(stores, catalogs=catalogs)
    first = catalogs()
    assert first == stores.registry.catalog()
    assert catalogs() is first and snapshots().catalog is first  # no second copy
    stores.registry.add_devices([NewDevice("d-new", "s6")], T0)  # the revision moves
    again = catalogs()
    assert again is not first and again == stores.registry.catalog()
    assert snapshots().catalog is again
