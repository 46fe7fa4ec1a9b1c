"""The public status across a restart (controller/last_known.py, PublicView): saved on
every change and at stop, served at the next start as the last-known copy with its
as-of time and an ETag of its own, until the first build, which waits (bounded) for
the controller to hear from the devices. On a FakeClock, with hand-made snapshots."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.last_known import FileLastKnown, LastKnown, MemoryLastKnown, Saved, Stored
from controller.metrics import Metrics
from controller.public_view import HOLD_POLL_S, PublicView, last_known_etag
from controller.store.sql import database
from controller.store.users import Users
from controller.web.app import build_web
from controller.web.status_route import AS_OF_HEADER, LAST_KNOWN_CACHE, PUBLIC_CACHE
from devices.clock import FakeClock
from tests.controller.test_public import CATALOG, GRACE, UPCOMING, lit_device, mixed, snap
from tests.controller.test_public_view import INTERVAL, NOW, STATUS, Loader, serve

AS_OF = datetime(2025, 6, 10, 19, 20, 0, tzinfo=UTC)


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LastKnown:
    if request.param == "file":
        return FileLastKnown(tmp_path / "data" / "public-status.json")
    return MemoryLastKnown()


def _saved(as_of: datetime = AS_OF, text: str = "x") -> Saved:
    body = json.dumps({"generated_at": "2025-06-10T19:10:00Z", "t": text}).encode()
    stored = Stored(body, '"abc"', datetime(2025, 6, 10, 19, 10, tzinfo=UTC))
    return Saved(as_of, {"en": stored, "fr": Stored(body + b" ", '"def"', stored.generated_at)})


# ---- the store contract (file and memory) -------------------------------------------------


def test_nothing_saved_loads_as_none(store: LastKnown) -> None:
    assert store.load() is None


def test_what_is_saved_loads_back_exactly_and_a_save_replaces_it(store: LastKnown) -> None:
    first = _saved()
    store.save(first)
    assert store.load() == first
    second = _saved(AS_OF + timedelta(minutes=1), text="y")
    store.save(second)
    assert store.load() == second


def test_the_file_is_replaced_whole_and_a_bad_one_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "public-status.json"
    store = FileLastKnown(path)
    store.save(_saved())
    store.save(_saved(text="y"))
    assert os.listdir(tmp_path) == ["public-status.json"]  # no temporary file left
    for bad in (
        b"",
        b"{not json",
        b'{"v":1}',
        b'{"v":2,"as_of":"2025-06-10T19:20:00Z","documents":{}}',
    ):
        path.write_bytes(bad)
        assert store.load() is None


# ---- the view -----------------------------------------------------------------------------


class Hold:
    def __init__(self) -> None:
        self.holding = True
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.holding


def make(
    last_known: LastKnown, now: datetime = NOW, **options: Any
) -> tuple[PublicView, Loader, FakeClock]:
    loader = Loader(mixed())
    clock = FakeClock(now)
    view = PublicView(
        loader,
        clock,
        grace=GRACE,
        upcoming=UPCOMING,
        min_interval_s=INTERVAL,
        last_known=last_known,
        **options,
    )
    return view, loader, clock


def test_every_change_is_saved_and_stop_saves_it_as_current_until_then() -> None:
    saved = MemoryLastKnown()
    view, loader, clock = make(saved)
    assert saved.saves == 0
    assert view.refresh()
    live = view.get()
    assert live is not None and live.as_of is None
    assert saved.saved is not None
    assert saved.saved.as_of == NOW
    assert saved.saved.documents["en"] == Stored(live.body, live.etag, live.generated_at)
    assert set(saved.saved.documents) == {"en", "fr", "nl", "de"}

    clock.advance(2)
    view.invalidate()
    assert view.refresh()  # the same document a moment later: kept, not saved again
    assert saved.saves == 1
    loader.snapshot = snap(lit_device())  # a change: saved
    clock.advance(2)
    view.invalidate()
    assert view.refresh()
    assert saved.saves == 2
    assert saved.saved.documents["en"].etag == view.get().etag  # type: ignore[union-attr]

    clock.advance(300)
    view.stop()
    assert saved.saves == 3
    assert saved.saved.as_of == NOW + timedelta(seconds=304)


def test_the_saved_copy_is_served_at_start_marked_until_the_first_build() -> None:
    saved = MemoryLastKnown()
    before, _, _ = make(saved)
    before.refresh()
    before.stop()
    old = before.get()
    assert old is not None and saved.saved is not None
    as_of = saved.saved.as_of

    view, loader, _ = make(saved, NOW + timedelta(seconds=15))  # no state changed since
    copy = view.get()
    assert copy is not None and view.ready and not view.live
    assert loader.calls == 0  # served at once: nothing built
    assert copy.body == old.body  # the same bytes, with their generated_at
    assert copy.etag == last_known_etag(old.etag) != old.etag
    assert copy.as_of == as_of
    assert view.get("fr") is not None and view.get("fr").body == before.get("fr").body  # type: ignore[union-attr]

    assert view.refresh()  # no hold: the first build comes at once
    live = view.get()
    assert live is not None and live.as_of is None and view.live
    assert live.etag == old.etag  # the same state: the live ETag again
    assert live.generated_at == NOW + timedelta(seconds=15)


def test_a_restored_copy_keeps_its_as_of_when_stopped_before_any_build() -> None:
    saved = MemoryLastKnown()
    saved.save(_saved())
    view, _, clock = make(saved)
    clock.advance(60)
    view.stop()
    assert saved.saves == 1 and saved.saved is not None
    assert saved.saved.as_of == AS_OF


def test_the_first_build_waits_while_held_and_no_longer_than_the_hold() -> None:
    saved = MemoryLastKnown()
    saved.save(_saved())
    hold = Hold()
    view, loader, clock = make(saved, hold=hold, hold_s=30)
    assert not view.due() and not view.refresh()
    assert view._wait_s() == HOLD_POLL_S  # asks again soon
    assert loader.calls == 0 and view.get() is not None and not view.live
    clock.advance(10)
    assert not view.refresh()
    hold.holding = False  # the controller has heard from the devices
    assert view.refresh() and view.live

    saved.save(_saved())
    hold = Hold()
    view, loader, clock = make(saved, hold=hold, hold_s=30)
    clock.advance(29.9)
    assert not view.refresh()
    clock.advance(0.1)  # the hold ran out: build anyway
    assert view.refresh() and view.live
    asked = hold.asked
    view.invalidate()
    clock.advance(INTERVAL)
    assert view.refresh()
    assert hold.asked == asked  # only the first build is held


def test_with_nothing_saved_the_hold_does_not_apply() -> None:
    hold = Hold()
    view, _, _ = make(MemoryLastKnown(), hold=hold, hold_s=30)
    assert view.get() is None
    assert view.refresh()
    assert hold.asked == 0


def test_a_failing_save_is_counted_and_serving_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    view, _, _ = make(FileLastKnown(blocker / "public-status.json"))
    assert view.refresh()
    assert view.saves_failed == 1 and view.get() is not None


# ---- over HTTP ----------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["lookup", "route"])
def served_copy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    saved = MemoryLastKnown()
    before, _, _ = make(saved)
    before.refresh()
    before.stop()
    hold = Hold()
    view, _, _ = make(saved, hold=hold, hold_s=30)
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        app = build_web(
            stores,
            view.clock,
            Metrics(),
            public=view,
            ready=dict,
            users=Users(sessions),
            status_lookup=request.param,
        )
        with serve(app) as client:
            yield client, view, before, hold, saved


def test_http_serves_the_last_known_copy_with_its_as_of_then_the_live_one(served_copy) -> None:
    client, view, before, hold, _ = served_copy
    old = before.get()
    response = client.get(STATUS, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.content == old.body
    assert response.headers[AS_OF_HEADER] == "2025-06-10T19:30:10Z"
    assert response.headers["cache-control"] == LAST_KNOWN_CACHE
    assert response.headers["etag"] == last_known_etag(old.etag)
    # a client holding the live document learns that this is a copy: no 304
    assert client.get(STATUS, headers={"If-None-Match": old.etag}).status_code == 200
    again = client.get(STATUS, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert again.headers[AS_OF_HEADER] == "2025-06-10T19:30:10Z"

    hold.holding = False
    assert view.refresh()
    live = client.get(STATUS, headers={"If-None-Match": response.headers["etag"]})
    assert live.status_code == 200
    assert AS_OF_HEADER.lower() not in live.headers
    assert live.headers["cache-control"] == PUBLIC_CACHE
    assert live.headers["etag"] == old.etag
