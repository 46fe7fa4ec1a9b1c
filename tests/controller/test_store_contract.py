"""One contract for every store implementation: memory, SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from controller.lifecycle import CommandState as S
from controller.registration import hash_chosen_secret, hash_generated_secret, verify_secret
from controller.store.base import Command, Move, NewDevice, NewVersion, RegistryError, Stores
from controller.store.db import migrate
from controller.store.memory import memory_stores
from schedules.model import Campaign, SiteCatalog
from tests.support.stores import SQL_KINDS, Database, secret_hash, sql_database

NOW = datetime(2026, 7, 30, 19, 30, tzinfo=UTC)
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [
            {"id": "ypres", "name": {"en": "Ypres", "nl": "Ieper"}, "timezone": "Europe/Brussels"}
        ],
        "sites": [
            {
                "id": "menin-gate",
                "city": "ypres",
                "name": {"en": "Menin Gate", "nl": "Menenpoort"},
                "lat": 50.85212,
                "lon": 2.89134,
                "tags": ["monument", "war-memorial"],
            },
            {
                "id": "cloth-hall",
                "city": "ypres",
                "name": {"en": "Cloth Hall"},
                "lat": 50.85,
                "lon": 2.88,
            },
        ],
    }
)
CAMPAIGN = Campaign.model_validate(
    {
        "id": "blue-heart",
        "title": {"en": "Blue Heart"},
        "color": "#009EDB",
        "windows": [
            {
                "targets": {"all": True},
                "dates": ["2026-07-30"],
                "start": {"at": "21:00"},
                "end": {"at": "23:00"},
            }
        ],
    }
)


@pytest.fixture(params=["memory", *SQL_KINDS])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "memory":
        yield memory_stores()
        return
    with sql_database(request.param, tmp_path) as (_, _, found):
        yield found


@pytest.fixture(params=SQL_KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The SQL stores with their engine and sessions, for what only a database has."""
    with sql_database(request.param, tmp_path) as found:
        yield found


def registered(stores: Stores, *ids: str) -> Stores:
    stores.registry.import_catalog(CATALOG)
    stores.registry.add_devices([NewDevice(i, "menin-gate") for i in ids], NOW)
    return stores


def plan(version: int) -> str:
    return (
        f'{{"v":1,"version":{version},"issued_at":"2026-07-30T19:00:00Z",'
        '"steps":[{"at":"2026-07-30T19:00:00Z","state":{"on":false}}]}'
    )


def first(stores: Stores, device: str = "d1", version: int = 1) -> Command:
    [command] = stores.outbox.add_versions([NewVersion(device, version, plan(version), NOW, None)])
    return command


# registry ------------------------------------------------------------------------


def test_registry_round_trip_and_revision(stores: Stores) -> None:
    before = stores.registry.revision()
    assert stores.registry.import_catalog(CATALOG) == (1, 2)
    assert [s.id for s in stores.registry.catalog().sites] == ["cloth-hall", "menin-gate"]
    stores.registry.add_devices([NewDevice("d1", "menin-gate", "hash")], NOW)
    assert stores.registry.device_ids() == {"d1"}
    assert stores.registry.revision() > before
    view = stores.reports.views()["d1"]
    assert (view.site_id, view.online, view.version_floor) == ("menin-gate", None, 0)


def test_add_devices_is_all_or_nothing_and_names_every_problem(stores: Stores) -> None:
    registered(stores, "d1")
    batch = [
        NewDevice("ok-1", "menin-gate"),
        NewDevice("Bad/Id", "menin-gate"),
        NewDevice("illuminate-x", "menin-gate"),
        NewDevice("d1", "menin-gate"),
        NewDevice("ok-2", "nowhere"),
        NewDevice("ok-1", "menin-gate"),
    ]
    with pytest.raises(RegistryError) as info:
        stores.registry.add_devices(batch, NOW)
    text = str(info.value)
    for part in (
        "invalid device id 'Bad/Id'",
        "reserved",
        "already registered",
        "unknown site 'nowhere'",
        "repeated",
    ):
        assert part in text
    assert stores.registry.device_ids() == {"d1"}


def test_import_catalog_is_idempotent_and_keeps_every_field(stores: Stores) -> None:
    assert stores.registry.import_catalog(CATALOG) == (1, 2)
    assert stores.registry.import_catalog(CATALOG) == (1, 2)
    assert stores.registry.catalog() == CATALOG.model_copy(
        update={"sites": tuple(sorted(CATALOG.sites, key=lambda s: s.id))}
    )


def test_bulk_registration_of_many(stores: Stores) -> None:
    stores.registry.import_catalog(CATALOG)
    stores.registry.add_devices([NewDevice(f"d{i}", "cloth-hall") for i in range(3000)], NOW)
    assert len(stores.registry.device_ids()) == 3000
    assert len(stores.reports.views({"d1", "d2999", "nope"})) == 2


# campaigns -----------------------------------------------------------------------


def test_campaigns_put_replace_and_revision(stores: Stores) -> None:
    r0 = stores.campaigns.revision()
    assert stores.campaigns.put(CAMPAIGN, NOW) is True
    later = NOW + timedelta(hours=1)
    assert stores.campaigns.put(CAMPAIGN.model_copy(update={"color": "#FF0000"}), later) is False
    record = stores.campaigns.record("blue-heart")
    assert record is not None and record.body["color"] == "#FF0000"
    assert (record.created_at, record.updated_at) == (NOW, later)
    assert [c.id for c in stores.campaigns.all()] == ["blue-heart"]
    assert stores.campaigns.revision() >= r0 + 2
    assert stores.campaigns.record("nope") is None


# outbox --------------------------------------------------------------------------


def test_new_version_supersedes_open_ones_and_is_audited(stores: Stores) -> None:
    registered(stores, "d1")
    one = first(stores)
    assert (one.state, one.version, one.plan.version) == (S.PENDING, 1, 1)
    assert stores.outbox.pending() == [one]
    later = NOW + timedelta(minutes=1)
    [two] = stores.outbox.add_versions([NewVersion("d1", 2, plan(2), later, (one.id, S.PENDING))])
    assert stores.outbox.latest()["d1"] == two
    old = stores.outbox.get([("d1", 1)])[("d1", 1)]
    assert (old.state, old.state_at) == (S.SUPERSEDED, later)
    assert [(e.version, e.from_state, e.to_state) for e in stores.outbox.events("d1")] == [
        (1, None, S.PENDING),
        (1, S.PENDING, S.SUPERSEDED),
        (2, None, S.PENDING),
    ]


def test_a_published_version_is_superseded_and_every_event_keeps_its_time(
    stores: Stores,
) -> None:
    registered(stores, "d1")
    one = first(stores)
    later = NOW + timedelta(seconds=1)
    assert stores.outbox.move([Move(one.id, S.PUBLISHED, later)]) == [True]
    assert stores.outbox.move([Move(one.id, S.PENDING, later)]) == [False]  # illegal
    published = stores.outbox.latest()["d1"]
    assert (published.state, published.published_at) == (S.PUBLISHED, later)
    [two] = stores.outbox.add_versions([NewVersion("d1", 2, plan(2), later, (one.id, S.PUBLISHED))])
    old = stores.outbox.get([("d1", 1)])[("d1", 1)]
    assert (old.state, old.reason) == (S.SUPERSEDED, "by version 2")
    assert stores.outbox.latest()["d1"] == two
    events = [(e.version, e.from_state, e.to_state, e.at) for e in stores.outbox.events("d1")]
    assert events == [
        (1, None, S.PENDING, NOW),
        (1, S.PENDING, S.PUBLISHED, later),
        (1, S.PUBLISHED, S.SUPERSEDED, later),
        (2, None, S.PENDING, later),
    ]
    # read back as aware UTC instants (SQLite keeps no zone of its own)
    assert all(e.at.tzinfo is not None for e in stores.outbox.events())
    for c in stores.outbox.get([("d1", 1), ("d1", 2)]).values():
        assert c.state_at.tzinfo is not None and c.created_at.tzinfo is not None
    assert old.published_at is not None and old.published_at.tzinfo is not None


def test_new_version_is_compare_and_set_on_what_the_caller_saw(stores: Stores) -> None:
    registered(stores, "d1", "d2")
    one = first(stores)
    # the device confirmed while the caller was deciding on an older read
    assert stores.outbox.move([Move(one.id, S.APPLIED, NOW)]) == [True]
    stale = NewVersion("d1", 2, plan(2), NOW, (one.id, S.PENDING))
    fresh = NewVersion("d2", 1, plan(1), NOW, None)
    stored = stores.outbox.add_versions([stale, fresh])
    assert [(c.device_id, c.version) for c in stored] == [("d2", 1)]
    assert stores.outbox.latest()["d1"].state is S.APPLIED
    # a caller that saw no command cannot add one where one now exists
    assert stores.outbox.add_versions([NewVersion("d1", 5, plan(5), NOW, None)]) == []


def test_moves_follow_the_lifecycle_in_order(stores: Stores) -> None:
    registered(stores, "d1")
    c = first(stores)
    results = stores.outbox.move(
        [
            Move(c.id, S.PUBLISHED, NOW),
            Move(c.id, S.RECEIVED, NOW),
            Move(c.id, S.PUBLISHED, NOW),  # backwards: refused
            Move(c.id, S.ARMED, NOW, only_from=frozenset({S.PENDING})),  # guard fails
            Move(c.id, S.ARMED, NOW),
            Move(c.id + 999, S.ARMED, NOW),  # no such command
        ]
    )
    assert results == [True, True, False, False, True, False]
    now = stores.outbox.latest()["d1"]
    assert (now.state, now.published_at) == (S.ARMED, NOW)
    assert [e.to_state for e in stores.outbox.events("d1")] == [
        S.PENDING,
        S.PUBLISHED,
        S.RECEIVED,
        S.ARMED,
    ]


def test_final_moves_keep_the_reason(stores: Stores) -> None:
    registered(stores, "d1")
    c = first(stores)
    stores.outbox.move([Move(c.id, S.REJECTED, NOW, "unsupported colour")])
    got = stores.outbox.latest()["d1"]
    assert (got.state, got.reason) == (S.REJECTED, "unsupported colour")
    assert stores.outbox.move([Move(c.id, S.APPLIED, NOW)]) == [False]


def test_concurrent_moves_never_both_win(stores: Stores) -> None:
    """Two writers race the same rows: each transition is made exactly once."""
    registered(stores, *(f"d{i}" for i in range(40)))
    commands = stores.outbox.add_versions(
        [NewVersion(f"d{i}", 1, plan(1), NOW, None) for i in range(40)]
    )
    wins: list[list[bool]] = []

    def writer() -> None:
        wins.append(stores.outbox.move([Move(c.id, S.PUBLISHED, NOW) for c in commands]))

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_command = [a + b for a, b in zip(wins[0], wins[1], strict=True)]
    assert per_command == [1] * 40
    published = [e for e in stores.outbox.events() if e.to_state is S.PUBLISHED]
    assert len(published) == 40


def test_latest_get_pending_and_counts(stores: Stores) -> None:
    registered(stores, "d1", "d2")
    a = first(stores, "d1")
    first(stores, "d2")
    stores.outbox.move([Move(a.id, S.PUBLISHED, NOW)])
    assert [c.device_id for c in stores.outbox.pending()] == ["d2"]
    assert len(stores.outbox.pending(limit=0)) == 0
    b = stores.outbox.pending()[0]
    assert stores.outbox.pending(after=b.id) == []
    assert stores.outbox.pending(after=b.id - 1) == [b]
    assert set(stores.outbox.latest({"d1"})) == {"d1"}
    assert set(stores.outbox.get([("d1", 1), ("d2", 1), ("d2", 7)])) == {("d1", 1), ("d2", 1)}
    assert stores.outbox.count_since({"d1": NOW, "d2": NOW}) == {"d1": 1, "d2": 1}
    assert stores.outbox.count_since({"d1": NOW + timedelta(seconds=1), "d2": NOW}) == {"d2": 1}


# reports -------------------------------------------------------------------------


def test_reports_save_only_report_fields(stores: Stores) -> None:
    registered(stores, "d1", "d2")
    view = stores.reports.views()["d1"]
    changed = replace(
        view,
        site_id="cloth-hall",  # not a report field: ignored
        online=True,
        status_at=NOW,
        applied_version=3,
        applied_step_at=NOW,
        applied_state={"on": True, "color": "#009EDB", "level": 80},
        applied_at=NOW,
        version_floor=7,
    )
    assert stores.reports.save([changed]) == 1
    got = stores.reports.views({"d1"})["d1"]
    assert got == replace(changed, site_id="menin-gate")
    assert stores.reports.views({"d2"})["d2"].online is None


def test_a_move_decided_on_an_earlier_read_loses_to_a_newer_move(stores: Stores) -> None:
    registered(stores, "d1")
    c = first(stores)
    stores.outbox.move([Move(c.id, S.APPLIED, NOW, "step 1")])
    seen = stores.outbox.latest()["d1"]
    later = NOW + timedelta(hours=2)
    # the intake confirms a later step (APPLIED -> APPLIED) ...
    assert stores.outbox.move([Move(c.id, S.APPLIED, later, "step 2")]) == [True]
    # ... so the reconciler's UNCONFIRMED, decided on the first APPLIED, is refused
    stale = Move(
        c.id, S.UNCONFIRMED, later, only_from=frozenset({S.APPLIED}), seen_at=seen.state_at
    )
    assert stores.outbox.move([stale]) == [False]
    assert stores.outbox.latest()["d1"].state is S.APPLIED
    fresh = stores.outbox.latest()["d1"]
    assert stores.outbox.move([replace(stale, seen_at=fresh.state_at)]) == [True]


def test_nul_characters_from_a_device_lose_nothing(
    stores: Stores, request: pytest.FixtureRequest
) -> None:
    """A device may put NUL characters in an ack's reason or its firmware (the protocol
    accepts any text): the batch is stored all the same, on every store."""
    registered(stores, "d1", "d2")
    one, two = stores.outbox.add_versions(
        [NewVersion(d, 1, plan(1), NOW, None) for d in ("d1", "d2")]
    )
    moves = [
        Move(one.id, S.REJECTED, NOW, "unsupported\x00 colour"),
        Move(two.id, S.PUBLISHED, NOW),
    ]
    assert stores.outbox.move(moves) == [True, True]
    got = stores.outbox.latest()
    assert (got["d1"].state, got["d2"].state) == (S.REJECTED, S.PUBLISHED)
    assert (got["d1"].reason or "").replace("\x00", "") == "unsupported colour"
    view = stores.reports.views()["d1"]
    assert stores.reports.save([replace(view, online=True, firmware="1.2\x00.3")]) == 1
    saved = stores.reports.views()["d1"]
    assert saved.online is True
    assert (saved.firmware or "").replace("\x00", "") == "1.2.3"


# what only the SQL stores have ---------------------------------------------------


def test_migrating_again_changes_nothing(db: Database) -> None:
    engine, _, stores = db
    registered(stores, "d1")
    migrate(engine)  # `database` migrated already: a second run is a no-op
    assert stores.registry.device_ids() == {"d1"}
    assert [s.id for s in stores.registry.catalog().sites] == ["cloth-hall", "menin-gate"]


def test_secret_hashes_are_stored_and_verify(db: Database) -> None:
    _, sessions, stores = db
    stores.registry.import_catalog(CATALOG)
    stores.registry.add_devices(
        [
            NewDevice("chosen", "menin-gate", hash_chosen_secret("s3cret")),
            NewDevice("drawn", "menin-gate", hash_generated_secret("drawn-password")),
            NewDevice("none", "menin-gate"),
        ],
        NOW,
    )
    chosen, drawn = secret_hash(sessions, "chosen"), secret_hash(sessions, "drawn")
    assert chosen is not None and chosen.startswith("scrypt$") and "s3cret" not in chosen
    assert drawn is not None and drawn.startswith("sha256$") and "drawn-password" not in drawn
    assert verify_secret("s3cret", chosen) and not verify_secret("wrong", chosen)
    assert verify_secret("drawn-password", drawn) and not verify_secret("wrong", drawn)
    assert secret_hash(sessions, "none") is None


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    with sql_database("sqlite", tmp_path) as (engine, _, _), engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
