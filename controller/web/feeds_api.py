"""The public feeds (docs/public-feeds.md), for the press and the cities' websites:

- `GET /api/v1/public/campaigns/{campaign_id}.ics`: the campaign's recent and coming
  windows at every monument (`?city=` for one city's), as iCalendar
  (`controller/calendar_feed.py`);
- `GET /api/v1/public/cities/{city_id}/feed.atom`: the city's confirmed state changes
  (lit, off, unconfirmed) from the record, as Atom (`controller/atom_feed.py`);
  `GET /api/v1/public/feed.atom` the same for every city, over a shorter span.

All are public: no token, only allow-listed fields. They are made for shared caches:
the stores are read for a feed at most once per `ttl_s` (one read or expansion serves
every language), whatever the number of requests, and a document is sent with an ETag
(a 304 for If-None-Match), a `Cache-Control` with `s-maxage` and
`stale-while-revalidate`, and links that name no host, so one cached copy serves every
client. The event stream is in `controller/web/events_route.py`; `install_public_feeds`
puts both on the app.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, FastAPI, HTTPException, Path, Query, Request, Response, status

from controller.atom_feed import Entry, changes, render_feed
from controller.calendar_feed import (
    CalendarWindow,
    campaign_windows,
    feed_range,
    render_calendar,
)
from controller.metrics import Metrics
from controller.public import DEFAULT_LANGUAGE, LANGUAGES
from controller.public_view import PublicView
from controller.store.base import Stores
from controller.store.history import HistoryStore
from controller.web.api import Problem
from controller.web.events_route import PublicEvents, build_events_route, instrument
from controller.web.status_route import etag_matches
from devices.clock import Clock
from schedules.model import Campaign, City, Site, SiteCatalog, is_id

log = logging.getLogger(__name__)

PREFIX = "/api/v1/public"
CALENDAR_PATH = PREFIX + "/campaigns/{campaign_id}.ics"
CITY_FEED_PATH = PREFIX + "/cities/{city_id}/feed.atom"
ALL_FEED_PATH = PREFIX + "/feed.atom"
CALENDAR_CACHE = (
    "public, max-age=300, s-maxage=300, stale-while-revalidate=3600, stale-if-error=86400"
)
FEED_CACHE = "public, max-age=30, s-maxage=60, stale-while-revalidate=300, stale-if-error=86400"
NOT_FOUND_CACHE = "public, max-age=30, s-maxage=60"
CALENDAR_TYPE = "text/calendar; charset=utf-8"
ATOM_TYPE = "application/atom+xml; charset=utf-8"
TTL_S = 30.0
FEED_SPAN = timedelta(days=14)
"""How far back a city's Atom feed looks (by the steps' and windows' times)."""
ALL_SPAN = timedelta(days=3)
"""How far back the feed of every city looks."""
MAX_DOCUMENTS = 512


def etag_of(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


@dataclass(frozen=True)
class World:
    """The campaigns and the sites, as last read (they change rarely)."""

    campaigns: tuple[Campaign, ...]
    changed_at: dict[str, datetime]
    catalog: SiteCatalog
    stamp: Hashable

    @property
    def by_id(self) -> dict[str, Campaign]:
        return {c.id: c for c in self.campaigns}

    def city(self, city_id: str) -> City | None:
        return next((c for c in self.catalog.cities if c.id == city_id), None)


@dataclass
class _Kept:
    value: object
    stamp: Hashable
    checked: float


@dataclass
class Memo:
    """Values built at most once per `ttl_s` each: after that, `stamp()` is asked (a
    cheap read of what the value rests on) and the value is built again only when the
    stamp moved. One build at a time; a bounded number of values kept. When reading
    or building fails, the value kept is served for another `ttl_s` (logged); with none
    kept, the error goes up."""

    ttl_s: float = TTL_S
    monotonic: Callable[[], float] = time.monotonic
    max_entries: int = MAX_DOCUMENTS
    builds: int = 0
    _kept: dict[Hashable, _Kept] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(
        self, key: Hashable, build: Callable[[], object], stamp: Callable[[], Hashable] | None
    ) -> object:
        kept = self._kept.get(key)
        now = self.monotonic()
        if kept is not None and now - kept.checked < self.ttl_s:
            return kept.value
        with self._lock:
            kept = self._kept.get(key)
            now = self.monotonic()
            if kept is not None and now - kept.checked < self.ttl_s:
                return kept.value  # built by another request meanwhile
            try:
                current = stamp() if stamp is not None else object()
                if kept is not None and kept.stamp == current:
                    kept.checked = now
                    return kept.value
                value = build()
            except Exception:
                if kept is None:
                    raise
                log.warning("public feed %r: could not build it again; serving the last", key)
                kept.checked = now
                return kept.value
            self.builds += 1
            if len(self._kept) >= self.max_entries:
                self._kept.clear()
            self._kept[key] = _Kept(value, current, now)
            return value


@dataclass(frozen=True)
class Document:
    body: bytes
    etag: str


@dataclass
class Feeds:
    """What the feed routes read, and the documents they built."""

    stores: Stores
    history: HistoryStore
    clock: Clock
    ttl_s: float = TTL_S
    monotonic: Callable[[], float] = time.monotonic
    world_memo: Memo = field(init=False)
    expansions: Memo = field(init=False)
    documents: Memo = field(init=False)

    def __post_init__(self) -> None:
        self.world_memo = Memo(self.ttl_s, self.monotonic, max_entries=1)
        self.expansions = Memo(self.ttl_s, self.monotonic, max_entries=MAX_DOCUMENTS)
        self.documents = Memo(self.ttl_s, self.monotonic)

    def _revisions(self) -> Hashable:
        return (self.stores.campaigns.revision(), self.stores.registry.revision())

    def world(self) -> World:
        def read() -> World:
            stamp = self._revisions()
            records = self.stores.campaigns.records()
            return World(
                campaigns=self.stores.campaigns.all(),
                changed_at={r.id: r.updated_at for r in records},
                catalog=self.stores.registry.catalog(),
                stamp=stamp,
            )

        found = self.world_memo.get("world", read, self._revisions)
        assert isinstance(found, World)
        return found

    def calendar(self, campaign: Campaign, world: World, city: str | None, lang: str) -> Document:
        start, end = feed_range(self.clock())

        def expand() -> tuple[CalendarWindow, ...]:  # the costly part: once for every language
            found = campaign_windows(
                campaign.id, world.campaigns, world.catalog, start, end, city=city
            )
            return tuple(found)

        def build() -> Document:
            windows = self.expansions.get((campaign.id, city, start), expand, stamp)
            assert isinstance(windows, tuple)
            changed = world.changed_at.get(campaign.id, start)
            body = render_calendar(campaign, windows, changed, lang)
            return Document(body, etag_of(body))

        def stamp() -> Hashable:
            return world.stamp

        found = self.documents.get(("ics", campaign.id, city, lang, start), build, stamp)
        assert isinstance(found, Document)
        return found

    def city_feed(self, city: City | None, world: World, lang: str, path: str) -> Document:
        """One city's feed, or every city's (`city` None, over a shorter span)."""
        city_id = city.id if city is not None else None
        sites: dict[str, Site] = {
            s.id: s for s in world.catalog.sites if city is None or s.city == city.id
        }

        def collect() -> tuple[Entry, ...]:  # the reads: once for every language
            since = self.clock() - (FEED_SPAN if city is not None else ALL_SPAN)
            devices_of: dict[str, list[str]] = {s: [] for s in sites}
            registered: dict[str, datetime] = {}
            for record in self.stores.registry.devices().values():
                if record.active and record.site_id in devices_of:
                    devices_of[record.site_id].append(record.id)
                    registered[record.id] = record.created_at
            ids = [d for ds in devices_of.values() for d in ds]
            if city is None:  # every device: one read each, not one per device
                steps = self.history.step_events(None, since)
                outcomes = [
                    r for r in self.history.outcomes(ends_since=since) if r.device_id in registered
                ]
            else:
                steps = self.history.step_events(ids, since) if ids else []
                outcomes = [
                    r for d in ids for r in self.history.outcomes(device_id=d, ends_since=since)
                ]
            return tuple(changes(steps, outcomes, devices_of, registered))

        def build() -> Document:
            entries = self.expansions.get(("atom", city_id), collect, None)
            assert isinstance(entries, tuple)
            cities = {c.id: c for c in world.catalog.cities}
            body = render_feed(entries, city, sites, path, lang=lang, cities=cities)
            return Document(body, etag_of(body))

        key = ("atom", city_id, lang)
        found = self.documents.get(key, build, None)
        assert isinstance(found, Document)
        return found


def feeds_of(request: Request) -> Feeds:
    found = getattr(request.app.state, "feeds", None)
    if not isinstance(found, Feeds):
        raise RuntimeError("the public feeds are not installed: set app.state.feeds")
    return found


def _language(lang: str | None) -> str:
    return lang if lang in LANGUAGES else DEFAULT_LANGUAGE


def _answer(request: Request, doc: Document, media_type: str, cache: str) -> Response:
    headers = {"ETag": doc.etag, "Cache-Control": cache}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and etag_matches(if_none_match, doc.etag):
        return Response(status_code=304, headers=headers)
    return Response(doc.body, media_type=media_type, headers=headers)


def _not_found(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_404_NOT_FOUND, detail=detail, headers={"Cache-Control": NOT_FOUND_CACHE}
    )


@contextmanager
def _or_unavailable() -> Iterator[None]:
    """A feed that cannot be read or built (the database is down), with no copy kept to
    serve: a 503 that caches keep for a moment (their stale copy, if any, is served)."""
    try:
        yield
    except Exception:
        log.exception("a public feed could not be built")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the feed cannot be built now; try again later",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_S), "Cache-Control": "no-store"},
        ) from None


Lang = Annotated[
    str | None, Query(description="language of the names (en, fr, nl, de); default en")
]
NOT_MODIFIED = {"description": "Not modified (If-None-Match names the current ETag)"}
UNAVAILABLE = {"model": Problem, "description": "the feed cannot be built now (Retry-After)"}
UNAVAILABLE_RETRY_S = 10


def build_feeds_api() -> APIRouter:
    router = APIRouter(tags=["public"])

    @router.get(
        CALENDAR_PATH,
        response_class=Response,
        responses={
            200: {"content": {"text/calendar": {}}, "description": "an iCalendar document"},
            304: NOT_MODIFIED,
            503: UNAVAILABLE,
            404: {"model": Problem, "description": "no such campaign (or city)"},
        },
    )
    def campaign_calendar(
        request: Request,
        campaign_id: Annotated[str, Path(description="the campaign's id")],
        city: Annotated[str | None, Query(description="only this city's monuments")] = None,
        lang: Lang = None,
    ) -> Response:
        """The campaign's windows at each monument, from a week ago to two months ahead,
        as iCalendar events in UTC (stable UIDs; the colour and cause described)."""
        feeds = feeds_of(request)
        with _or_unavailable():
            world = feeds.world()
        campaign = world.by_id.get(campaign_id) if is_id(campaign_id) else None
        if campaign is None:
            raise _not_found(f"no campaign {campaign_id!r}")
        if city is not None and world.city(city) is None:
            raise _not_found(f"no city {city!r}")
        with _or_unavailable():
            doc = feeds.calendar(campaign, world, city, _language(lang))
        return _answer(request, doc, CALENDAR_TYPE, CALENDAR_CACHE)

    @router.get(
        CITY_FEED_PATH,
        response_class=Response,
        responses={
            200: {"content": {"application/atom+xml": {}}, "description": "an Atom feed"},
            304: NOT_MODIFIED,
            503: UNAVAILABLE,
            404: {"model": Problem, "description": "no such city"},
        },
    )
    def city_feed(
        request: Request,
        city_id: Annotated[str, Path(description="the city's id")],
        lang: Lang = None,
    ) -> Response:
        """The city's monuments turning lit or off, as their devices confirmed, and the
        windows no confirmation reached (the last two weeks, newest first)."""
        feeds = feeds_of(request)
        with _or_unavailable():
            world = feeds.world()
        city = world.city(city_id) if is_id(city_id) else None
        if city is None:
            raise _not_found(f"no city {city_id!r}")
        language = _language(lang)
        path = CITY_FEED_PATH.format(city_id=city.id)
        with _or_unavailable():
            doc = feeds.city_feed(city, world, language, path)
        return _answer(request, doc, ATOM_TYPE, FEED_CACHE)

    @router.get(
        ALL_FEED_PATH,
        response_class=Response,
        responses={
            200: {"content": {"application/atom+xml": {}}, "description": "an Atom feed"},
            304: NOT_MODIFIED,
            503: UNAVAILABLE,
        },
    )
    def every_city_feed(request: Request, lang: Lang = None) -> Response:
        """Every city's monuments turning lit or off, as their devices confirmed, and
        the windows no confirmation reached (the last three days, newest first)."""
        feeds = feeds_of(request)
        with _or_unavailable():
            doc = feeds.city_feed(None, feeds.world(), _language(lang), ALL_FEED_PATH)
        return _answer(request, doc, ATOM_TYPE, FEED_CACHE)

    return router


def install_public_feeds(
    app: FastAPI,
    public: PublicView,
    stores: Stores,
    history: HistoryStore,
    clock: Clock,
    metrics: Metrics | None = None,
) -> None:
    """The feed routes and the event stream, on `app` (`app.state.feeds`,
    `app.state.public_events`; the streams' gauges on `metrics`)."""
    app.state.feeds = Feeds(stores, history, clock)
    app.include_router(build_feeds_api())
    hub = app.state.public_events = PublicEvents(public)
    app.include_router(build_events_route(hub))
    if metrics is not None:
        instrument(hub, metrics.registry)
