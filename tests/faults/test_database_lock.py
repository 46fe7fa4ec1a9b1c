"""Scenario 6: the database is held locked for 45 s while acks arrive, on SQLite and on
PostgreSQL.

The plans are in the outbox and on the broker; the lock is taken; then the fleet
boots and every device acks its plan (received, armed, applied) into the locked
database. When the lock goes, every ack is stored: nothing was lost. `/readyz` must
say the database is not answering while it is locked, and recover.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.faults.harness import BLUE, Rig, Window, count, rig, seconds, wait_until, whole_second
from tests.support.databases import postgres_database


@contextmanager
def locked(url: str) -> Iterator[None]:
    """Hold the controller's tables locked for writing (SQLite: the database; PostgreSQL:
    every table the controller writes, against reads too) until the block ends."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1], timeout=30, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(
            "LOCK TABLE devices, commands, command_events, revisions IN ACCESS EXCLUSIVE MODE"
        )
        try:
            yield
        finally:
            conn.rollback()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def lock_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    hold_s = seconds(45, 8)
    with contextlib_db(request.param) as url:
        workdir = tmp_path_factory.mktemp(f"db-lock-{request.param}")
        with rig(workdir, count(200), database_url=url) as r:
            opens = whole_second(1)
            r.start_broker()
            r.setup([Window(opens, opens + timedelta(minutes=30))], BLUE)
            r.start_controller()
            wait_until("every plan on the broker", lambda: _published(r))
            codes: list[tuple[str, int]] = []
            done = threading.Event()
            phase = ["before"]

            def probe() -> None:
                while not done.is_set():
                    codes.append((phase[0], r.readyz()))
                    time.sleep(0.5)

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            with locked(r.db_url):
                phase[0] = "locked"
                for shard in r.shards:
                    r.start_shard(shard)
                r.wait_acked("applied", 1)  # every ack reached the broker, none stored yet
                time.sleep(max(0.0, hold_s))  # the lock itself, not a wait for anything
            phase[0] = "after"
            r.verify(1)
            wait_until("/readyz green", lambda: r.readyz() == 200)
            wait_until("a probe after the lock", lambda: codes[-1][0] == "after")
            done.set()
            prober.join(timeout=30)
            yield {"rig": r, "codes": codes}


@contextmanager
def contextlib_db(kind: str) -> Iterator[str | None]:
    if kind == "sqlite":
        yield None
    else:
        with postgres_database() as url:
            yield url


def _published(r: Rig) -> bool:
    latest = r.stores().outbox.latest()
    return len(latest) == len(r.ids) and all(c.state.value == "published" for c in latest.values())


def test_no_ack_is_lost_while_the_database_is_locked(lock_run: dict[str, Any]) -> None:
    r: Rig = lock_run["rig"]
    stores = r.stores()
    views = stores.reports.views()
    events = stores.outbox.events()
    for device in set(r.ids) - r.silent_ids:
        stages = {e.to_state.value for e in events if e.device_id == device and e.version == 1}
        assert {"received", "armed", "applied"} <= stages, (device, stages)
        assert views[device].applied_version == 1, device
    # a newer state report or status may replace an older one still waiting (coalesced);
    # an ack is never let go
    for reason in ("device_queue_full", "inbox_full"):
        assert r.metric(f'illuminate_device_messages_dropped_total{{reason="{reason}"}}') == 0


def test_readyz_goes_red_while_locked_and_green_again(lock_run: dict[str, Any]) -> None:
    codes: list[tuple[str, int]] = lock_run["codes"]
    assert any(phase == "locked" and code != 200 for phase, code in codes), codes
    assert codes[-1] == ("after", 200)
