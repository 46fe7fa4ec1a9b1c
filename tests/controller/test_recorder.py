"""The recorder on in-memory stores and a fake clock: runs, settling ended windows, the
outcome kept after the campaign changes; and the staff routes that show them, over real
HTTP on a real SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.metrics import Metrics
from controller.recorder import Recorder
from controller.store.base import NewDevice, Stores
from controller.store.history import (
    DeviceEvent,
    EventKind,
    HistoryStore,
    MemoryHistory,
    Verdict,
)
from controller.store.history_sql import sql_history
from controller.store.memory import memory_stores
from controller.store.sql import database
from controller.store.users import Users
from controller.web.app import build_web
from devices.clock import FakeClock
from devices.protocol import LightState
from schedules.model import Campaign, SiteCatalog
from tests.controller.test_staff_api import public_view, serve

GRACE = timedelta(seconds=30)
# 30 July 2026, Brussels (UTC+2): the window is 21:00-23:00 local, 19:00-21:00 UTC
BOOT = datetime(2026, 7, 30, 12, 0, tzinfo=UTC)
START = datetime(2026, 7, 30, 19, 0, tzinfo=UTC)
END = datetime(2026, 7, 30, 21, 0, tzinfo=UTC)
BLUE = LightState(on=True, color="#009EDB", level=80)
CATALOG = SiteCatalog.model_validate(
    {
        "cities": [
            {"id": "brussels", "name": {"en": "Brussels"}, "timezone": "Europe/Brussels"},
            {"id": "ypres", "name": {"en": "Ypres"}, "timezone": "Europe/Brussels"},
        ],
        "sites": [
            {"id": "atomium", "city": "brussels", "name": {"en": "A"}, "lat": 50.89, "lon": 4.34},
            {"id": "menin-gate", "city": "ypres", "name": {"en": "M"}, "lat": 50.85, "lon": 2.89},
        ],
    }
)


def campaign(date: str = "2026-07-30") -> Campaign:
    return Campaign.model_validate(
        {
            "id": "blue-heart",
            "title": {"en": "Blue Heart"},
            "color": "#009EDB",
            "level": 80,
            "windows": [
                {
                    "targets": {"all": True},
                    "dates": [date],
                    "start": {"at": "21:00"},
                    "end": {"at": "23:00"},
                }
            ],
        }
    )


def setup(stores: Stores) -> None:
    stores.registry.import_catalog(CATALOG)
    stores.registry.add_devices(
        [NewDevice("lit-ctl", "atomium"), NewDevice("dark-ctl", "menin-gate")], BOOT
    )
    stores.campaigns.put(campaign(), BOOT)


def started(device: str, received: datetime) -> DeviceEvent:
    return DeviceEvent(
        device,
        EventKind.STEP,
        received,
        version=1,
        step_at=START,
        applied_at=START + timedelta(seconds=0.1),
        state=BLUE.model_dump(mode="json"),
        source="ack",
    )


def heard(history: HistoryStore, at: datetime = BOOT) -> None:
    history.add_events(
        [
            DeviceEvent("lit-ctl", EventKind.ONLINE, at),
            DeviceEvent("dark-ctl", EventKind.ONLINE, at),
        ]
    )


def verdicts(history: HistoryStore) -> dict[str, Verdict]:
    return {r.device_id: r.verdict for r in history.outcomes(campaign_id="blue-heart")}


@pytest.fixture
def world() -> tuple[Stores, MemoryHistory, FakeClock]:
    stores = memory_stores()
    setup(stores)
    return stores, MemoryHistory(), FakeClock(BOOT)


def recorder(world: tuple[Stores, MemoryHistory, FakeClock]) -> Recorder:
    stores, history, clock = world
    return Recorder(history, stores, clock, GRACE)


def test_a_window_while_the_controller_was_down_is_missed_or_confirmed_late(world) -> None:
    stores, history, clock = world
    first = recorder(world)
    first.start(background=False)
    heard(history)
    clock.advance(START - BOOT - timedelta(minutes=5))
    first.stop()  # down from 18:55 ...
    clock.advance(timedelta(hours=2, minutes=10))
    second = recorder(world)
    second.start(background=False)  # ... to 21:05: across the whole window
    # before the held acks come in, no report shows that either device lit it
    assert {r.device_id: r.verdict for r in second.settle()} == {
        "lit-ctl": Verdict.MISSED,
        "dark-ctl": Verdict.MISSED,
    }
    assert verdicts(history) == {"lit-ctl": Verdict.MISSED, "dark-ctl": Verdict.MISSED}

    # the acks the broker held for the controller come in: lit-ctl lit on its own
    clock.advance(1)
    history.add_events([started("lit-ctl", clock())])
    changed = second.settle()
    assert [(r.device_id, r.verdict) for r in changed] == [("lit-ctl", Verdict.CONFIRMED_LATE)]
    record = history.outcomes(device_id="lit-ctl")[0]
    assert (record.starts_at, record.ends_at) == (START, END)
    assert record.confirmed_at == START + timedelta(seconds=0.1)
    assert record.reported_at == clock()
    assert verdicts(history) == {"lit-ctl": Verdict.CONFIRMED_LATE, "dark-ctl": Verdict.MISSED}
    assert second.settle() == []  # nothing changed: nothing written

    # the campaign ends and is rewritten for another day: its record stays
    stores.campaigns.put(campaign("2026-08-30"), clock())
    clock.advance(timedelta(days=3))
    second.settle()
    assert verdicts(history) == {"lit-ctl": Verdict.CONFIRMED_LATE, "dark-ctl": Verdict.MISSED}


def test_a_window_while_the_controller_was_up(world) -> None:
    _stores, history, clock = world
    rec = recorder(world)
    rec.start(background=False)
    heard(history)
    history.add_events([DeviceEvent("dark-ctl", EventKind.OFFLINE, START - timedelta(hours=1))])
    clock.advance(START - BOOT + timedelta(seconds=1))
    history.add_events([started("lit-ctl", clock())])
    rec.beat()
    assert rec.settle() == []  # the window is still open
    clock.advance(END - clock())
    assert {r.device_id: r.verdict for r in rec.settle()} == {
        "lit-ctl": Verdict.CONFIRMED,
        "dark-ctl": Verdict.OFFLINE,
    }


def test_a_device_is_judged_from_when_it_was_first_heard(world) -> None:
    _stores, history, clock = world
    rec = recorder(world)
    rec.start(background=False)
    history.add_events([DeviceEvent("lit-ctl", EventKind.ONLINE, BOOT)])
    history.add_events([DeviceEvent("dark-ctl", EventKind.ONLINE, START + timedelta(minutes=5))])
    clock.advance(END - BOOT + timedelta(minutes=1))
    assert verdicts(history) == {}
    rec.settle()
    assert verdicts(history) == {"lit-ctl": Verdict.UNCONFIRMED}


def test_windows_before_the_first_run_are_not_judged(world) -> None:
    _stores, history, clock = world
    heard(history)
    clock.advance(START - BOOT + timedelta(minutes=1))
    rec = recorder(world)
    rec.start(background=False)  # the controller first ran inside the window
    clock.advance(timedelta(hours=3))
    assert rec.settle() == []


# the staff routes ---------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return 0.0


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        setup(stores)
        history = sql_history(sessions)
        clock = FakeClock(BOOT)
        first = Recorder(history, stores, clock, GRACE)
        first.start(background=False)
        heard(history)
        clock.advance(START - BOOT - timedelta(minutes=5))
        first.stop()
        clock.advance(timedelta(hours=2, minutes=10))
        second = Recorder(history, stores, clock, GRACE)
        second.start(background=False)
        clock.advance(1)
        history.add_events([started("lit-ctl", clock())])
        second.settle()
        users = Users(sessions)
        now = Clock(clock() + timedelta(minutes=1))
        app = build_web(
            stores,
            now,
            Metrics(),
            public=public_view(stores, now),
            ready=lambda: {"database": True},
            users=users,
        )
        tokens = {
            "tech": users.add("tom", "technician", ["brussels"], BOOT),
            "coordinator": users.add("cora", "coordinator", [], BOOT),
        }
        with serve(app) as http:
            yield http, {k: f"Bearer {v}" for k, v in tokens.items()}


def get(http: httpx.Client, token: str, url: str, **params: Any) -> httpx.Response:
    return http.get(url, headers={"Authorization": token}, params=params)


def test_a_devices_history_shows_its_windows_events_and_the_controllers_down_time(api) -> None:
    http, tokens = api
    answer = get(http, tokens["tech"], "/api/v1/devices/lit-ctl/history")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["device"] == "lit-ctl" and body["site"] == "atomium"
    assert [(w["outcome"], w["start"], w["end"]) for w in body["windows"]] == [
        ("confirmed_late", "2026-07-30T19:00:00Z", "2026-07-30T21:00:00Z")
    ]
    assert [(e["kind"], e.get("step_at")) for e in body["events"]] == [
        ("online", None),
        ("step", "2026-07-30T19:00:00Z"),
    ]
    assert body["controller_down"] == [
        {"start": "2026-07-30T18:55:00Z", "end": "2026-07-30T21:05:00Z"}
    ]
    dark = get(http, tokens["coordinator"], "/api/v1/devices/dark-ctl/history").json()
    assert [w["outcome"] for w in dark["windows"]] == ["missed"]
    # a span that ends before the window: nothing of it
    early = get(
        http, tokens["tech"], "/api/v1/devices/lit-ctl/history", until="2026-07-30T18:00:00Z"
    ).json()
    assert early["windows"] == [] and [e["kind"] for e in early["events"]] == ["online"]


def test_history_refuses_bad_input_with_a_clear_4xx(api) -> None:
    http, tokens = api
    url = "/api/v1/devices/lit-ctl/history"
    for params in (
        {"since": "2026-07-30T10:00:00"},  # no zone
        {"since": "2026-07-31T10:00:00Z", "until": "2026-07-30T10:00:00Z"},
        {"since": "2020-01-01T00:00:00Z", "until": "2026-07-30T10:00:00Z"},
        {"since": "yesterday"},
        {"limit": "0"},
    ):
        assert get(http, tokens["tech"], url, **params).status_code == 422, params
    assert get(http, tokens["tech"], "/api/v1/devices/Bad!/history").status_code == 422
    assert get(http, tokens["tech"], "/api/v1/devices/nobody/history").status_code == 404
    # another city's device answers as a missing one
    other = get(http, tokens["tech"], "/api/v1/devices/dark-ctl/history")
    assert other.status_code == 404 and other.json() == {"detail": "no device 'dark-ctl'"}


def test_a_campaigns_outcome_per_site(api) -> None:
    http, tokens = api
    answer = get(http, tokens["coordinator"], "/api/v1/campaigns/blue-heart/outcome")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "campaign": "blue-heart",
        "sites": [
            {
                "site": "atomium",
                "city": "brussels",
                "outcome": "confirmed_late",
                "windows": 1,
                "counts": {"confirmed_late": 1},
                "first_start": "2026-07-30T19:00:00Z",
                "last_end": "2026-07-30T21:00:00Z",
            },
            {
                "site": "menin-gate",
                "city": "ypres",
                "outcome": "missed",
                "windows": 1,
                "counts": {"missed": 1},
                "first_start": "2026-07-30T19:00:00Z",
                "last_end": "2026-07-30T21:00:00Z",
            },
        ],
    }
    assert get(http, tokens["coordinator"], "/api/v1/campaigns/nothing/outcome").status_code == 404
    assert get(http, tokens["tech"], "/api/v1/campaigns/blue-heart/outcome").status_code == 403
