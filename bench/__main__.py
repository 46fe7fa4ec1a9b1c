"""On-demand benchmarks: `make bench`. Prints numbers; asserts nothing.

Each figure is shown beside a baseline measured in the same run, because shared
machines are noisy: compare ratios, not absolute times, across runs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from controller.public import public_status
from controller.reconcile import Reconciler
from controller.store.db import make_engine, migrate, session_factory
from controller.store.repo import Store
from schedules.model import Campaign, SiteCatalog
from schedules.solar import SunEvent, sun_event

NOW = datetime(2026, 7, 30, 12, 0, tzinfo=UTC)


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def fleet(store: Store, sites: int, devices_per_site: int) -> None:
    catalog = SiteCatalog.model_validate(
        {
            "cities": [
                {"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"}
            ],
            "sites": [
                {
                    "id": f"s{i:05d}",
                    "city": "brussels",
                    "name": {"en": f"Site {i}"},
                    "lat": 50.8 + (i % 100) / 1000,
                    "lon": 4.3 + (i // 100) / 1000,
                }
                for i in range(sites)
            ],
        }
    )
    store.import_catalog(catalog)
    for i in range(sites):
        for d in range(devices_per_site):
            store.add_device(f"d{i:05d}-{d}", f"s{i:05d}", None, NOW)
    store.put_campaign(
        Campaign.model_validate(
            {
                "id": "world-day",
                "title": {"en": "World Day"},
                "color": "#009EDB",
                "windows": [
                    {
                        "targets": {"all": True},
                        "rrule": "FREQ=YEARLY;BYMONTH=7;BYMONTHDAY=30",
                        "start": {"sun": "sunset", "offset": "-15m"},
                        "end": {"at": "01:00"},
                    }
                ],
            }
        ),
        NOW,
    )


def bench_reconcile(sizes: list[int]) -> None:
    print("reconcile (SQLite, one sunset campaign, one device per site)")
    head = ("devices", "first run", "steady tick", "public status", "per device")
    print("  {:>8} {:>10} {:>12} {:>14} {:>11}".format(*head))
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'b.sqlite'}")
            migrate(engine)
            store = Store(session_factory(engine))
            fleet(store, n, 1)
            rec = Reconciler(store, lambda: NOW, timedelta(hours=48), timedelta(seconds=30))
            t0 = time.perf_counter()
            rec.run(now=NOW)
            first = time.perf_counter() - t0
            steady = timed(lambda rec=rec: rec.run(now=NOW + timedelta(seconds=30)))
            public = timed(
                lambda store=store: public_status(
                    store.snapshot(), NOW, timedelta(seconds=30), timedelta(hours=24)
                )
            )
            print(
                f"  {n:>8} {first:>9.2f}s {steady:>11.3f}s {public:>13.3f}s "
                f"{steady / n * 1e3:>9.2f}ms"
            )
            engine.dispose()


def bench_solar() -> None:
    zone = ZoneInfo("Europe/Brussels")
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    baseline = timed(lambda: [datetime.combine(d, datetime.min.time(), tzinfo=zone) for d in days])
    sunsets = timed(lambda: [sun_event(SunEvent.SUNSET, d, 50.85, 4.35, zone) for d in days])
    print("solar events, Brussels, 365 days")
    print(f"  baseline (365 aware datetimes): {baseline * 1e3:.2f} ms")
    print(
        f"  365 sunsets: {sunsets * 1e3:.1f} ms ({sunsets / baseline:.0f}x baseline, "
        f"{sunsets / 365 * 1e6:.0f} us each)"
    )


if __name__ == "__main__":
    bench_solar()
    bench_reconcile([100, 1000])
