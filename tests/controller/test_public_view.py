"""PublicView on a FakeClock with hand-made snapshots: rendered once per change, rebuilt
when time alone changes a state, served as bytes (plain and gzip) with a stable ETag.

The window is 21:00-23:00 in Brussels on 10 June 2025 (19:00Z-21:00Z), as in
test_public.py, whose helpers build the snapshots.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from controller.metrics import Metrics
from controller.public import public_status
from controller.public_view import KEEP_SAME, RANGE_STEP, PublicView
from controller.store.base import Snapshot
from controller.store.sql import database
from controller.store.users import Users
from controller.web.app import accepts_gzip, build_web, etag_matches
from devices.clock import FakeClock
from tests.controller.test_public import (
    CATALOG,
    GRACE,
    SITE_IDS,
    UPCOMING,
    E,
    S,
    campaign,
    device,
    lit_device,
    mixed,
    snap,
)
from tests.support.mosquitto import free_port

INTERVAL = 1.0
NOW = datetime(2025, 6, 10, 19, 30, 10, tzinfo=UTC)
STATUS = "/api/v1/public/status"


class Loader:
    """Returns `snapshot`, counting calls; `fail` makes it raise, `gate` makes it wait."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.calls = 0
        self.fail = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self) -> Snapshot:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(60)
        if self.fail:
            raise RuntimeError("database down")
        return self.snapshot


def make(
    snapshot: Snapshot, now: datetime = NOW, **options: Any
) -> tuple[PublicView, Loader, FakeClock]:
    loader = Loader(snapshot)
    clock = FakeClock(now)
    view = PublicView(
        loader, clock, grace=GRACE, upcoming=UPCOMING, min_interval_s=INTERVAL, **options
    )
    return view, loader, clock


def doc(view: PublicView, lang: str = "en") -> dict[str, Any]:
    rendering = view.get(lang)
    assert rendering is not None
    body: dict[str, Any] = json.loads(rendering.body)
    return body


def state(view: PublicView, site: str = "atomium") -> str:
    return next(s["state"] for s in doc(view)["sites"] if s["id"] == site)


def etag(view: PublicView, lang: str = "en") -> str:
    rendering = view.get(lang)
    assert rendering is not None
    return rendering.etag


# ---- one rendering per change ---------------------------------------------------------


def test_nothing_is_served_before_the_first_build() -> None:
    view, loader, _ = make(mixed())
    assert view.get() is None and not view.ready
    assert loader.calls == 0  # asking for it computes nothing
    assert view.due()
    assert view.refresh()
    assert view.ready and view.builds == 1


def test_rendered_once_per_change_however_often_it_is_read() -> None:
    view, loader, clock = make(mixed())
    view.refresh()
    first = view.get()
    for _ in range(100):
        assert view.get() is first
        assert view.get("fr") is view.get("fr")
    # cathedral's window opened at 19:30:00Z: its grace runs out at 19:30:30Z
    assert view.next_change == datetime(2025, 6, 10, 19, 30, 30, tzinfo=UTC)
    clock.advance(19.9)
    assert not view.refresh()  # nothing changed: no rebuild
    assert (view.builds, loader.calls) == (1, 1)

    view.invalidate()
    assert view.refresh()
    assert (view.builds, loader.calls) == (2, 2)


def test_a_stale_view_is_rebuilt_at_most_once_per_interval() -> None:
    view, loader, clock = make(mixed())
    view.refresh()
    for _ in range(8):  # a burst of intake batches over half an interval
        view.invalidate()
        view.invalidate()
        assert not view.refresh()
        clock.advance(INTERVAL / 16)
    clock.advance(INTERVAL / 2)
    assert view.refresh()
    assert view.builds == 2
    view.invalidate()
    assert not view.refresh()  # the interval runs from the last build
    clock.advance(INTERVAL)
    assert view.refresh()
    assert not view.refresh()
    assert (view.builds, loader.calls) == (3, 3)


def test_a_costly_build_is_followed_by_a_pause_of_twice_its_cost() -> None:
    view, loader, clock = make(mixed())
    slow = loader.snapshot

    def costly() -> Snapshot:
        clock.advance(INTERVAL * 3)  # this build takes three intervals
        return slow

    view.load = costly
    assert view.refresh()
    view.invalidate()
    clock.advance(INTERVAL * 5)
    assert not view.refresh()  # the interval has passed, twice the cost has not
    clock.advance(INTERVAL)
    assert view.refresh()


def test_max_age_rebuilds_without_invalidate() -> None:
    view, _, clock = make(mixed(), max_age_s=5.0)
    view.refresh()
    clock.advance(4.9)
    assert not view.refresh()
    clock.advance(0.1)
    assert view.refresh()


def test_every_language_is_rendered_by_one_build() -> None:
    view, loader, _ = make(mixed())
    view.refresh()
    assert doc(view, "fr")["sites"][0]["name"] == "atomium (fr)"
    assert doc(view, "fr")["sites"][0]["city"] == "Bruxelles"
    assert doc(view, "nl")["sites"][0]["name"] == "Atomium"
    assert view.get("xx") is view.get("en")  # unknown languages get English
    assert etag(view, "fr") != etag(view, "en")
    assert loader.calls == 1


# ---- time alone --------------------------------------------------------------------------


def test_rebuilt_when_time_alone_changes_a_state() -> None:
    view, loader, clock = make(snap(device()), now=S - timedelta(hours=1))
    view.refresh()
    assert state(view) == "scheduled"
    assert view.next_change == S
    clock.set(S - timedelta(seconds=1))
    assert not view.refresh()

    clock.set(S)  # the window opens
    assert view.refresh()
    assert state(view) == "pending"
    assert view.next_change == S + GRACE

    clock.set(S + GRACE)  # the grace period runs out
    assert view.refresh()
    assert state(view) == "unconfirmed"
    assert view.next_change == E

    clock.set(E)  # the window ends
    assert view.refresh()
    assert state(view) == "off"
    assert loader.calls == 4


def test_rebuilt_when_an_upcoming_window_enters_the_horizon() -> None:
    enters = S - UPCOMING
    view, _, clock = make(snap(device()), now=enters - timedelta(minutes=30))
    view.refresh()
    assert state(view) == "off"
    assert view.next_change == enters
    clock.set(enters)
    assert view.refresh()
    assert state(view) == "scheduled"


def test_time_driven_rebuilds_also_keep_the_interval() -> None:
    view, _, clock = make(snap(device()), now=S - timedelta(seconds=0.5))
    view.refresh()
    clock.advance(0.5)  # the window opens, but the last build was half an interval ago
    assert not view.refresh()
    clock.advance(0.5)
    assert view.refresh()
    assert state(view) == "pending"


def test_a_view_with_no_window_in_sight_still_looks_when_the_range_moves() -> None:
    view, _, _ = make(snap(device(), campaigns=()))
    view.refresh()
    assert state(view) == "off"
    assert view.next_change is not None
    assert NOW < view.next_change <= NOW + RANGE_STEP


# ---- ETag -------------------------------------------------------------------------------


def test_etag_is_stable_when_nothing_changed() -> None:
    view, _, clock = make(mixed())
    view.refresh()
    before = view.get()
    clock.advance(KEEP_SAME.total_seconds())
    view.invalidate()
    assert view.refresh()
    after = view.get()
    assert before is not None and after is not None and before is not after
    assert before.etag == after.etag
    assert json.loads(before.body)["generated_at"] != json.loads(after.body)["generated_at"]


def test_the_same_document_made_a_moment_ago_is_kept_as_it_is() -> None:
    view, _, clock = make(mixed())
    view.refresh()
    before = view.get()
    clock.advance(KEEP_SAME.total_seconds() - 1)
    view.invalidate()
    assert view.refresh()
    assert view.get() is before  # no new bytes, no compression
    assert view.builds == 2


def test_etag_changes_when_a_state_changes() -> None:
    view, loader, clock = make(snap(device()), now=S + timedelta(seconds=10))
    view.refresh()
    pending = etag(view)
    assert state(view) == "pending"
    loader.snapshot = snap(lit_device())  # the device confirmed the step
    view.invalidate()
    clock.advance(INTERVAL)
    view.refresh()
    assert state(view) == "lit"
    assert etag(view) != pending


def test_the_view_renders_what_public_status_computes() -> None:
    view, _, _ = make(mixed())
    view.refresh()
    for lang in ("en", "fr"):
        expected = public_status(mixed(), NOW, GRACE, UPCOMING, lang)
        assert doc(view, lang) == expected.model_dump(mode="json", exclude_none=True)
        assert etag(view, lang) == expected.etag()
    assert [s["state"] for s in doc(view)["sites"]] == [
        "lit",
        "unconfirmed",
        "offline",
        "pending",
        "scheduled",
        "off",
    ]


def test_gzip_round_trip() -> None:
    view, _, _ = make(mixed())
    view.refresh()
    for lang in sorted(view.languages):
        rendering = view.get(lang)
        assert rendering is not None
        assert gzip.decompress(rendering.gzip) == rendering.body
        assert rendering.gzip[:2] == b"\x1f\x8b"


# ---- the builder ------------------------------------------------------------------------


def test_a_failed_build_keeps_the_previous_rendering_and_retries() -> None:
    view, loader, clock = make(mixed())
    view.refresh()
    served = view.get()
    loader.fail = True
    view.invalidate()
    clock.advance(INTERVAL)
    assert not view.refresh()
    assert view.get() is served and view.failures == 1
    assert not view.refresh()  # not again at once
    loader.fail = False
    clock.advance(KEEP_SAME.total_seconds())
    assert view.refresh()
    assert view.get() is not served


def test_a_failed_first_build_serves_nothing_and_retries() -> None:
    view, loader, clock = make(mixed())
    loader.fail = True
    assert not view.refresh()
    assert view.get() is None
    loader.fail = False
    assert not view.refresh()
    clock.advance(INTERVAL)
    assert view.refresh() and view.ready


def test_one_builder_at_a_time_and_requests_get_the_previous_rendering() -> None:
    view, loader, clock = make(snap(device()), now=S + timedelta(seconds=10))
    view.refresh()
    previous = view.get()
    loader.snapshot = snap(lit_device())
    loader.gate = threading.Event()
    loader.entered.clear()
    view.invalidate()
    clock.advance(INTERVAL)
    builder = threading.Thread(target=view.refresh)
    builder.start()
    assert loader.entered.wait(60)
    assert not view.refresh()  # another build is running: this caller does not wait
    assert view.get() is previous
    loader.gate.set()
    builder.join(60)
    assert state(view) == "lit"
    assert view.builds == 2


def test_timelines_are_expanded_once_per_site_until_campaigns_or_range_change() -> None:
    view, loader, clock = make(mixed())
    view.refresh()
    sites = len(SITE_IDS)
    assert view.timelines.expansions == sites
    for _ in range(3):  # acks come in: no timeline is expanded again
        loader.snapshot = replace(loader.snapshot, devices=(*loader.snapshot.devices,))
        view.invalidate()
        clock.advance(INTERVAL)
        assert view.refresh()
    assert view.timelines.expansions == sites
    assert len(view.timelines) == sites

    loader.snapshot = replace(loader.snapshot, campaigns=(campaign(),))
    view.invalidate()
    clock.advance(INTERVAL)
    view.refresh()
    assert view.timelines.expansions == 2 * sites
    assert len(view.timelines) == sites  # the old entries are gone

    clock.advance(RANGE_STEP)
    view.refresh()
    assert view.timelines.expansions == 3 * sites
    assert len(view.timelines) == sites


def test_the_refresher_thread_builds_and_rebuilds_on_invalidate() -> None:
    view, loader, clock = make(snap(device()), now=S + timedelta(seconds=10))
    view.start()
    try:
        assert wait_for(lambda: view.ready)
        assert state(view) == "pending"
        loader.snapshot = snap(lit_device())
        clock.advance(INTERVAL)
        view.invalidate()
        assert wait_for(lambda: state(view) == "lit")
    finally:
        view.stop()
    assert view.builds == 2


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="max_age_s"):
        make(mixed(), max_age_s=0.5)
    with pytest.raises(ValueError, match="default language"):
        make(mixed(), default_language="xx")


# ---- HTTP --------------------------------------------------------------------------------


@contextmanager
def serve(app: Any) -> Iterator[httpx.Client]:
    """Serve an app with uvicorn on a free port, for the duration of a `with` block."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.started or not thread.is_alive())
        assert server.started, "uvicorn did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def served(tmp_path: Path):
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        view, loader, clock = make(mixed())
        app = build_web(stores, clock, Metrics(), public=view, ready=dict, users=Users(sessions))
        with serve(app) as client:
            yield client, view, loader


def test_http_503_with_retry_after_before_the_first_build(served) -> None:
    client, view, _ = served
    response = client.get(STATUS)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["cache-control"] == "no-store"
    assert "starting" in response.json()["detail"]
    assert view.builds == 0  # the request did not build


def test_http_serves_the_rendered_bytes_with_their_headers(served) -> None:
    client, view, loader = served
    view.refresh()
    rendering = view.get()
    assert rendering is not None
    response = client.get(STATUS, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.content == rendering.body
    assert response.headers["etag"] == rendering.etag
    assert response.headers["content-type"] == "application/json"
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["cache-control"] == (
        "public, max-age=5, s-maxage=10, stale-while-revalidate=30, stale-if-error=600"
    )
    assert "content-encoding" not in response.headers

    fr = client.get(STATUS, params={"lang": "fr"}, headers={"Accept-Encoding": "identity"})
    assert fr.content == view.get("fr").body  # type: ignore[union-attr]
    unknown = client.get(STATUS, params={"lang": "xx"}, headers={"Accept-Encoding": "identity"})
    assert unknown.content == rendering.body
    assert (view.builds, loader.calls) == (1, 1)


def test_http_gzip_when_the_client_takes_it(served) -> None:
    client, view, _ = served
    view.refresh()
    rendering = view.get()
    assert rendering is not None
    with client.stream("GET", STATUS, headers={"Accept-Encoding": "gzip, br"}) as response:
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["vary"] == "Accept-Encoding"
        raw = b"".join(response.iter_raw())
    assert raw == rendering.gzip
    assert gzip.decompress(raw) == rendering.body


def test_http_304_on_if_none_match_costs_no_build(served) -> None:
    client, view, loader = served
    view.refresh()
    rendering = view.get()
    assert rendering is not None
    for _ in range(20):
        response = client.get(STATUS, headers={"If-None-Match": rendering.etag})
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["etag"] == rendering.etag
        assert response.headers["vary"] == "Accept-Encoding"
    listed = client.get(STATUS, headers={"If-None-Match": f'"other", {rendering.etag}'})
    assert listed.status_code == 304
    other = client.get(STATUS, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200
    assert (view.builds, loader.calls) == (1, 1)


def test_http_a_new_state_is_served_after_the_rebuild(served) -> None:
    client, view, loader = served
    view.refresh()
    first = client.get(STATUS)
    loader.snapshot = snap(lit_device(), campaigns=(campaign(),))
    view.rebuild()
    second = client.get(STATUS, headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200
    assert second.headers["etag"] != first.headers["etag"]
    assert second.json()["summary"]["lit"] == 1


@pytest.mark.parametrize(
    ("header", "gzipped"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, GZIP;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, identity", False),
        ("identity", False),
        ("", False),
        ("deflate", False),
    ],
)
def test_accepts_gzip(header: str, gzipped: bool) -> None:
    assert accepts_gzip(header) is gzipped


def test_etag_matches() -> None:
    tag = '"abc"'
    assert etag_matches('"abc"', tag)
    assert etag_matches('"x", "abc"', tag)
    assert etag_matches("*", tag)
    assert etag_matches('W/"abc"', tag)
    assert not etag_matches('"abcd"', tag)
    assert not etag_matches("", tag)


def test_http_the_lookup_and_the_documented_route_answer_alike(tmp_path: Path) -> None:
    """The public status is answered before the framework (PublicStatusRoute); the
    documented route behind it must give the same answer, header for header."""
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        view, _loader, clock = make(mixed())
        view.refresh()
        rendering = view.get()
        assert rendering is not None
        apps = [
            build_web(
                stores,
                clock,
                Metrics(),
                public=view,
                ready=dict,
                users=Users(sessions),
                status_lookup=lookup,
            )
            for lookup in (True, False)
        ]
        asks = [
            {"Accept-Encoding": "identity"},
            {"Accept-Encoding": "gzip"},
            {"If-None-Match": rendering.etag},
            {"If-None-Match": '"other"', "Accept-Encoding": "gzip;q=0"},
        ]
        kept = ("etag", "cache-control", "vary", "content-encoding", "content-type")
        answers = []
        for target in apps:
            with serve(target) as client:
                got = []
                for headers in asks:
                    for params in ({}, {"lang": "fr"}):
                        with client.stream("GET", STATUS, headers=headers, params=params) as r:
                            raw = b"".join(r.iter_raw())
                            got.append((r.status_code, raw, {k: r.headers.get(k) for k in kept}))
                            assert r.headers["x-content-type-options"] == "nosniff"
                            policy = r.headers["content-security-policy"]
                            assert "frame-ancestors 'none'" in policy
                answers.append(got)
        assert answers[0] == answers[1]
        assert {status for status, _, _ in answers[0]} == {200, 304}


def test_listeners_hear_of_each_build_that_gave_a_new_rendering_only() -> None:
    view, _, clock = make(mixed())
    heard: list[str] = []

    def broken() -> None:
        raise RuntimeError("a listener's bug")

    view.subscribe(broken)  # logged; the build and the other listeners go on
    view.subscribe(lambda: heard.append(view.get().etag))  # type: ignore[union-attr]
    assert view.refresh()
    assert len(heard) == 1
    clock.advance(KEEP_SAME.total_seconds() - 1)
    view.invalidate()
    assert view.refresh()
    assert len(heard) == 1, "the same document kept: nothing to tell"
