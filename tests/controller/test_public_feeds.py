"""The public feeds: a campaign's windows as iCalendar, a city's confirmed changes as Atom.

The documents are built by pure functions (checked here on hand-made records and
campaigns, a DST day included), then served over real HTTP by uvicorn on a real SQLite
database, with their cache headers, ETags and 304s.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from icalendar import Calendar

from controller.atom_feed import ATOM, Change, Entry, changes, render_feed
from controller.calendar_feed import campaign_windows, feed_range, render_calendar, window_uid
from controller.metrics import Metrics
from controller.store.base import NewDevice, Stores
from controller.store.history import (
    DeviceEvent,
    EventKind,
    MemoryHistory,
    Verdict,
    WindowRecord,
)
from controller.store.sql import database
from controller.store.users import Users
from controller.web.app import build_web
from controller.web.feeds_api import CALENDAR_CACHE, FEED_CACHE, Feeds, Memo
from schedules.model import Campaign, SiteCatalog
from tests.controller.test_staff_api import CATALOG, public_view, serve

A = "{" + ATOM + "}"
BLUE = "#009EDB"
DST = datetime(2026, 3, 29, tzinfo=UTC)  # Brussels: CET -> CEST at 01:00 UTC


def nightly(**changes: Any) -> Campaign:
    body: dict[str, Any] = {
        "id": "blue-heart",
        "title": {"en": "Blue Heart", "fr": "Coeur bleu"},
        "color": BLUE,
        "level": 80,
        "reason": "World Day Against Trafficking in Persons",
        "windows": [
            {
                "targets": {"cities": ["brussels", "ypres"]},
                "rrule": "FREQ=DAILY",
                "start": {"at": "21:00"},
                "end": {"at": "23:00"},
            }
        ],
    }
    body.update(changes)
    return Campaign.model_validate(body)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ---- iCalendar --------------------------------------------------------------------


def test_the_calendar_holds_each_window_in_utc_across_a_dst_change() -> None:
    campaign = nightly()
    start, end = utc(2026, 3, 27), utc(2026, 3, 31)
    windows = campaign_windows(campaign.id, [campaign], CATALOG, start, end)
    changed = utc(2026, 3, 1, 9, 30)
    body = render_calendar(campaign, windows, changed)

    cal = Calendar.from_ical(body)
    events = cal.walk("VEVENT")
    starts = sorted({e.decoded("dtstart") for e in events})
    # 21:00 local: CET (UTC+1) up to the 28th, CEST (UTC+2) from the 29th
    assert starts == [utc(2026, 3, 27, 20), utc(2026, 3, 28, 20), utc(2026, 3, 29, 19),
                      utc(2026, 3, 30, 19)]  # fmt: skip
    assert len(events) == 8, "two monuments, four nights"
    dst_night = [e for e in events if e.decoded("dtstart") == utc(2026, 3, 29, 19)]
    assert {e.decoded("dtend") for e in dst_night} == {utc(2026, 3, 29, 21)}
    for event in events:
        assert event.decoded("dtstart").utcoffset() == timedelta(0)
        assert event.decoded("dtstamp") == changed
        assert str(event["summary"]) in ("Blue Heart: Atomium", "Blue Heart: Menin Gate")
        description = str(event["description"])
        assert BLUE in description and "Trafficking" in description
    assert b"DTSTART:20260329T190000Z" in body

    uids = [str(e["uid"]) for e in events]
    assert len(set(uids)) == len(uids)
    again = Calendar.from_ical(render_calendar(campaign, windows, changed))
    assert [str(e["uid"]) for e in again.walk("VEVENT")] == uids, "UIDs are stable"
    assert window_uid("blue-heart", "atomium", utc(2026, 3, 29, 19)) in uids


def test_the_calendar_keeps_only_the_campaigns_windows_and_one_citys_on_request() -> None:
    campaign = nightly()
    urgent = nightly(
        id="all-off",
        title={"en": "All off"},
        on=False,
        override=True,
        priority=900,
        reason="storm warning",
        windows=[
            {
                "targets": {"all": True},
                "dates": ["2026-03-28"],
                "start": {"at": "20:00"},
                "end": {"at": "23:30"},
            }
        ],
    )
    start, end = utc(2026, 3, 27), utc(2026, 3, 30)
    windows = campaign_windows(campaign.id, [campaign, urgent], CATALOG, start, end)
    nights = sorted({w.segment.start for w in windows})
    assert nights == [utc(2026, 3, 27, 20), utc(2026, 3, 29, 19)], "the 28th is taken over"
    ypres = campaign_windows(campaign.id, [campaign], CATALOG, start, end, city="ypres")
    assert {w.segment.site for w in ypres} == {"menin-gate"}


def test_the_feed_range_moves_once_a_day() -> None:
    assert feed_range(utc(2026, 7, 30, 0, 1)) == feed_range(utc(2026, 7, 30, 23, 59))
    assert feed_range(utc(2026, 7, 30))[0] < feed_range(utc(2026, 7, 31))[0]


# ---- Atom ---------------------------------------------------------------------------

DEVICES = {"atomium": ["atom-a", "atom-b"], "menin-gate": ["gate-1"]}
HEARD = {"atom-a": utc(2026, 7, 1), "atom-b": utc(2026, 7, 1), "gate-1": utc(2026, 7, 1)}
OPENS = utc(2026, 7, 29, 19, 30)
CLOSES = utc(2026, 7, 29, 21, 59)


def step(device: str, at: datetime, on: bool, applied: datetime, by: str = "echo") -> DeviceEvent:
    state = {"on": on, "color": BLUE if on else "#000000", "level": 80 if on else 0}
    return DeviceEvent(
        device, EventKind.STEP, applied + timedelta(seconds=1), version=3, step_at=at,
        applied_at=applied, state=state, source="ack", confirmed_by=by,
    )  # fmt: skip


def outcome(device: str, site: str, verdict: Verdict) -> WindowRecord:
    return WindowRecord(
        device, site, "blue-heart", OPENS, CLOSES, {"on": True, "color": BLUE, "level": 80},
        verdict, decided_at=CLOSES + timedelta(minutes=1),
    )  # fmt: skip


def record() -> tuple[list[DeviceEvent], list[WindowRecord]]:
    steps = [
        step("atom-a", OPENS, True, OPENS + timedelta(seconds=1)),
        step("atom-b", OPENS, True, OPENS + timedelta(seconds=2)),
        step("atom-a", CLOSES, False, CLOSES + timedelta(seconds=1)),
        step("atom-b", CLOSES, False, CLOSES),
        step("gate-1", OPENS, True, OPENS),  # and no report of the end
    ]
    outcomes = [
        outcome("atom-a", "atomium", Verdict.CONFIRMED),
        outcome("atom-b", "atomium", Verdict.CONFIRMED),
        outcome("gate-1", "menin-gate", Verdict.CONFIRMED),
    ]
    return steps, outcomes


def test_confirmed_steps_of_every_device_make_lit_and_off_entries_newest_first() -> None:
    steps, outcomes = record()
    entries = changes(steps, outcomes, DEVICES, HEARD)
    assert [(e.site, e.kind, e.at) for e in entries] == [
        ("atomium", Change.OFF, CLOSES + timedelta(seconds=1)),
        ("atomium", Change.LIT, OPENS + timedelta(seconds=2)),
        ("menin-gate", Change.LIT, OPENS),
    ]
    assert entries[1].color == BLUE


def test_a_step_one_device_did_not_report_is_no_entry_and_an_unconfirmed_window_is() -> None:
    steps, outcomes = record()
    steps = [s for s in steps if (s.device_id, s.step_at) != ("atom-b", OPENS)]
    outcomes[1] = outcome("atom-b", "atomium", Verdict.UNCONFIRMED)
    entries = changes(steps, outcomes, DEVICES, HEARD)
    kinds = {(e.site, e.kind) for e in entries}
    assert ("atomium", Change.LIT) not in kinds
    unconfirmed = [e for e in entries if e.kind is Change.UNCONFIRMED]
    assert [(e.site, e.at, e.key) for e in unconfirmed] == [("atomium", CLOSES, OPENS)]


def test_an_entry_is_as_sure_as_the_least_sure_device() -> None:
    opens = [
        step("atom-a", OPENS, True, OPENS, by="sensor"),
        step("atom-b", OPENS, True, OPENS, by="echo"),
        step("gate-1", OPENS, True, OPENS, by="sensor"),
    ]
    entries = {e.site: e for e in changes(opens, [], DEVICES, HEARD)}
    assert entries["atomium"].confirmed_by == "echo"
    assert entries["menin-gate"].confirmed_by == "sensor"
    body = render_feed(
        list(entries.values()), CATALOG.cities[1], {"menin-gate": CATALOG.sites[1]}, "/f"
    )
    assert b"as a light sensor at the monument confirmed" in body
    assert b'term="confirmed-by-sensor"' in body


def test_a_device_registered_after_the_step_is_not_asked_for_it() -> None:
    steps, _ = record()
    heard = {**HEARD, "atom-c": OPENS + timedelta(hours=1)}
    devices = {**DEVICES, "atomium": [*DEVICES["atomium"], "atom-c"]}
    assert ("atomium", Change.LIT) in {(e.site, e.kind) for e in changes(steps, [], devices, heard)}
    assert not [e for e in changes(steps, [], devices, {**heard, "atom-c": OPENS})
                if (e.site, e.kind) == ("atomium", Change.LIT)]  # fmt: skip
    unknown = {k: v for k, v in heard.items() if not k.startswith("atom-")}
    assert not [e for e in changes(steps, [], devices, unknown) if e.site == "atomium"]


def test_the_feed_is_well_formed_atom_with_stable_ids_and_no_device_ids() -> None:
    steps, outcomes = record()
    entries = changes(steps, outcomes, DEVICES, HEARD)
    sites = {s.id: s for s in CATALOG.sites}
    city = CATALOG.cities[0]
    body = render_feed(entries, city, sites, "/api/v1/public/cities/brussels/feed.atom")
    root = ET.fromstring(body)
    assert root.tag == A + "feed"
    ids = [e.findtext(A + "id") for e in root.iter(A + "entry")]
    titles = [e.findtext(A + "title") for e in root.iter(A + "entry")]
    assert titles == ["Atomium is off", f"Atomium is lit in {BLUE}", f"Menin Gate is lit in {BLUE}"]
    assert root.findtext(A + "updated") == "2026-07-29T21:59:01Z"
    assert len(set(ids)) == 3 and all(i and i.startswith("urn:uuid:") for i in ids)
    again = ET.fromstring(render_feed(changes(*record(), DEVICES, HEARD), city, sites, "/x"))
    assert [e.findtext(A + "id") for e in again.iter(A + "entry")] == ids
    for device in HEARD:
        assert device.encode() not in body
    assert (
        Entry("atomium", Change.LIT, OPENS, OPENS).id
        == Entry("atomium", Change.LIT, CLOSES, OPENS).id
    )


def test_names_with_control_characters_still_give_well_formed_xml() -> None:
    odd = SiteCatalog.model_validate(
        {
            "cities": [{"id": "liege", "name": {"en": "Liège <&>"}, "timezone": "Europe/Brussels"}],
            "sites": [{"id": "perron", "city": "liege", "name": {"en": "Perron ]]> & <b>"},
                       "lat": 50.6, "lon": 5.57}],
        }
    )  # fmt: skip
    entries = [Entry("perron", Change.LIT, OPENS, OPENS, BLUE)]
    root = ET.fromstring(render_feed(entries, odd.cities[0], {"perron": odd.sites[0]}, "/f"))
    assert root.findtext(A + "entry/" + A + "title") == f"Perron ]]> & <b> is lit in {BLUE}"


# ---- the memo ---------------------------------------------------------------------


def test_the_memo_builds_at_most_once_per_ttl_and_again_only_when_the_stamp_moved() -> None:
    now = [0.0]
    memo = Memo(ttl_s=10, monotonic=lambda: now[0])
    stamp = [1]
    made = []

    def build() -> object:
        made.append(now[0])
        return len(made)

    assert memo.get("k", build, lambda: stamp[0]) == 1
    now[0] = 9.9
    stamp[0] = 2
    assert memo.get("k", build, lambda: stamp[0]) == 1, "within the ttl: no read at all"
    now[0] = 10.0
    assert memo.get("k", build, lambda: stamp[0]) == 2, "the stamp moved"
    now[0] = 25.0
    assert memo.get("k", build, lambda: stamp[0]) == 2, "the same stamp: kept"
    assert made == [0.0, 10.0]


# ---- over HTTP ----------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return 0.0


@dataclass
class Site:
    http: httpx.Client
    stores: Stores
    history: MemoryHistory
    feeds: Feeds


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        clock = Clock(utc(2026, 7, 30, 12))
        stores.campaigns.put(nightly(), utc(2026, 7, 1, 8))
        stores.registry.add_devices(
            [NewDevice(d, s) for s, ds in DEVICES.items() for d in ds], utc(2026, 7, 1)
        )
        history = MemoryHistory()
        steps, outcomes = record()
        history.add_events(steps)
        history.put_outcomes(outcomes)
        app = build_web(
            stores,
            clock,
            Metrics(),
            public=public_view(stores, clock),
            ready=lambda: {"database": True},
            users=Users(sessions),
            history=history,
        )
        with serve(app) as http:
            yield Site(http, stores, history, app.state.feeds)


CAL = "/api/v1/public/campaigns/blue-heart.ics"
FEED = "/api/v1/public/cities/brussels/feed.atom"


def test_the_calendar_is_served_with_cache_headers_an_etag_and_304(site: Site) -> None:
    got = site.http.get(CAL)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("text/calendar")
    cache = got.headers["cache-control"]
    assert cache == CALENDAR_CACHE and "s-maxage=" in cache and "stale-while-revalidate=" in cache
    events = Calendar.from_ical(got.content).walk("VEVENT")
    assert len(events) == 2 * 68, "two monuments, a week back and two months ahead"
    etag = got.headers["etag"]
    again = site.http.get(CAL, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag and again.headers["cache-control"] == CALENDAR_CACHE
    assert site.http.get(CAL, headers={"If-None-Match": '"other"'}).status_code == 200
    ypres = site.http.get(CAL, params={"city": "ypres"})
    assert len(Calendar.from_ical(ypres.content).walk("VEVENT")) == 68
    assert ypres.headers["etag"] != etag
    for path, params in (
        ("/api/v1/public/campaigns/no-such.ics", {}),
        ("/api/v1/public/campaigns/BAD%20ID.ics", {}),
        (CAL, {"city": "atlantis"}),
    ):
        missing = site.http.get(path, params=params)
        assert missing.status_code == 404, path
        assert "s-maxage" in missing.headers["cache-control"]


def test_the_city_feed_is_served_with_cache_headers_an_etag_and_304(site: Site) -> None:
    got = site.http.get(FEED)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("application/atom+xml")
    assert got.headers["cache-control"] == FEED_CACHE
    root = ET.fromstring(got.content)
    assert [e.findtext(A + "title") for e in root.iter(A + "entry")] == [
        "Atomium is off",
        f"Atomium is lit in {BLUE}",
    ]
    etag = got.headers["etag"]
    assert site.http.get(FEED, headers={"If-None-Match": etag}).status_code == 304
    ypres = ET.fromstring(site.http.get("/api/v1/public/cities/ypres/feed.atom").content)
    assert [e.findtext(A + "title") for e in ypres.iter(A + "entry")] == [
        f"Menin Gate is lit in {BLUE}"
    ]
    assert site.http.get("/api/v1/public/cities/atlantis/feed.atom").status_code == 404


def test_the_feed_of_every_city_names_each_monuments_city(site: Site) -> None:
    got = site.http.get("/api/v1/public/feed.atom")
    assert got.status_code == 200 and got.headers["cache-control"] == FEED_CACHE
    root = ET.fromstring(got.content)
    assert root.findtext(A + "title") == "Illuminate: every city"
    assert [e.findtext(A + "title") for e in root.iter(A + "entry")] == [
        "Atomium, Brussels is off",
        f"Atomium, Brussels is lit in {BLUE}",
        f"Menin Gate, Ypres is lit in {BLUE}",
    ]
    etag = got.headers["etag"]
    assert (
        site.http.get("/api/v1/public/feed.atom", headers={"If-None-Match": etag}).status_code
        == 304
    )


def test_the_calendar_in_each_language_is_expanded_once_and_kept_for_the_ttl(site: Site) -> None:
    english = site.http.get(CAL)
    french = site.http.get(CAL, params={"lang": "fr"})
    summaries = {str(e["summary"]) for e in Calendar.from_ical(french.content).walk("VEVENT")}
    assert summaries == {"Coeur bleu: Atomium", "Coeur bleu: Menin Gate"}
    assert english.headers["etag"] != french.headers["etag"]
    assert site.feeds.expansions.builds == 1, "one expansion serves every language"
    for _ in range(5):
        assert site.http.get(CAL).headers["etag"] == english.headers["etag"]
    assert site.feeds.documents.builds == 2, "within the ttl: no build again"


def test_the_memo_serves_what_it_has_when_building_again_fails() -> None:
    now = [0.0]
    memo = Memo(ttl_s=10, monotonic=lambda: now[0])
    failing = [False]

    def build() -> object:
        if failing[0]:
            raise OSError("the database is away")
        return "built"

    assert memo.get("k", build, None) == "built"
    failing[0] = True
    now[0] = 11.0
    assert memo.get("k", build, None) == "built", "the last one, while it cannot build"
    with pytest.raises(OSError):
        memo.get("other", build, None)


def test_a_feed_that_cannot_be_built_is_a_503(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    def away(*_args: object, **_kwargs: object) -> list[DeviceEvent]:
        raise OSError("the database is away")

    monkeypatch.setattr(site.history, "step_events", away)
    got = site.http.get("/api/v1/public/feed.atom")
    assert got.status_code == 503
    assert got.headers["retry-after"] and got.headers["cache-control"] == "no-store"
    assert "device" not in got.text and "database" not in got.text


def test_a_window_across_the_edge_of_the_range_is_whole() -> None:
    late = nightly(windows=[{"targets": {"all": True}, "rrule": "FREQ=DAILY",
                             "start": {"at": "23:30"}, "end": {"at": "03:00"}}])  # fmt: skip
    start, end = utc(2026, 7, 30), utc(2026, 7, 31)  # nightly 21:30Z to 01:00Z (CEST)
    windows = campaign_windows(late.id, [late], CATALOG, start, end, city="ypres")
    assert [(w.segment.start, w.segment.end) for w in windows] == [
        (utc(2026, 7, 29, 21, 30), utc(2026, 7, 30, 1)),
        (utc(2026, 7, 30, 21, 30), utc(2026, 7, 31, 1)),
    ]
