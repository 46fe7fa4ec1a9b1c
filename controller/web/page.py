"""The public page, rendered on the server in the visitor's language (Jinja2 + Babel).

- `GET /{lang}/` for every language with a catalogue (`controller.i18n`); `GET /{lang}`
  moves there. `GET /` picks the language from Accept-Language and renders it, with
  `Content-Language` and `Vary: Accept-Language`. An unknown language, and any other
  missing page a browser asks for (outside `/api/`), is an HTML 404.
- The page is complete without JavaScript: the campaign and its call to action, the
  monuments by city with their states, the calendar of lightings and the legend.
  `static/app.js` then keeps it live from the status JSON; its strings come from the
  page (`<script type="application/json" id="page-data">`).
- Everything shown comes from public material (`controller.public_page`): the status
  document's allow-list, the campaigns' public fields, the site catalogue's names and
  photos.

A language's page is rendered at most once per status document, campaign or site
change, and minute (the countdown); requests in between get the same bytes.
"""

from __future__ import annotations

import gzip
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_time, get_timezone_name
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller import i18n
from controller.public_page import (
    CALENDAR_DAYS,
    LOOKBACK,
    Lighting,
    Night,
    PageModel,
    build_page,
    lightings,
)
from controller.public_view import PublicView, Rendering
from controller.public_when import countdown
from controller.static_map import static_map
from controller.store.base import Stores
from controller.store.history import HistoryStore, Verdict
from controller.web.status_route import STATUS_PATH, accepts_gzip
from devices.protocol import format_instant
from schedules.model import Campaign, SiteCatalog

TEMPLATES = Path(__file__).parent / "templates"
PAGE_CACHE = "public, max-age=5, s-maxage=10, stale-while-revalidate=30"
CHECK_S = 1.0
"""How often the page asks the stores whether sites or campaigns changed."""
FINAL_S = 30.0
"""How long a night's final count is kept before it is read again."""
RETRY_S = 1
MIN_RENDER_S = 5.0
"""A language's page is rendered again at most this often while only the status moved
(a large page takes a while; the script keeps the monuments live meanwhile), unless a
phase of the night in front begins or ends."""
RENDER_SHARE = 20
"""...and at most once per this many times its last render took: a page of 10,000
monuments takes over a second to render in the controller's process, which must stay
free for the devices, so while only states move each language costs at most 1/20 of a
core, however many visitors ask."""
POLL_MS = 10_000
"""How often the page's script asks for the status (the status is cached 5 s)."""
LIT_VERDICTS = frozenset({Verdict.CONFIRMED, Verdict.CONFIRMED_LATE})


# ---- formatting (Babel) -----------------------------------------------------------


def fill(pattern: str, **parts: Any) -> Markup:
    """A translated pattern with `{name}` slots, escaped, each slot filled with its
    part (escaped, unless it is already markup)."""
    out = str(escape(pattern))
    for name, value in parts.items():
        out = out.replace("{" + name + "}", str(escape(value)))
    return Markup(out)


def el(tag: str, content: Any = "", **attrs: Any) -> Markup:
    """`<tag attr="...">content</tag>`, escaped (content may be markup); `data_x` is
    written `data-x`."""
    written = "".join(
        Markup(' {}="{}"').format(name.replace("_", "-"), value) for name, value in attrs.items()
    )
    return Markup("<{}{}>{}</{}>").format(Markup(tag), Markup(written), content, Markup(tag))


def iso(at: datetime) -> str:
    return format_instant(at)


class Formats:
    """Dates and times in one language, in a zone (Babel)."""

    def __init__(self, lang: str) -> None:
        self.locale = i18n.locale(lang)

    def hm(self, at: datetime, zone: ZoneInfo) -> str:
        return format_time(at, "short", tzinfo=zone, locale=self.locale)

    def hms(self, at: datetime, zone: ZoneInfo) -> str:
        return format_time(at, "medium", tzinfo=zone, locale=self.locale)

    def timetag(self, at: datetime, zone: ZoneInfo) -> Markup:
        return Markup('<time datetime="{}">{}</time>').format(iso(at), self.hm(at, zone))

    def long_date(self, at: datetime, zone: ZoneInfo) -> str:
        local = at.astimezone(zone)
        return format_date(local.date(), "full", locale=self.locale)

    def short_day(self, at: datetime, zone: ZoneInfo) -> str:
        return format_datetime(at, "EEE d MMM", tzinfo=zone, locale=self.locale)

    def zone_name(self, zone: ZoneInfo) -> str:
        """`Central European Time (Europe/Brussels)`, in the language."""
        return f"{get_timezone_name(zone, 'long', locale=self.locale)} ({zone.key})"


def same_day(a: datetime, b: datetime, zone: ZoneInfo) -> bool:
    return a.astimezone(zone).date() == b.astimezone(zone).date()


def language_name(lang: str) -> str:
    """The language's own name for itself: `Français`."""
    try:
        own = Locale.parse(lang)
    except (UnknownLocaleError, ValueError):
        return lang
    name = own.get_display_name(own) or lang
    return name[:1].upper() + name[1:]


class Templates:
    """One Jinja environment per language (its catalogue installed), built once."""

    def __init__(self, languages: tuple[str, ...], root: Path = TEMPLATES) -> None:
        self.languages = languages
        self.root = root
        self._envs: dict[str, Environment] = {}
        self._lock = threading.Lock()
        self.names = {lang: language_name(lang) for lang in languages}

    def env(self, lang: str) -> Environment:
        found = self._envs.get(lang)
        if found is not None:
            return found
        with self._lock:
            found = self._envs.get(lang)
            if found is None:
                found = self._build(lang)
                self._envs[lang] = found
            return found

    def _build(self, lang: str) -> Environment:
        env = Environment(
            loader=FileSystemLoader(self.root),
            autoescape=True,
            extensions=["jinja2.ext.i18n", "jinja2.ext.do"],
            undefined=StrictUndefined,
            trim_blocks=False,
        )
        env.install_gettext_translations(i18n.translations(lang), newstyle=True)  # type: ignore[attr-defined]
        formats = Formats(lang)
        env.globals.update(
            fill=fill,
            el=el,
            iso=iso,
            hm=formats.hm,
            hms=formats.hms,
            timetag=formats.timetag,
            long_date=formats.long_date,
            short_day=formats.short_day,
            zone_name=formats.zone_name,
            same_day=same_day,
            languages=self.languages,
            language_names=self.names,
        )
        return env

    def render(self, lang: str, name: str, **context: Any) -> str:
        env = self.env(lang)
        template = env.get_template(name)
        return template.render(lang=lang, **context)


# ---- what the page reads --------------------------------------------------------


@dataclass(frozen=True)
class PageInputs:
    key: tuple[int, int, datetime]
    catalog: SiteCatalog
    campaigns: tuple[Campaign, ...]
    lit: tuple[Lighting, ...]


class PageSource:
    """The sites, campaigns and their lightings around now, read from the stores again
    only when their revisions move (asked at most every `check_s`) or the hour turns;
    and a night's final count from the record of what was lit (numbers only)."""

    def __init__(
        self,
        stores: Stores,
        history: HistoryStore | None,
        monotonic: Callable[[], float] = time.monotonic,
        check_s: float = CHECK_S,
    ) -> None:
        self.stores = stores
        self.history = history
        self.monotonic = monotonic
        self.check_s = check_s
        self._inputs: PageInputs | None = None
        self._checked: float | None = None
        self._finals: dict[tuple[str, datetime], tuple[float, int | None]] = {}
        self._lock = threading.Lock()

    def inputs(self, now: datetime) -> PageInputs:
        hour = now.replace(minute=0, second=0, microsecond=0)
        with self._lock:
            known = self._inputs
            tick = self.monotonic()
            if (
                known is not None
                and known.key[2] == hour
                and self._checked is not None
                and tick - self._checked < self.check_s
            ):
                return known
            revisions = (self.stores.registry.revision(), self.stores.campaigns.revision())
            self._checked = tick
            if known is not None and known.key == (*revisions, hour):
                return known
            catalog = self.stores.registry.catalog()
            campaigns = self.stores.campaigns.all()
            start = hour - LOOKBACK
            end = hour + timedelta(days=CALENDAR_DAYS, hours=2)
            lit = lightings(catalog, campaigns, start, end)
            self._inputs = PageInputs((*revisions, hour), catalog, campaigns, lit)
            return self._inputs

    def final_count(self, night: Night) -> int | None:
        """How many of the night's monuments were confirmed lit (every device of the
        site), or None while the record has no outcome for it yet."""
        if self.history is None:
            return None
        key = (night.campaign, night.start)
        tick = self.monotonic()
        with self._lock:
            cached = self._finals.get(key)
            if cached is not None and tick - cached[0] < FINAL_S:
                return cached[1]
        records = self.history.outcomes(campaign_id=night.campaign, ends_since=night.start)
        sites = set(night.sites)
        verdicts: dict[str, list[Verdict]] = {}
        for record in records:
            if record.site_id in sites and night.start <= record.starts_at < night.end:
                verdicts.setdefault(record.site_id, []).append(record.verdict)
        count = (
            sum(1 for vs in verdicts.values() if all(v in LIT_VERDICTS for v in vs))
            if verdicts
            else None
        )
        with self._lock:
            self._finals[key] = (tick, count)
            if len(self._finals) > 64:
                self._finals.pop(next(iter(self._finals)))
        return count


# ---- the page ---------------------------------------------------------------------


def too_soon_to_render(made: datetime, cost_s: float, now: datetime) -> bool:
    """Whether a page rendered at `made`, in `cost_s`, is still served as it is while
    only the monuments' states moved (MIN_RENDER_S, RENDER_SHARE)."""
    min_age = max(MIN_RENDER_S, RENDER_SHARE * cost_s)
    return timedelta(0) <= now - made < timedelta(seconds=min_age)


@dataclass(frozen=True)
class RenderedPage:
    body: bytes
    gzip: bytes
    status: int
    key: tuple[Any, ...]
    made: datetime
    valid_until: datetime | None = None
    """The next edge of the night in front (its start, its end): the wording changes."""
    cost_s: float = 0.0
    """How long the render took (on the monotonic clock)."""


@dataclass(frozen=True)
class Current:
    model: PageModel
    rendering: Rendering | None
    inputs: PageInputs


class PublicPage:
    """Renders the page in a language and keeps the last rendering of each."""

    def __init__(
        self,
        public: PublicView,
        source: PageSource,
        clock: Callable[[], datetime],
        languages: tuple[str, ...] | None = None,
        default_language: str | None = None,
        map_tiles: str = "",
        map_attribution: str = "",
        policy: str | None = None,
        monotonic: Callable[[], float] = time.perf_counter,
    ) -> None:
        offered = languages if languages is not None else i18n.catalogue_languages()
        self.languages = tuple(lang for lang in offered if lang in public.languages)
        if not self.languages:
            raise ValueError("no language has both a catalogue and a public status")
        default = default_language or public.default_language
        self.default_language = default if default in self.languages else self.languages[0]
        self.public = public
        self.source = source
        self.clock = clock
        self.templates = Templates(self.languages)
        self.poll_ms = POLL_MS
        self.map_tiles = map_tiles
        self.map_attribution = map_attribution
        self.policy = policy
        """The page's own Content-Security-Policy (images from the map's tiles)."""
        self.monotonic = monotonic
        """What a render's cost is timed on (the controller's monotonic clock)."""
        self._models: dict[str, tuple[tuple[Any, ...], Current]] = {}
        self._pages: dict[str, RenderedPage] = {}
        self._locks = {lang: threading.Lock() for lang in self.languages}
        self._statuses: dict[str, tuple[str, dict[str, Any]]] = {}
        self.renders = 0

    def _status(self, lang: str, rendering: Rendering) -> dict[str, Any]:
        known = self._statuses.get(lang)
        if known is not None and known[0] == rendering.etag:
            return known[1]
        body: dict[str, Any] = orjson.loads(rendering.body)
        self._statuses[lang] = (rendering.etag, body)
        return body

    def model(
        self, lang: str, now: datetime, rendering: Rendering | None
    ) -> tuple[PageModel, Rendering | None]:
        status = self._status(lang, rendering) if rendering is not None else None
        inputs = self.source.inputs(now)
        model = build_page(
            lang=lang,
            now=now,
            status=status,
            catalog=inputs.catalog,
            campaigns=inputs.campaigns,
            lit=inputs.lit,
            final_count=self.source.final_count,
        )
        return model, rendering

    def current(self, lang: str) -> Current:
        """The page's model in `lang` now, built at most once per status document,
        change of sites or campaigns, and minute (for the monuments' own pages)."""
        now = self.clock()
        rendering = self.public.get(lang)
        inputs = self.source.inputs(now)
        key = (
            rendering.etag if rendering is not None else None,
            inputs.key,
            now.replace(second=0, microsecond=0),
        )
        known = self._models.get(lang)
        if known is not None and known[0] == key:
            return known[1]
        model, _ = self.model(lang, now, rendering)
        found = Current(model, rendering, inputs)
        self._models[lang] = (key, found)
        return found

    def render(self, lang: str) -> RenderedPage:
        now = self.clock()
        rendering = self.public.get(lang)
        inputs = self.source.inputs(now)
        key = (
            rendering.etag if rendering is not None else None,
            rendering.as_of if rendering is not None else None,
            inputs.key,
            now.replace(second=0, microsecond=0),
            self.poll_ms,
        )
        known = self._pages.get(lang)
        if known is not None and self._fresh(known, key, now):
            return known
        lock = self._locks[lang]
        if not lock.acquire(blocking=known is None):
            return known  # type: ignore[return-value]  # another request renders it now
        try:
            return self._render(lang, now, rendering, key)
        finally:
            lock.release()

    def _fresh(self, known: RenderedPage, key: tuple[Any, ...], now: datetime) -> bool:
        if known.key == key:
            return True
        if known.status != 200 or known.key[1:3] != key[1:3]:
            return False  # not ready before, a restart's copy, or sites or campaigns moved
        if known.valid_until is not None and now >= known.valid_until:
            return False
        return too_soon_to_render(known.made, known.cost_s, now)

    def _render(
        self, lang: str, now: datetime, rendering: Rendering | None, key: tuple[Any, ...]
    ) -> RenderedPage:
        began = self.monotonic()
        model, rendering = self.model(lang, now, rendering)
        html = self.templates.render(
            lang,
            "page.html",
            banner=model.banner,
            summary=model.summary,
            cities=model.cities,
            city_map=static_map(model.cities),
            calendar=model.calendar,
            calendar_files=tuple(
                dict.fromkeys((e.campaign_id, e.title) for e in model.calendar if e.campaign_id)
            ),
            zone=model.zone,
            now=now,
            countdown=lambda to: countdown(to, now),
            ready=model.ready,
            generated_at=model.generated_at,
            api=f"{STATUS_PATH}?lang={lang}",
            locale=i18n.bcp47(i18n.locale(lang)),
            poll_ms=self.poll_ms,
            etag=rendering.etag if rendering is not None else None,
            as_of=rendering.as_of if rendering is not None else None,
            map_tiles=self.map_tiles,
            map_attribution=self.map_attribution,
        )
        body = html.encode()
        banner = model.banner
        edge = None
        if banner is not None:
            edge = banner.start if now < banner.start else banner.end if now < banner.end else None
        page = RenderedPage(
            body,
            gzip.compress(body, compresslevel=6, mtime=0),
            200 if model.ready else 503,
            key,
            made=now,
            valid_until=edge,
            cost_s=self.monotonic() - began,
        )
        self._pages[lang] = page
        self.renders += 1
        return page

    def not_found(self, lang: str) -> bytes:
        return self.templates.render(lang, "not_found.html").encode()

    def negotiate(self, accept_language: str | None) -> str:
        return i18n.negotiate(accept_language, self.languages, self.default_language)


def _page_response(page: PublicPage, request: Request, lang: str, vary: bool) -> Response:
    rendered = page.render(lang)
    headers = {
        "Content-Language": lang,
        "Cache-Control": PAGE_CACHE,
        "Vary": "Accept-Language, Accept-Encoding" if vary else "Accept-Encoding",
    }
    if page.policy is not None:
        headers["Content-Security-Policy"] = page.policy
    if rendered.status != 200:
        headers["Retry-After"] = str(RETRY_S)
        headers["Cache-Control"] = "no-store"
    body = rendered.body
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        body = rendered.gzip
        headers["Content-Encoding"] = "gzip"
    return HTMLResponse(body, status_code=rendered.status, headers=headers)


LANGUAGE_PATH = re.compile(r"^/[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*/$")


def wants_html(request: Request) -> bool:
    """Is a 404 for this request the HTML page? For a page of a language that has no
    catalogue (`/xx/`), and for any page a browser asks for outside the API."""
    path = request.url.path
    if path.startswith("/api/") or path == "/api":
        return False
    return bool(LANGUAGE_PATH.match(path)) or "text/html" in request.headers.get("accept", "")


def install_public_page(app: FastAPI, page: PublicPage) -> None:
    """The page's routes, and HTML 404s for browsers (outside /api/)."""
    app.state.public_page = page

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index(request: Request) -> Response:
        lang = page.negotiate(request.headers.get("accept-language"))
        return _page_response(page, request, lang, vary=True)

    # one route per language, not a path parameter: a parameter would make the router
    # move every unknown /name to /name/ (its trailing-slash redirect)
    for lang in page.languages:

        def localised(request: Request, lang: str = lang) -> Response:
            return _page_response(page, request, lang, vary=False)

        def bare(lang: str = lang) -> Response:
            return RedirectResponse(f"/{lang}/", status_code=308)

        app.add_api_route(f"/{lang}/", localised, methods=["GET", "HEAD"], include_in_schema=False)
        app.add_api_route(f"/{lang}", bare, methods=["GET"], include_in_schema=False)

    @app.exception_handler(StarletteHTTPException)
    async def html_not_found(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and wants_html(request):
            return _not_found(page, request)
        return await http_exception_handler(request, exc)


def _not_found(page: PublicPage, request: Request) -> Response:
    lang = page.negotiate(request.headers.get("accept-language"))
    return HTMLResponse(
        page.not_found(lang),
        status_code=404,
        headers={"Content-Language": lang, "Vary": "Accept-Language", "Cache-Control": "no-store"},
    )
