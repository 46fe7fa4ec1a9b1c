"""`GET /api/v1/public/events` over real HTTP: uvicorn on a free port, as `illuminate
serve` runs it (`controller.serve.Server`), a real SQLite database, and the public view
rebuilt by the test when it changes something.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from controller.metrics import Metrics
from controller.public_view import PublicView
from controller.serve import Server
from controller.store.base import Stores
from controller.store.sql import database
from controller.store.users import Users
from controller.web.app import build_web
from controller.web.events_route import EVENTS_PATH, PublicEvents, close_streams, status_change
from schedules.model import Campaign
from tests.controller.test_staff_api import CATALOG, FakeClock, campaign_body, free_port
from tests.integration.conftest import wait_until as settled

DEADLINE_S = 10.0


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
    return settled(predicate, timeout, step=0.01)


@dataclass
class Served:
    base: str
    stores: Stores
    public: PublicView
    hub: PublicEvents
    server: Server
    thread: threading.Thread


@contextmanager
def running(app: object) -> Iterator[tuple[str, Server, threading.Thread]]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")  # type: ignore[arg-type]
    server = Server(config, on_exit=lambda: close_streams(app))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started), "uvicorn did not start"
        yield f"http://127.0.0.1:{port}", server, thread
    finally:
        server.handle_exit(signal.SIGTERM, None)
        thread.join(timeout=DEADLINE_S)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with database(f"sqlite:///{tmp_path / 'illuminate.sqlite'}") as (_, sessions, stores):
        stores.registry.import_catalog(CATALOG)
        clock = FakeClock()
        public = PublicView(
            stores.snapshot, clock, grace=timedelta(seconds=30), upcoming=timedelta(hours=24)
        )
        public.rebuild()
        app = build_web(stores, clock, Metrics(), public=public, ready=dict, users=Users(sessions))
        hub = app.state.public_events
        hub.keepalive_s = 0.1
        with running(app) as (base, server, thread):
            yield Served(base, stores, public, hub, server, thread)


def events(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The stream's events and comments, as fields (a comment as `comment`)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            fields[name] = fields[name] + "\n" + value if name in fields else value


def next_status(stream: Iterator[dict[str, str]]) -> dict[str, str]:
    """The next `status` or `change` event."""
    for event in stream:
        if event.get("event") in ("status", "change"):
            return event
    raise AssertionError("the stream ended")


BRUSSELS_ONLY = {
    "targets": {"cities": ["brussels"]},
    "dates": ["2026-07-30"],
    "start": {"at": "21:30"},
    "end": {"at": "23:59"},
}


def change(served: Served, **campaign: object) -> str:
    """Put a campaign (the Atomium becomes scheduled), rebuild: the new ETag."""
    body = campaign_body(windows=[BRUSSELS_ONLY], **campaign)
    served.stores.campaigns.put(Campaign.model_validate(body), FakeClock()())
    before = served.public.get()
    assert served.public.rebuild()
    after = served.public.get()
    assert after is not None and before is not None and after.etag != before.etag
    return after.etag


def client(served: Served) -> httpx.Client:
    return httpx.Client(base_url=served.base, timeout=DEADLINE_S)


def test_the_stream_sends_the_status_at_once_then_each_change(served: Served) -> None:
    with client(served) as http, http.stream("GET", EVENTS_PATH) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        stream = events(response)
        assert next(stream) == {"retry": str(served.hub.retry_ms)}
        first = next_status(stream)
        current = served.public.get()
        assert current is not None and first["id"] == current.etag
        assert json.loads(first["data"])["summary"]["scheduled"] == 0
        assert first["event"] == "status", "the whole document first"
        etag = change(served)
        second = next_status(stream)
        assert (second["event"], second["id"]) == ("change", etag), "then what changed"
        changed = json.loads(second["data"])
        assert changed["summary"]["scheduled"] == 1
        assert [site["id"] for site in changed["sites"]] == ["atomium"], "only the Atomium"
        assert changed["sites"][0]["state"] == "scheduled"
        assert changed["removed"] == []
    assert wait_until(lambda: served.hub.open == 0), "a client that left is forgotten"


def test_a_client_back_from_a_known_status_gets_the_change_an_unknown_one_all(
    served: Served,
) -> None:
    with client(served) as http, http.stream("GET", EVENTS_PATH) as response:
        before = next_status(events(response))["id"]
    etag = change(served)
    for last, kind in ((before, "change"), ('"never-sent"', "status")):
        headers = {"Last-Event-ID": last}
        with client(served) as http, http.stream("GET", EVENTS_PATH, headers=headers) as response:
            event = next_status(events(response))
            assert (event["event"], event["id"]) == (kind, etag), last


def test_a_client_that_has_the_current_status_gets_keep_alives_until_it_changes(
    served: Served,
) -> None:
    current = served.public.get()
    assert current is not None
    headers = {"Last-Event-ID": current.etag}
    with client(served) as http, http.stream("GET", EVENTS_PATH, headers=headers) as response:
        stream = events(response)
        assert "retry" in next(stream)
        assert next(stream) == {"comment": "keep-alive"}, "nothing new: no status sent"
        etag = change(served)
        assert next_status(stream)["id"] == etag


def test_a_change_is_the_sites_changed_added_and_removed_or_none_when_not_smaller() -> None:
    def doc(*sites: tuple[str, str]) -> bytes:
        return json.dumps(
            {
                "generated_at": "2026-07-30T12:00:00Z",
                "summary": {"total": len(sites)},
                "sites": [{"id": i, "state": state, "name": "x" * 200} for i, state in sites],
            },
            separators=(",", ":"),  # compact, as the public view's documents
        ).encode()

    before = doc(("a", "off"), ("b", "off"), ("c", "off"), ("d", "off"))
    after = doc(("a", "off"), ("b", "lit"), ("d", "off"), ("e", "off"))
    found = status_change(before, after)
    assert found is not None
    change_doc = json.loads(found)
    assert [(s["id"], s["state"]) for s in change_doc["sites"]] == [("b", "lit"), ("e", "off")]
    assert change_doc["removed"] == ["c"]
    assert change_doc["summary"] == {"total": 4}
    # applied as docs/public-feeds.md says, it gives the new document
    sites = {site["id"]: site for site in json.loads(before)["sites"]}
    sites.update((site["id"], site) for site in change_doc["sites"])
    for gone in change_doc["removed"]:
        del sites[gone]
    new = json.loads(after)
    assert sorted(sites.values(), key=lambda site: site["id"]) == new["sites"]
    everything = doc(*((i, "lit") for i in "abcd"))
    assert status_change(before, everything) is None, "all changed: send the document"


def test_a_rebuild_that_changes_nothing_public_sends_nothing(served: Served) -> None:
    with client(served) as http, http.stream("GET", EVENTS_PATH) as response:
        stream = events(response)
        next_status(stream)
        sent = served.hub.sent
        served.public.rebuild()
        assert next(stream) == {"comment": "keep-alive"}
        assert next(stream) == {"comment": "keep-alive"}
        assert served.hub.sent == sent


def test_past_the_cap_a_client_gets_a_503(served: Served) -> None:
    served.hub.max_clients = 1
    with client(served) as http, http.stream("GET", EVENTS_PATH) as response:
        stream = events(response)  # kept: a dropped iterator closes the response
        next_status(stream)
        assert served.hub.open == 1
        refused = http.get(EVENTS_PATH)
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        assert "too many" in refused.json()["detail"]
        metrics = http.get("/metrics").text
        assert "illuminate_public_streams 1.0" in metrics
        assert "illuminate_public_streams_refused 1.0" in metrics
    assert wait_until(lambda: served.hub.open == 0)
    with client(served) as http, http.stream("GET", EVENTS_PATH) as response:
        assert response.status_code == 200, "a place is free again"


def test_sigterm_ends_open_streams_and_stops_the_server_promptly(served: Served) -> None:
    with client(served) as http, http.stream("GET", EVENTS_PATH) as response:
        stream = events(response)
        next_status(stream)
        started = time.monotonic()
        served.server.handle_exit(signal.SIGTERM, None)  # what the signal handler calls
        for event in stream:  # until the stream ends (whole: a cut one would raise)
            assert "comment" in event, event
            assert time.monotonic() - started < DEADLINE_S, "the stream did not end"
        served.thread.join(timeout=DEADLINE_S)
        assert not served.thread.is_alive(), "the server stopped"
