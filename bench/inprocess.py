"""In-process scenarios: the steady reconcile tick, and the floor of registration."""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.fleet import catalog, one_per_site, register_fleet, sunset_campaign
from bench.report import row
from controller.reconcile import Reconciler
from controller.store.sql import database
from devices.clock import FakeClock
from schedules.model import Campaign

NOW = datetime(2026, 7, 30, 12, 0, tzinfo=UTC)


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def registration_floor(devices: int) -> float:
    """Plain sqlite3: insert `devices` rows of the same shape in one transaction."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "floor.sqlite")
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE devices (id TEXT PRIMARY KEY, site_id TEXT, secret_hash TEXT,"
                " created_at TEXT)"
            )
            rows = [(f"d{i:06d}", f"site-{i:05d}", None, NOW.isoformat()) for i in range(devices)]
            start = time.perf_counter()
            with conn:
                conn.executemany("INSERT INTO devices VALUES (?, ?, ?, ?)", rows)
            return time.perf_counter() - start
        finally:
            conn.close()


def reconcile_tick(sites: int) -> dict[str, Any]:
    """Steady reconcile tick at `sites` sites (one device each) with a daily sunset
    campaign, beside building as many aware datetimes."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'tick.sqlite'}"
        ids = [f"d{i:06d}" for i in range(sites)]
        register_fleet(url, catalog(sites), one_per_site(ids, None))
        with database(url) as (_, _, stores):
            stores.campaigns.put(Campaign.model_validate(sunset_campaign()), NOW)
            clock = FakeClock(NOW)
            rec = Reconciler(stores, clock, timedelta(hours=48), timedelta(seconds=30))
            start = time.perf_counter()
            rec.run(now=NOW)
            first = time.perf_counter() - start
            later = NOW + timedelta(seconds=30)
            steady = timed(lambda: rec.run(now=later))
    floor = timed(lambda: [NOW + timedelta(seconds=i) for i in range(sites)])
    return row("reconcile-tick", sites, steady, floor, first_run_s=round(first, 3))
